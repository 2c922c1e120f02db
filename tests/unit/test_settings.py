from pathlib import Path

import pytest
import yaml

from cicd.errors import SuiteError
from cicd.settings import from_config

ROOT = Path(__file__).resolve().parents[2]
DEFAULTS = yaml.safe_load((ROOT / "invoke.yaml").read_text())


def settings(**environ):
    return from_config(ROOT, DEFAULTS, environ)


def test_defaults_target_the_embedded_registry():
    s = settings()
    assert s.uses_local_registry
    assert s.repository == "127.0.0.1:5050/celestial-bodies-classifier"
    assert s.registry_username is None and s.registry_password is None
    assert s.model_name == "celestial_bodies_classifier_model"
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


def test_names_of_the_code_are_not_settings():
    # One source: src/celestial gives the model and bento their names; invoke.yaml does not.
    with pytest.raises(SuiteError, match=r"unknown setting.*model_name"):
        from_config(ROOT, {"suite": {**DEFAULTS["suite"], "model_name": "x"}}, {})
