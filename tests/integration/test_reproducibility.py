"""The pipeline reproduces: two fresh runs agree, and they give back the committed dvc.lock.

A fresh clone of the working tree with an empty DVC remote runs the whole pipeline (`dvc
repro`: generate, prepare, train, evaluate; about 25 s), and is compared with the test run's
other fresh run, its one `nox -s train` (tests/conftest.py `training`). The committed lock was
made on another machine, maybe another CPU: the BLAS kernel pin (src/celestial/determinism.py)
is what makes them agree, and the last tests show that the kernel matters on this CPU.
"""

from __future__ import annotations

import json
import os

import pytest
import yaml

from celestial.determinism import KERNEL_VARIABLE, REFERENCE_KERNEL, cpu_flags
from cicd.bento import model_info
from tests.support.project import Project

pytestmark = pytest.mark.slow

ARCHIVE = "model/celestial_bodies_classifier_model.bentomodel"


def run_pipeline(project: Project) -> Project:
    project.run("dvc", "repro")
    return project


@pytest.fixture(scope="module")
def first_run(new_project) -> Project:
    return run_pipeline(new_project("repro-first", registry=None))


def kernel_report(project: Project) -> str:
    """What a failure message needs to say: the kernel used here and the one committed."""
    used = project.path("model-blas.json").read_text()
    committed = project.run("git", "show", "HEAD:model-blas.json").stdout
    return (
        f"{KERNEL_VARIABLE}={os.environ.get(KERNEL_VARIABLE, '(unset: pinned by the stages)')}"
        f"\nBLAS used here: {used}\nBLAS recorded in the commit: {committed}"
    )


def test_two_fresh_runs_give_identical_locks(first_run, training):
    # The other fresh run is the test run's one `nox -s train` (tests/conftest.py `training`).
    first = first_run.path("dvc.lock").read_bytes()
    assert first == (training.source / "dvc.lock").read_bytes()
    assert first_run.path("model-blas.json").read_bytes() == training.blas.encode()


def test_dvc_status_is_clean_right_after_a_run(first_run):
    status = first_run.run("dvc", "status", "--json")
    assert json.loads(status.stdout) == {}, status.stdout
    again = first_run.run("dvc", "repro")
    assert "Data and pipelines are up to date" in again.stdout, again.stdout


def test_the_committed_lock_is_reproduced(first_run):
    changed = first_run.run("git", "status", "--porcelain").stdout
    assert not changed, (
        f"a fresh run changed tracked files:\n{changed}\n{kernel_report(first_run)}\n"
        f"{first_run.run('git', 'diff', '--stat').stdout}"
    )


def test_the_lock_records_the_pipeline_that_ran(first_run):
    # A sanity check of what the tests above compare: every stage's outputs are locked.
    lock = yaml.safe_load(first_run.path("dvc.lock").read_text())
    assert set(lock["stages"]) == {"generate", "prepare", "train", "evaluate"}
    train_outs = {out["path"] for out in lock["stages"]["train"]["outs"]}
    assert train_outs == {"model", "model-blas.json"}


def other_kernel() -> str | None:
    """A BLAS kernel this CPU runs that is not the reference: its own on AVX-512."""
    flags = cpu_flags()
    if flags is None or not {"avx2", "fma"} <= flags:
        return None  # nothing is pinned here: the pin cannot be shown to matter
    return "SkylakeX" if "avx512f" in flags else "Sandybridge"


@pytest.fixture(scope="module")
def other_kernel_run(new_project, training):
    """The train stage again, on the other kernel, in a clone of its own: the first run's
    clone stays as its tests expect it, whichever runs first (they once shared it, and a test
    of the first run that came after these found the other kernel's model)."""
    kernel = other_kernel()
    if kernel is None:
        pytest.skip("not an x86-64 CPU with AVX2 and FMA: no kernel is pinned here")
    if os.environ.get(KERNEL_VARIABLE):
        pytest.skip(f"{KERNEL_VARIABLE} is set by this machine's environment: left as it is")
    project = new_project("repro-other-kernel", registry=None, trained=training)
    project.run("dvc", "pull")  # the pipeline's outputs as the run's one training made them
    pinned = model_info(project.path(ARCHIVE)).tag
    done = project.run("dvc", "repro", "--force", "--single-item", "train",
                       env={KERNEL_VARIABLE: kernel})  # fmt: skip
    return project, kernel, pinned, done


def test_another_kernel_trains_another_model(other_kernel_run):
    # If this failed, the kernel would not matter here and the test above would prove
    # nothing about the pin; if the test above fails while this passes, the pin broke.
    project, kernel, pinned, done = other_kernel_run
    other = model_info(project.path(ARCHIVE)).tag  # a hash of the ONNX weights
    assert other != pinned, f"the {kernel} kernel gave the same weights as {REFERENCE_KERNEL}"
    record = json.loads(project.path("model-blas.json").read_text())
    assert {library["kernel"] for library in record["libraries"]} == {kernel}
    assert f"BLAS kernel {kernel} instead of {REFERENCE_KERNEL}" in done.stderr


def test_the_train_session_says_what_did_not_reproduce(other_kernel_run):
    project, kernel, _, _ = other_kernel_run
    # The train session runs `dvc repro --pull`: the stages are up to date with the outputs of
    # the other kernel, and the lock now differs from the commit's.
    done = project.session("train")
    out = done.stdout + done.stderr
    assert "did not reproduce what the commit records: model, model-blas.json" in out, out
    assert f"BLAS kernel used: {kernel}; recorded in model-blas.json: {REFERENCE_KERNEL}" in out
    in_ci = project.session("train", env={"CI": "true"}, check=False)
    assert in_ci.returncode != 0
    assert "error: this run did not reproduce what the commit records" in in_ci.stderr
    assert "Traceback" not in in_ci.stderr
