"""Finding 11 of issue 23 (the BentoML store): the store is trusted for nothing, its tag
included.

In a clone with its own BentoML store: import the workspace's model, then overwrite the
stored ``model.onnx`` under the same tag (what anything that can write the store can do).
`invoke import-model`, and `invoke bento` after a second poisoning, each say in one line that
the store's model was not the archive's and import it again; the bento as it ships
(`bentoml export`, what containerize copies) carries the archive's bytes. Before, both steps
said "already in the BentoML store" and the poisoned model went into the signed image.

The built bento too: its files in the store (the service's code, the entrypoint script the
image runs) are overwritten under the commit's tag; `invoke bento` builds it again from the
working tree instead of reusing it. Before, it said "already built" and containerize shipped
the poisoned files.

`invoke containerize` alone (no `bento` before it in the same run) builds from the stored
bento: it refuses in one line when that bento's model, or the store's files under its tag,
are not the archive's. Before, it containerized the poisoned model unchecked."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cicd.bento import BUILD_BOTH
from cicd.bentomodel import read_members
from tests.support import runs
from tests.support.project import Project, remove_images

pytestmark = [pytest.mark.slow]

MODEL = "celestial_bodies_classifier_model"
ARCHIVE = Path(f"model/{MODEL}.bentomodel")
POISON = b"not the trained model"


@pytest.fixture(scope="module")
def clone(new_project, training) -> Iterator[Project]:
    # Nothing is pushed; the images the steps tag there go when the module ends.
    namespace = runs.image("store-trust", host="registry.invalid")
    project = new_project(
        "store-trust", None, env={"CONTAINER_REGISTRY_HOST": namespace}, trained=training
    )
    project.run("dvc", "pull", str(ARCHIVE))
    yield project
    remove_images(f"{namespace}/")


def stored_model(project: Project) -> Path:
    """The stored ``model.onnx`` of the archive's tag (name/version in the store)."""
    (version,) = [p for p in (project.bentoml_home / "models" / MODEL).iterdir() if p.is_dir()]
    return version / "model.onnx"


def poison(project: Project) -> None:
    path = stored_model(project)
    path.write_bytes(POISON)


def test_a_poisoned_store_entry_is_reported_and_imported_again(clone, tmp_path):
    genuine = read_members(clone.path(ARCHIVE), ["model.onnx"])["model.onnx"]
    clone.invoke("import-model")
    assert stored_model(clone).read_bytes() == genuine

    poison(clone)
    done = clone.invoke("import-model")
    assert "is not the archive's (model.onnx is sha256:" in done.stdout
    assert f"re-imported from {ARCHIVE}" in done.stdout
    assert stored_model(clone).read_bytes() == genuine

    poison(clone)
    done = clone.invoke("bento")
    assert f"re-imported from {ARCHIVE}" in done.stdout
    assert stored_model(clone).read_bytes() == genuine

    # The bento as containerize ships it: its models copied from the store. Exported
    # outside the clone: a file in it would make the tree dirty, the next bento another tag.
    exported = tmp_path / "exported.bento"
    clone.run("bentoml", "export", f"celestial_bodies_classifier:{clone.head()}", str(exported))
    with tarfile.open(exported) as tar:
        (member,) = [m for m in tar.getmembers() if m.name.endswith("/model.onnx")]
        shipped = tar.extractfile(member)
        assert shipped is not None and shipped.read() == genuine


def test_an_intact_store_entry_is_kept(clone):
    done = clone.invoke("import-model")
    assert "re-imported" not in done.stdout
    assert "already in the BentoML store (its files are the archive's)" in done.stdout


def test_a_built_bento_in_the_store_is_built_again_not_reused(clone, tmp_path):
    clone.invoke("bento")
    stored = clone.bentoml_home / "bentos" / "celestial_bodies_classifier" / clone.head()
    service, entrypoint = stored / "src" / "serve.py", stored / "env" / "docker" / "entrypoint.sh"
    genuine = {service: service.read_bytes(), entrypoint: entrypoint.read_bytes()}
    assert genuine[service] == clone.path("src/serve.py").read_bytes()
    for path in genuine:
        path.write_bytes(path.read_bytes() + b"\n# poisoned in the store\n")

    clone.invoke("bento")
    for path, content in genuine.items():
        assert path.read_bytes() == content, f"{path} was reused as the store had it"

    # The bento as containerize ships it.
    exported = tmp_path / "rebuilt.bento"
    clone.run("bentoml", "export", f"celestial_bodies_classifier:{clone.head()}", str(exported))
    with tarfile.open(exported) as tar:
        for name in ("src/serve.py", "env/docker/entrypoint.sh"):
            (member,) = [m for m in tar.getmembers() if m.name.removeprefix("./") == name]
            shipped = tar.extractfile(member)
            assert shipped is not None and b"poisoned" not in shipped.read(), name


def test_containerize_alone_refuses_a_stored_model_that_is_not_the_archives(clone):
    clone.invoke("bento")
    poison(clone)
    done = clone.invoke("containerize", check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error: ")]
    assert "is not the archive's (model.onnx is sha256:" in line
    assert line.endswith(f": {BUILD_BOTH}")
    assert stored_model(clone).read_bytes() == POISON  # refused, not repaired behind its back

    # The store repaired: containerize alone passes the check and runs the build, stopped
    # here by a 1 s command deadline unless the engine's build cache finishes it sooner
    # (the check is what this test is about, not the image).
    clone.invoke("import-model")
    done = clone.invoke("--command-timeout", "1", "containerize", check=False)
    output = done.stdout + done.stderr
    assert "bentoml containerize celestial_bodies_classifier:" in output
    assert done.returncode == 0 or "did not finish within 1 s" in output, output
    assert "invoke bento containerize" not in output


def test_containerize_alone_refuses_a_stored_bento_that_lists_another_model(clone):
    clone.invoke("bento")
    stored = clone.bentoml_home / "bentos" / "celestial_bodies_classifier" / clone.head()
    manifest = stored / "bento.yaml"
    genuine = manifest.read_text()
    tag = genuine.split(f"{MODEL}:", 1)[1].split()[0].strip("'\"")
    manifest.write_text(genuine.replace(f"{MODEL}:{tag}", f"{MODEL}:anothermodel"))
    done = clone.invoke("containerize", check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    expected = f"carries model {MODEL}:anothermodel but the workspace's archive is {MODEL}:{tag}"
    assert expected in done.stderr and BUILD_BOTH in done.stderr
