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
    monkeypatch.setattr(context, "whales", lambda client, runner: made.append(client) or object())
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


SECRETS = {
    "SIGNING_KEY": "-----BEGIN PRIVATE KEY-----sentinel-signing-key",
    "CONTAINER_REGISTRY_PASSWORD": "sentinel-registry-password",
    "GITHUB_TOKEN": "sentinel-forge-token",
}


def test_the_docker_cli_gets_no_secret(tmp_path, monkeypatch, capsys):
    """Finding 11 of issue 23: python-on-whales starts its client with this process's whole
    environment (and prints it with PYTHON_ON_WHALES_DEBUG=1). A fake `docker` first on PATH
    records the environment of every start: the probes that choose the client and
    python-on-whales' calls see no secret, under its own name or another."""
    import json
    import os
    import sys
    from pathlib import Path

    from cicd.context import Run
    from cicd.settings import read_config

    record = tmp_path / "starts.jsonl"
    fake = tmp_path / "bin" / "docker"
    fake.parent.mkdir()
    fake.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"with open({str(record)!r}, 'a') as out:\n"
        "    out.write(json.dumps({'argv': sys.argv[1:], 'env': dict(os.environ)}) + '\\n')\n"
        "print('Docker version 20.10.24+dfsg1, build 297e128')\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DEPLOY_PASSWORD_COPY", SECRETS["CONTAINER_REGISTRY_PASSWORD"])
    monkeypatch.setenv("PYTHON_ON_WHALES_DEBUG", "1")
    monkeypatch.setenv("KEPT_FOR_THE_CLIENT", "yes")
    monkeypatch.setenv("CONTAINER_REGISTRY_USERNAME", "ci-bot")

    root = Path(__file__).parents[2]
    run = Run.create(root, read_config(root), dict(os.environ))
    assert run.docker.path == str(fake)
    run.whales.logout("registry.invalid")  # a call whose output python-on-whales ignores

    starts = [json.loads(line) for line in record.read_text().splitlines()]
    assert ["logout", "registry.invalid"] in [start["argv"] for start in starts]
    for start in starts:
        env = start["env"]
        leaked = [name for name, value in env.items() if value in SECRETS.values()]
        assert not leaked, f"`docker {' '.join(start['argv'])}` got {leaked}"
        assert env.get("KEPT_FOR_THE_CLIENT") == "yes" and env.get("PATH")
    printed = capsys.readouterr()
    assert "PYTHON_ON_WHALES_DEBUG ignored" in printed.out
    for value in SECRETS.values():
        assert value not in printed.out + printed.err


def test_a_process_chooses_its_client_and_asks_the_engine_once(tmp_path, monkeypatch):
    """A publish runs its steps in one process, each with its own Run: the probes that choose
    the client and ask the engine (docker CLI starts) run for the first Run only."""
    import os
    import sys
    from pathlib import Path

    from cicd import context
    from cicd.context import Run
    from cicd.settings import read_config

    record = tmp_path / "starts.txt"
    fake = tmp_path / "bin" / "docker"
    fake.parent.mkdir()
    fake.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        f"open({str(record)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        "print('Docker version 20.10.24+dfsg1, build 297e128')\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(context, "_CLIENTS", {})
    monkeypatch.setattr(context, "_ENGINE_ANSWERED", set())
    root = Path(__file__).parents[2]

    def starts() -> list[str]:
        return record.read_text().splitlines() if record.exists() else []

    assert Run.create(root, read_config(root), dict(os.environ)).docker.path == str(fake)
    first = starts()
    assert any(line.startswith("version --format") for line in first), first  # the engine
    for _ in range(3):  # the later steps
        assert Run.create(root, read_config(root), dict(os.environ)).docker.path == str(fake)
    assert starts() == first
