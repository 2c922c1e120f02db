import pytest

from cicd import docker
from cicd.errors import SuiteError


def fake_probe(answers):
    def probe(command):
        return answers.get(tuple(command))

    return probe


@pytest.fixture
def two_clients(monkeypatch):
    monkeypatch.setattr(docker.shutil, "which", lambda name: "/usr/local/bin/docker")


def test_prefers_a_client_with_buildx(two_clients):
    probe = fake_probe({("/usr/local/bin/docker", "buildx", "version"): "v0.20"})
    assert docker.choose_client(probe=probe).path == "/usr/local/bin/docker"


def test_skips_a_new_client_without_buildx_for_an_old_one(two_clients):
    probe = fake_probe(
        {
            ("/usr/local/bin/docker", "--version"): "Docker version 28.2.2, build e6534b4",
            ("/usr/bin/docker", "--version"): "Docker version 20.10.24+dfsg1, build 297e128",
        }
    )
    client = docker.choose_client(probe=probe)
    assert client.path == "/usr/bin/docker"
    assert client.build_env == {"DOCKER_BUILDKIT": "1"}
    assert client.env_for_tools()["PATH"].startswith("/usr/bin:")


def test_falls_back_to_the_legacy_builder(two_clients):
    probe = fake_probe({("/usr/local/bin/docker", "--version"): "Docker version 28.2.2, build x"})
    client = docker.choose_client(probe=probe)
    assert client.path == "/usr/local/bin/docker" and client.build_env == {"DOCKER_BUILDKIT": "0"}


def test_configured_client_must_run():
    with pytest.raises(SuiteError, match="does not run"):
        docker.choose_client("/nowhere/docker", probe=fake_probe({}))


def test_python_on_whales_failures_become_command_errors():
    import io

    from python_on_whales.exceptions import DockerException

    from cicd.errors import CommandError
    from cicd.shell import Runner

    def fail():
        raise DockerException(["docker", "push", "x"], 1, b"", b"denied: sentinel-token")

    runner = Runner(out=io.StringIO())
    runner.add_secret("sentinel-token")
    with pytest.raises(CommandError) as caught:
        docker.docker_call(runner, ["docker", "push", "x"], fail, hint="check the token")
    assert caught.value.exit_code == 1
    assert (
        str(caught.value)
        == "`docker push x` failed with exit code 1: denied: *****. check the token"
    )


def test_a_run_makes_its_python_on_whales_client_once(monkeypatch):
    import io
    from pathlib import Path

    from cicd import context
    from cicd.settings import load
    from cicd.shell import Runner

    made = []
    monkeypatch.setattr(context, "whales", lambda client: made.append(client) or object())
    run = context.Run(Runner(out=io.StringIO()), load(Path(__file__).parents[2], {}), {})
    run.__dict__["docker"] = docker.Client("/usr/bin/docker", {"DOCKER_BUILDKIT": "1"})
    assert run.whales is run.whales
    assert made == [run.docker]


def test_no_module_makes_its_own_python_on_whales_client():
    # One client per run (Run.whales); only a login's throwaway config directory makes another.
    import re
    from pathlib import Path

    suite = Path(docker.__file__).parent
    makers = {
        f"{path.name}:{number}"
        for path in suite.glob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\bwhales\(|DockerClient\(", line) and not line.lstrip().startswith("def ")
    }
    assert {m.split(":")[0] for m in makers} == {"context.py", "docker.py", "image.py"}, makers
