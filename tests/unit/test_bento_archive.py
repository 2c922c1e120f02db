from types import SimpleNamespace

import pytest

from cicd.bento import model_info
from cicd.errors import SuiteError


def test_missing_archive_names_the_command_that_makes_it(tmp_path):
    with pytest.raises(SuiteError, match="nox -s train"):
        model_info(tmp_path / "model.bentomodel")


def test_corrupt_archive_is_a_clear_error(tmp_path):
    archive = tmp_path / "model.bentomodel"
    archive.write_bytes(b"not a tar archive")
    with pytest.raises(SuiteError, match="not a BentoML model archive"):
        model_info(archive)


def bento_with(monkeypatch, info):
    import bentoml

    monkeypatch.setattr(bentoml, "get", lambda tag: SimpleNamespace(info=info))


def test_the_base_image_is_the_one_the_built_bento_records(monkeypatch):
    from cicd.bento import base_image

    bento_with(monkeypatch, SimpleNamespace(image=SimpleNamespace(base_image="python:3.11-slim")))
    assert base_image("svc:v1") == "python:3.11-slim"
    # A bento of BentoML < 1.3: the bentofile's docker.base_image.
    bento_with(monkeypatch, SimpleNamespace(docker=SimpleNamespace(base_image="debian:12")))
    assert base_image("svc:v1") == "debian:12"
    bento_with(monkeypatch, SimpleNamespace(image=SimpleNamespace(base_image="")))
    with pytest.raises(SuiteError, match="names no base image"):
        base_image("svc:v1")


def test_a_bento_not_in_the_store_has_no_base_image_to_read(monkeypatch, tmp_path):
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path))
    from cicd.bento import base_image

    with pytest.raises(SuiteError, match=r"bento svc:v1 is not in the BentoML store"):
        base_image("svc:v1")
