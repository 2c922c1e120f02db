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
