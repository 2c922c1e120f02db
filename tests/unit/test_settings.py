import io
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from cicd import dvc
from cicd.errors import SuiteError
from cicd.settings import from_config, resolve_dvc_jobs
from cicd.shell import Runner

ROOT = Path(__file__).resolve().parents[2]
DEFAULTS = yaml.safe_load((ROOT / "invoke.yaml").read_text())


def settings(**environ):
    return from_config(ROOT, DEFAULTS, environ)


def test_defaults_target_the_embedded_registry():
    s = settings()
    assert s.uses_local_registry
    assert s.repository == "127.0.0.1:5050/celestial-bodies-classifier"
    assert s.registry_username is None and s.registry_password is None
    assert s.model.name == "celestial_bodies_classifier_model"
    assert s.bentomodel == Path("model/celestial_bodies_classifier_model.bentomodel")


def test_environment_overrides_registry_and_image():
    s = settings(
        CONTAINER_REGISTRY_HOST="https://ghcr.io/my-org/",
        CONTAINER_REGISTRY_USERNAME="bot",
        CONTAINER_REGISTRY_PASSWORD="s3cret",
        IMAGE_NAME="classifier",
    )
    assert not s.uses_local_registry
    assert s.repository == "ghcr.io/my-org/classifier"
    assert s.registry_host == "ghcr.io"
    assert (s.registry_username, s.registry_password) == ("bot", "s3cret")


def test_guide_secret_names_work_unchanged():
    s = settings(
        GCP_CONTAINER_REGISTRY_HOST="europe-west6-docker.pkg.dev/proj/reg",
        GOOGLE_SERVICE_ACCOUNT_KEY='{"type": "service_account"}',
    )
    assert s.repository == "europe-west6-docker.pkg.dev/proj/reg/celestial-bodies-classifier"
    assert s.registry_username == "_json_key"
    assert s.registry_password == '{"type": "service_account"}'


def test_generic_names_win_over_the_guide_names():
    s = settings(CONTAINER_REGISTRY_HOST="ghcr.io/a", GCP_CONTAINER_REGISTRY_HOST="gcr.io/b")
    assert s.registry == "ghcr.io/a"


def test_password_is_not_in_repr():
    s = settings(CONTAINER_REGISTRY_USERNAME="u", CONTAINER_REGISTRY_PASSWORD="hunter2-sentinel")
    assert "hunter2-sentinel" not in repr(s)


def test_password_without_username_is_refused():
    with pytest.raises(SuiteError, match="CONTAINER_REGISTRY_USERNAME"):
        settings(CONTAINER_REGISTRY_PASSWORD="x")


@pytest.mark.parametrize("host", ["GHCR.io/Org", "ghcr.io/my org"])
def test_invalid_registry_is_refused(host):
    with pytest.raises(SuiteError, match="not a valid registry address"):
        settings(CONTAINER_REGISTRY_HOST=host)


def test_unknown_setting_is_refused():
    with pytest.raises(SuiteError, match="unknown setting"):
        from_config(ROOT, {"suite": {"imagename": "x"}}, {})


def test_repository_path_is_the_name_inside_the_registry():
    assert settings().repository_path == "celestial-bodies-classifier"
    assert settings(CONTAINER_REGISTRY_HOST="ghcr.io/org").repository_path == (
        "org/celestial-bodies-classifier"
    )


def test_a_setting_missing_from_invoke_yaml_is_one_clear_line():
    incomplete = {"suite": {k: v for k, v in DEFAULTS["suite"].items() if k != "base_branch"}}
    with pytest.raises(SuiteError, match=r"setting\(s\) base_branch missing .* invoke.yaml"):
        from_config(ROOT, incomplete, {})
    without_port = {"suite": {**DEFAULTS["suite"], "local_registry": {"host": "127.0.0.1"}}}
    with pytest.raises(SuiteError, match=r"local_registry.port, local_registry.storage missing"):
        from_config(ROOT, without_port, {})


def suite(**changes):
    """invoke.yaml's suite section with ``changes`` (None removes a key)."""
    section = {**DEFAULTS["suite"], **changes}
    return {"suite": {k: v for k, v in section.items() if v is not None}}


def test_the_model_and_the_smoke_test_come_from_invoke_yaml():
    s = settings()
    assert s.model.name == "celestial_bodies_classifier_model"
    assert s.smoke.request.kind == "file" and s.smoke.request.field == "image"
    assert s.smoke.request.path == Path("data/raw/Earth/Earth_1.jpg")
    assert s.smoke.request.content_type == "image/jpeg"
    assert s.smoke.expect.function == "celestial.reference:predict_file"
    assert s.smoke.expect.tolerance == 1e-4
    assert (s.smoke.path, s.smoke.timeout) == ("/predict", 90.0)
    assert s.blas_record == Path("model-blas.json")


def test_the_example_names_agree_with_its_code():
    # The model's code names the model and the service; the suite knows them from
    # invoke.yaml and bentofile.yaml: they must be the same names.
    import celestial

    s = settings()
    assert s.model.name == celestial.MODEL_NAME
    assert s.bentomodel == Path("model") / celestial.MODEL_ARCHIVE
    assert s.bento_name == celestial.SERVICE_NAME
    # The base image: serve.py builds on celestial's constant, attest names invoke.yaml's.
    assert s.base_image == celestial.RUNTIME_BASE_IMAGE
    assert "base_image=RUNTIME_BASE_IMAGE" in (ROOT / "src" / "serve.py").read_text()


def test_defaults_fit_the_guide_layout():
    minimal = suite(
        model={"name": "my_model"},
        smoke={"request": {"kind": "json", "body": {"x": [1, 2]}}},
        reproducibility=None,
        base_image=None,
    )
    s = from_config(ROOT, minimal, {})
    assert s.bentomodel == Path("model/my_model.bentomodel")
    assert s.smoke.path == "/predict" and s.smoke.timeout == 90.0
    assert s.smoke.request.body == {"x": [1, 2]} and s.smoke.expect is None
    assert s.blas_record is None
    assert s.base_image == "python:3.11-slim"


def test_overrides_from_invoke_yaml():
    s = from_config(
        ROOT,
        suite(
            model={"name": "m", "archive": "out/m.bentomodel"},
            smoke={
                "path": "/classify",
                "timeout": "5",  # as invoke's environment gives it
                "request": {"kind": "file", "field": "file", "path": "sample.png"},
                "expect": {"answer": {"label": "cat"}, "tolerance": 0.01},
            },
            reproducibility={"blas_record": ""},
            base_image="nvidia/cuda:12.4.1-runtime-ubuntu22.04",
        ),
        {},
    )
    assert s.bentomodel == Path("out/m.bentomodel")
    assert (s.smoke.path, s.smoke.timeout) == ("/classify", 5.0)
    assert s.smoke.request.field == "file" and s.smoke.request.content_type is None
    assert s.smoke.expect.answer == {"label": "cat"} and s.smoke.expect.tolerance == 0.01
    assert s.blas_record is None
    assert s.base_image == "nvidia/cuda:12.4.1-runtime-ubuntu22.04"


def test_the_bento_name_is_the_bentofile_name_else_the_service_class(tmp_path):
    (tmp_path / "bentofile.yaml").write_text('service: "app:MyGreatAPIService"\n')
    s = from_config(tmp_path, DEFAULTS, {})
    assert s.bento_name == "my_great_api_service"  # BentoML's to_snake_case of the class
    (tmp_path / "bentofile.yaml").write_text('service: "app:Svc"\nname: my-bento\n')
    assert s.bento_name == "my-bento"
    (tmp_path / "bentofile.yaml").write_text("include: []\n")
    with pytest.raises(SuiteError, match="names no service"):
        s.bento_name  # noqa: B018


SMOKE = DEFAULTS["suite"]["smoke"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model": None}, r"setting\(s\) model.name missing"),
        ({"model": {"name": ""}}, r"setting model.name is '' in invoke.yaml"),
        ({"model": {"name": "m", "file": "x"}}, r"unknown setting\(s\) model.file in"),
        ({"smoke": None}, r"setting\(s\) smoke.request missing"),
        ({"smoke": {**SMOKE, "timeout": "soon"}}, r"setting smoke.timeout is 'soon'"),
        ({"smoke": {**SMOKE, "path": "predict"}}, r"setting smoke.path is 'predict'.*with /"),
        ({"smoke": {"request": "Earth.jpg"}}, r"setting smoke.request is 'Earth.jpg'.*section"),
        ({"smoke": {"request": {"kind": "xml"}}}, r"setting smoke.request.kind is 'xml'"),
        ({"smoke": {"request": {"kind": "file"}}}, r"setting smoke.request.path missing"),
        ({"smoke": {"request": {"kind": "json"}}}, r"setting smoke.request.body missing"),
        (
            {"smoke": {"request": {"kind": "json", "body": {}, "field": "f"}}},
            r"smoke.request.field are for kind file",
        ),
        (
            {"smoke": {**SMOKE, "expect": {"function": "m:f", "answer": {}}}},
            r"setting smoke.expect needs exactly one of function",
        ),
        (
            {"smoke": {**SMOKE, "expect": {"function": "celestial.reference"}}},
            r"setting smoke.expect.function is 'celestial.reference'.*module:callable",
        ),
        (
            {"smoke": {**SMOKE, "expect": {"answer": 1, "tolerance": -1}}},
            r"setting smoke.expect.tolerance is -1",
        ),
        ({"reproducibility": {"blas": "x"}}, r"unknown setting\(s\) reproducibility.blas in"),
    ],
    ids=lambda value: None if isinstance(value, dict) else "",
)
def test_a_bad_model_or_smoke_setting_is_one_clear_line(changes, message):
    with pytest.raises(SuiteError, match=message) as raised:
        from_config(ROOT, suite(**changes), {})
    assert "\n" not in str(raised.value)


def test_the_old_smoke_settings_are_refused_by_name():
    with pytest.raises(SuiteError, match=r"unknown setting\(s\) smoke_image in invoke.yaml"):
        from_config(ROOT, suite(smoke_image="data/raw/Earth/Earth_1.jpg"), {})


@pytest.mark.parametrize(
    ("value", "cores", "jobs"),
    [
        ("auto", 2, 8),
        ("auto", 1, 4),
        ("auto", 64, 16),
        ("auto", None, 4),
        (3, 64, 3),
        ("12", 2, 12),
    ],
)
def test_dvc_jobs_is_four_per_core_capped_or_the_given_count(value, cores, jobs):
    assert resolve_dvc_jobs(value, cores) == jobs


def test_dvc_jobs_comes_from_invoke_yaml_and_defaults_to_auto():
    assert settings().dvc_jobs == resolve_dvc_jobs("auto", os.cpu_count())
    assert from_config(ROOT, suite(dvc_jobs=2), {}).dvc_jobs == 2
    older = suite(dvc_jobs=None)  # an invoke.yaml from before the setting
    assert from_config(ROOT, older, {}).dvc_jobs == resolve_dvc_jobs("auto", os.cpu_count())


@pytest.mark.parametrize("value", [0, -1, 2.5, True, "many", ""])
def test_a_bad_dvc_jobs_is_one_clear_line(value):
    with pytest.raises(SuiteError, match=r"setting dvc_jobs is .* give auto or a whole number"):
        from_config(ROOT, suite(dvc_jobs=value), {})


def test_pull_and_push_pass_the_jobs_after_their_targets():
    """The logged command still begins `dvc pull <target>` (what the step's line shows)."""
    out = io.StringIO()
    run = SimpleNamespace(
        runner=Runner(dry=True, out=out), settings=settings(), builds_base_branch=True
    )
    dvc.pull(run, ["model/m.bentomodel"])
    dvc.push(run)
    shown = [
        line.split(" $ ", 1)[1].split("  #")[0].split() for line in out.getvalue().splitlines()
    ]
    jobs = str(settings().dvc_jobs)
    assert [[Path(words[0]).name, *words[1:]] for words in shown] == [
        ["dvc", "pull", "model/m.bentomodel", "--jobs", jobs],
        ["dvc", "push", "--jobs", jobs],
    ]


def test_container_labels_come_from_the_environment():
    assert settings().container_labels == ()
    given = settings(CONTAINER_LABELS="ci.job=1234, ci.pipeline=99,note=a=b,empty=")
    assert given.container_labels == (
        ("ci.job", "1234"),
        ("ci.pipeline", "99"),
        ("note", "a=b"),
        ("empty", ""),
    )


# No "=", no key, a space in the key; an empty item between commas is skipped, "b" is not.
@pytest.mark.parametrize("value", ["ci.job", "=1234", "ci job=1", "a=1,,b"])
def test_a_bad_container_label_is_one_clear_line(value):
    with pytest.raises(SuiteError, match=r"^CONTAINER_LABELS has .*: give key=value pairs") as e:
        settings(CONTAINER_LABELS=value)
    assert "\n" not in str(e.value)


def test_container_labels_are_not_an_invoke_yaml_setting():
    config = {"suite": {**DEFAULTS["suite"], "container_labels": {"a": "b"}}}
    with pytest.raises(SuiteError, match=r"unknown setting.* container_labels"):
        from_config(ROOT, config, {})
