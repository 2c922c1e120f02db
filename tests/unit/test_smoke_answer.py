import pytest

from cicd.smoke import SmokeError, check_answer

GOOD = {"prediction": "Mars", "probabilities": {"Mars": 0.7, "Moon": 0.3}}


def test_a_matching_answer_passes():
    check_answer(GOOD, GOOD)
    check_answer(GOOD, None)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ("oops", "expected prediction and probabilities"),
        ({"prediction": "Pluto", "probabilities": {"Mars": 1.0}}, "not one of the labels"),
        ({"prediction": "Mars", "probabilities": {"Mars": 0.7, "Moon": 0.7}}, "sum to 1"),
        ({"prediction": "Moon", "probabilities": {"Mars": 0.3, "Moon": 0.7}}, "local model"),
        ({"prediction": "Mars", "probabilities": {"Mars": 0.6, "Moon": 0.4}}, "differs"),
    ],
)
def test_wrong_answers_fail(answer, message):
    with pytest.raises(SmokeError, match=message):
        check_answer(answer, GOOD)
