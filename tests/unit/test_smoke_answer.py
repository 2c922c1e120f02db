import io
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from cicd.errors import SuiteError
from cicd.settings import from_config
from cicd.shell import Runner
from cicd.smoke import SmokeError, check_answer, expected_answer

ROOT = Path(__file__).resolve().parents[2]
DEFAULTS = yaml.safe_load((ROOT / "invoke.yaml").read_text())

GOOD = {"prediction": "Mars", "probabilities": {"Mars": 0.7, "Moon": 0.3}}
# The documented default of suite.smoke.expect.tolerance (docs/settings.md), written here: a
# change of the code's constant must be a change of this test too.
TOL = 1e-4


# Within the tolerance: the image's ONNX Runtime may differ from the host's in the last bits.
NEAR = {"prediction": "Mars", "probabilities": {"Moon": 0.3 + TOL / 2, "Mars": 0.7 - TOL / 2}}


@pytest.mark.parametrize(
    ("answer", "expected"),
    [(GOOD, GOOD), (NEAR, GOOD), (GOOD, None)],
    ids=["equal", "within tolerance, other order", "nothing expected"],
)
def test_a_matching_answer_passes(answer, expected):
    try:
        check_answer(answer, expected)
    except SmokeError as error:
        pytest.fail(f"{answer} refused against {expected}: {error}")


def test_the_tolerance_is_the_limit():
    beyond = {"prediction": "Mars", "probabilities": {"Mars": 0.7 - 2 * TOL, "Moon": 0.3 + 2 * TOL}}
    with pytest.raises(SmokeError, match=r"answer.probabilities.Mars: 0.6998 instead of 0.7"):
        check_answer(beyond, GOOD)
    check_answer(beyond, GOOD, tolerance=3 * TOL)  # a repository's own tolerance


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ("oops", r"answer: 'oops' instead of"),
        ({"prediction": "Pluto", "probabilities": {"Mars": 1.0}}, r"answer.prediction: 'Pluto'"),
        ({"prediction": "Mars", "probabilities": {"Mars": 0.7}}, r"probabilities.Moon: missing"),
        (
            {"prediction": "Mars", "probabilities": {**GOOD["probabilities"], "Venus": 0.0}},
            r"probabilities.Venus: not expected",
        ),
        ({"prediction": "Moon", "probabilities": {"Mars": 0.3, "Moon": 0.7}}, "local model's"),
        ({"prediction": "Mars", "probabilities": {"Mars": 0.6, "Moon": 0.4}}, "differs"),
        ({"prediction": "Mars", "probabilities": {"Mars": True, "Moon": 0.3}}, "Mars: True"),
    ],
)
def test_wrong_answers_fail(answer, message):
    with pytest.raises(SmokeError, match=message) as raised:
        check_answer(answer, GOOD)
    assert "\n" not in str(raised.value)


def test_lists_and_texts_compare_exactly_numbers_within_the_tolerance():
    expected = {"labels": ["cat", "dog"], "scores": [0.5, 0.25], "n": 2}
    check_answer({"labels": ["cat", "dog"], "scores": [0.5 + TOL / 2, 0.25], "n": 2}, expected)
    for wrong, where in [
        ({**expected, "labels": ["dog", "cat"]}, r"answer.labels\[0\]"),
        ({**expected, "scores": [0.5]}, r"answer.scores: 1 items instead of 2"),
        ({**expected, "n": 3}, r"answer.n: 3 instead of 2"),
    ]:
        with pytest.raises(SmokeError, match=where):
            check_answer(wrong, expected, source="the recorded answer")


# -- where the expected answer comes from: a recorded one, or the repository's function --------


def run_with(tmp_path, smoke, dry=False, verbose=False):
    config = {"suite": {**DEFAULTS["suite"], "smoke": smoke}}
    runner = Runner(dry=dry, out=io.StringIO(), verbose=verbose)
    return SimpleNamespace(settings=from_config(tmp_path, config, {}), dry=dry, runner=runner)


def test_a_recorded_answer_is_the_expected_one_even_in_a_dry_run(tmp_path):
    smoke = {"request": {"kind": "json", "body": {"x": 1}}, "expect": {"answer": GOOD}}
    assert expected_answer(run_with(tmp_path, smoke)) == GOOD
    assert expected_answer(run_with(tmp_path, smoke, dry=True)) == GOOD


def test_no_expectation_means_any_answer(tmp_path):
    assert expected_answer(run_with(tmp_path, {"request": {"kind": "json", "body": {}}})) is None


def write_predictor(tmp_path):
    """A repository's in-process predictor, in its build context (src/)."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "smoke_predictor_example.py").write_text(
        "import json\n"
        "def answer(archive, payload):\n"
        "    if isinstance(payload, bytes):\n"
        "        return {'archive': str(archive), 'size': len(payload)}\n"
        "    return {'archive': str(archive), 'echo': payload}\n"
        "def broken(archive, payload):\n"
        "    raise RuntimeError('no model here')\n"
    )


def test_the_function_gets_the_archive_and_the_file_bytes(tmp_path):
    write_predictor(tmp_path)
    (tmp_path / "sample.bin").write_bytes(b"12345")
    smoke = {
        "request": {"kind": "file", "path": "sample.bin"},
        "expect": {"function": "smoke_predictor_example:answer"},
    }
    run = run_with(tmp_path, smoke)
    archive = tmp_path / "model" / "celestial_bodies_classifier_model.bentomodel"
    assert expected_answer(run) == {"archive": str(archive), "size": 5}
    assert expected_answer(run_with(tmp_path, smoke, dry=True)) is None  # no model needed


def test_the_function_gets_the_json_body(tmp_path):
    write_predictor(tmp_path)
    smoke = {
        "request": {"kind": "json", "body": {"x": [1, 2]}},
        "expect": {"function": "smoke_predictor_example:answer"},
    }
    assert expected_answer(run_with(tmp_path, smoke))["echo"] == {"x": [1, 2]}


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("smoke_predictor_example:missing", "cannot be imported from"),
        ("no_such_module_here:answer", "cannot be imported from"),
        ("smoke_predictor_example:broken", "failed on the JSON body: RuntimeError: no model"),
    ],
)
def test_a_function_that_cannot_answer_is_one_clear_line(tmp_path, function, message):
    write_predictor(tmp_path)
    smoke = {"request": {"kind": "json", "body": {}}, "expect": {"function": function}}
    with pytest.raises(SuiteError, match=message) as raised:
        expected_answer(run_with(tmp_path, smoke))
    assert "\n" not in str(raised.value)


# A predictor as TensorFlow and Keras are: its import and its call print, through Python and
# straight to file descriptors 1 and 2 from native code (docs/adopt-keras.md, friction 5).
NOISY = """
import ctypes, os, sys
print("import: python stdout")
os.write(2, b"import: fd 2, as TensorFlow's C++ logs are\\n")
def answer(archive, payload):
    print("call: python stdout")
    print("call: python stderr", file=sys.stderr)
    os.write(1, b"call: fd 1\\n")
    os.write(2, b"call: fd 2\\n")
    ctypes.CDLL(None).printf(b"call: C printf, buffered\\n")
    if payload.get("fail"):
        raise ValueError("the model is missing")
    return {"ok": True}
"""
PRINTED = [
    "import: python stdout",
    "import: fd 2, as TensorFlow's C++ logs are",
    "call: python stdout",
    "call: python stderr",
    "call: fd 1",
    "call: fd 2",
    "call: C printf, buffered",
]


@pytest.fixture
def noisy(tmp_path):
    """The module's name is new for each test: its import prints again."""
    name = f"noisy_{uuid.uuid4().hex}"
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / f"{name}.py").write_text(NOISY)
    yield f"{name}:answer"
    sys.modules.pop(name, None)


@pytest.mark.parametrize("verbose", [False, True], ids=["quiet", "verbose"])
def test_what_the_function_prints_is_shown_only_when_verbose(tmp_path, capfd, noisy, verbose):
    smoke = {"request": {"kind": "json", "body": {}}, "expect": {"function": noisy}}
    run = run_with(tmp_path, smoke, verbose=verbose)
    capfd.readouterr()
    assert expected_answer(run) == {"ok": True}
    # Nothing reached this process's stdout and stderr, even at the descriptors' level.
    assert capfd.readouterr() == ("", "")
    shown = run.runner.out.getvalue().splitlines()
    if verbose:
        assert shown[0] == f"suite.smoke.expect.function {noisy} printed:"
        assert sorted(shown[1:]) == sorted(PRINTED)
    else:
        assert shown == []


def test_what_the_function_printed_is_shown_above_its_error(tmp_path, capfd, noisy):
    smoke = {"request": {"kind": "json", "body": {"fail": 1}}, "expect": {"function": noisy}}
    run = run_with(tmp_path, smoke)
    capfd.readouterr()
    with pytest.raises(SuiteError, match="failed on the JSON body: ValueError: the model is"):
        expected_answer(run)
    assert capfd.readouterr() == ("", "")
    shown = run.runner.out.getvalue().splitlines()
    assert shown[0] == f"suite.smoke.expect.function {noisy} printed:"
    assert sorted(shown[1:]) == sorted(PRINTED)


def test_a_buffered_c_printf_is_captured_not_printed_later():
    # C's stdout is fully buffered when it is not a terminal, unless Python runs unbuffered
    # (PYTHONUNBUFFERED, set on some machines): a process of its own, buffered.
    script = (
        "import ctypes, json\n"
        "from cicd.smoke import captured_output\n"
        "printed = []\n"
        "with captured_output(printed):\n"
        "    ctypes.CDLL(None).printf(b'C printf, buffered\\n')\n"
        "print(json.dumps(printed))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [json.dumps(["C printf, buffered\n"])]


@pytest.mark.parametrize(
    "expect, line",
    [
        ({"function": "celestial.reference:predict_file"}, "answers 'Mars', as the model does"),
        ({"answer": GOOD}, "answers 'Mars', as recorded"),
        (None, "answers 'Mars' (no expected answer set: suite.smoke.expect)"),
    ],
    ids=["a function", "a recorded answer", "nothing expected"],
)
def test_the_step_line_says_what_the_answer_was_checked_against(expect, line):
    from cicd.smoke import result_line

    smoke = {**DEFAULTS["suite"]["smoke"], "expect": expect}
    if expect is None:
        del smoke["expect"]
    settings = from_config(ROOT, {"suite": {**DEFAULTS["suite"], "smoke": smoke}}, {})
    assert result_line(settings, GOOD) == line
    assert result_line(settings, {"species": "setosa"}).startswith("answers {'species': 'setosa'}")


TEN_SECONDS = SimpleNamespace(smoke=SimpleNamespace(timeout=10))  # the settings _wait_ready reads


class _ReadyLater:
    """A /readyz that answers 503 until ``after`` seconds from now, then 200."""

    def __init__(self, after: float):
        import http.server
        import threading
        import time

        ready_at = time.monotonic() + after
        self.ready_at = ready_at

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200 if time.monotonic() >= ready_at else 503)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class _Container:
    """What _wait_ready asks of python-on-whales' container: reload() (a `docker inspect`)
    and state.running."""

    def __init__(self, running: bool = True):
        self.reloads = 0
        self.state = SimpleNamespace(running=running, exit_code=0 if running else 3)

    def reload(self):
        self.reloads += 1


def test_the_smoke_test_sees_the_service_ready_at_once_and_rarely_asks_docker():
    """The floor (plain docker) polls /readyz every 0.05 s; the smoke test, which polled every
    0.5 s with a `docker inspect` each time, lost up to half a second per publish."""
    import time

    from cicd import smoke

    service, container = _ReadyLater(0.7), _Container()
    try:
        smoke._wait_ready(service.url, container, TEN_SECONDS)
        late = time.monotonic() - service.ready_at
    finally:
        service.close()
    assert late < 0.2, f"ready {late:.2f} s before the smoke test saw it"
    assert container.reloads <= 1  # `docker inspect` about once a second, not per GET


def test_a_container_that_exits_is_still_seen_within_about_a_second():
    import time

    from cicd import smoke

    service, container = _ReadyLater(3600), _Container(running=False)
    began = time.monotonic()
    try:
        with pytest.raises(SmokeError, match="exited with code 3 before it was ready"):
            smoke._wait_ready(service.url, container, TEN_SECONDS)
    finally:
        service.close()
    assert time.monotonic() - began < 2.5
