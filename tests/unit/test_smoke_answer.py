import pytest

from cicd.smoke import PROBABILITY_TOLERANCE as TOL
from cicd.smoke import SmokeError, check_answer

GOOD = {"prediction": "Mars", "probabilities": {"Mars": 0.7, "Moon": 0.3}}


# Within the tolerance: the image's ONNX Runtime may differ from the host's in the last bits.
NEAR = {"prediction": "Mars", "probabilities": {"Moon": 0.3 + TOL / 2, "Mars": 0.7 - TOL / 2}}


@pytest.mark.parametrize(
    ("answer", "expected"),
    [(GOOD, GOOD), (NEAR, GOOD), (GOOD, None)],
    ids=["equal", "within tolerance, other order", "shape only"],
)
def test_a_matching_answer_passes(answer, expected):
    try:
        check_answer(answer, expected)
    except SmokeError as error:
        pytest.fail(f"{answer} refused against {expected}: {error}")


def test_the_tolerance_is_the_limit():
    beyond = {"prediction": "Mars", "probabilities": {"Mars": 0.7 - 2 * TOL, "Moon": 0.3 + 2 * TOL}}
    with pytest.raises(SmokeError, match="differs"):
        check_answer(beyond, GOOD)


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
