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
    # The guide's service names itself (@bentoml.service(name=...)), so `bentoml build`
    # names the bento after it, not after the class the suite derives the name from.
    from cicd.bento import check_bento_name

    output = "some log line\n__tag__:celestial_bodies_classifier:abc123\n"
    with pytest.raises(SuiteError, match=r"add `name: celestial_bodies_classifier` to "):
        check_bento_name(output, "celestial_bodies_classifier_service:abc123", "bentofile.yaml")
    check_bento_name(output, "celestial_bodies_classifier:abc123", "bentofile.yaml")  # as expected
    # rich wraps the printed tag at 80 columns, inside a long version: the name still counts
    wrapped = (
        "__tag__:celestial_bodies_classifier:b27a0f6c6841f9b9f30513aed8f7ecde2918432a-dir\nty-6e"
    )
    check_bento_name(wrapped, "celestial_bodies_classifier:b27a0f6c68-dirty-6e", "bentofile.yaml")
    check_bento_name(
        "", "x:abc123", "bentofile.yaml"
    )  # nothing printed (a dry run): nothing to say
