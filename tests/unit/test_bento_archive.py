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


def test_a_bento_built_under_another_name_is_one_line_saying_what_to_add():
    # The guide's service names itself (@bentoml.service(name=...)), so the build names the
    # bento after it, not after the class the suite derives the name from.
    from cicd.bento import check_bento_name

    with pytest.raises(SuiteError, match=r"add `name: celestial_bodies_classifier` to "):
        check_bento_name(
            "celestial_bodies_classifier", "celestial_bodies_classifier_service:abc123", "b.yaml"
        )
    check_bento_name("celestial_bodies_classifier", "celestial_bodies_classifier:abc123", "b.yaml")
