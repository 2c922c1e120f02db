"""BentoML steps: import the model archive, build the bento, serve it.

Every action is shown as the BentoML command a user would type (the dry run prints it).
Serving runs that command; the import, the build (cicd.bento_build) and the store checks run
in this process through BentoML's Python API (a `bentoml` process would pay BentoML's
start-up, 1-3 s here, each time). The archive is read directly (cicd.bentomodel) for the
model's tag and digest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from cicd import bento_build, filehash, provenance
from cicd.bentomodel import (
    ArchiveError,
    Imported,
    import_checked,
    read_tag,
    stored_difference,
)
from cicd.dvc import LOCK_FILE
from cicd.errors import BentoBuildFailed, BentoNotTrusted, SuiteError
from cicd.settings import Settings
from cicd.shell import tool

if TYPE_CHECKING:
    from cicd.context import Run

# BentoML sends usage analytics unless told not to (read from the environment), and its CLI
# warns about its own duplicate `--quiet` flag on every call: neither helps a CI log.
BENTOML_ENV = {"BENTOML_DO_NOT_TRACK": "True", "PYTHONWARNINGS": "ignore::UserWarning"}

MAKE_MODEL_HINT = (
    "run `nox -s train` (or `invoke repro`) to make it, or `invoke pull` to fetch it "
    "from the DVC remote"
)


@dataclass(frozen=True)
class ModelInfo:
    tag: str  # name:version, as in the BentoML store
    digest: str  # sha256 of the .bentomodel archive: what the image's label records


# The bentos this process built, by tag, and the model each was built with: containerize
# builds from these without reading the archive again (a publish runs bento, then containerize,
# in one process); any other bento in the store is checked first (check_stored_bento).
BUILT_HERE: dict[str, ModelInfo] = {}
BUILD_BOTH = "run `invoke bento containerize` to build the bento again from this commit"

# Each step of a publish identifies its target, in one process: the archive (a tar.xz, maybe
# hundreds of MB) is unpacked for its tag and hashed once while it is unchanged (filehash).
_MODELS: dict[object, ModelInfo] = {}


def model_info(path: Path) -> ModelInfo:
    """Tag and digest of a ``.bentomodel`` archive."""
    if not path.is_file():
        raise SuiteError(f"no model archive at {path}: {MAKE_MODEL_HINT}")
    state = filehash.state(path)
    if state in _MODELS:
        return _MODELS[state]
    try:
        found = ModelInfo(tag=read_tag(path), digest=filehash.hashes(path)[1])
    except ArchiveError as error:
        raise SuiteError(f"{error}: {MAKE_MODEL_HINT}") from error
    _MODELS[state] = found
    return found


def archived_model(run: Run) -> ModelInfo:
    """The model of the workspace's archive; in a dry run a missing archive (its pull was
    only shown) stands as a placeholder so that the rest of the dry run can be shown."""
    settings = run.settings
    archive = settings.path(settings.bentomodel)
    if run.dry and not archive.exists():
        return ModelInfo(f"<tag in {settings.bentomodel}>", "sha256:<digest>")
    return model_info(archive)


def import_model(run: Run, model: ModelInfo | None = None) -> ModelInfo:
    """Import the ``.bentomodel`` into the BentoML store; the model already there is kept
    only when it holds the archive's files, byte for byte (:func:`store_model`).

    ``model``: the archive's tag and digest when the caller has already read them. The
    import runs in this process (cicd.bentomodel, the pipeline's importer too), shown as the
    equivalent `bentoml models import`: a CLI process would pay BentoML's start-up.
    """
    model = model or archived_model(run)
    store_model(run, model)
    return model


def check_recorded(run: Run, model: ModelInfo) -> None:
    """The workspace's archive is the train stage's output that ``dvc.lock`` records (its md5,
    :func:`provenance.bind_archive`), or one line that says what to do: nothing is imported,
    built or pushed from a model the commit does not record (attest would refuse to sign it
    after the push)."""
    settings = run.settings
    lock = settings.path(Path(LOCK_FILE))
    if run.dry or not lock.is_file():  # a dry run pulls nothing; no dvc.lock: nothing to hold
        return
    provenance.bind_archive(settings.root, lock.read_bytes(), settings.bentomodel, model.digest)


# The store's entries this process found to hold their archive's files, by what identifies
# the archive and every file of the entry (filehash.state: path, inode, size, mtime and ctime
# in ns). In a publish the bento step comes right after import-model: it then reads neither
# again (a 500 MB model is a gigabyte of reading per check). Any write to either changes a
# ctime, which no user can set back, and the next check reads both again.
_STORE_MATCHES: set[tuple[object, ...]] = set()


def store_state(archive: Path, tag: str) -> tuple[object, ...] | None:
    """What identifies the archive and the store's entry ``tag`` now (None: no such entry)."""
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        root = Path(bentoml.models.get(tag).path)
    except NotFound:
        return None
    entries: list[tuple[str, object]] = []
    for entry in sorted(root.rglob("*")):
        name = entry.relative_to(root).as_posix()
        if entry.is_symlink() or not (entry.is_dir() or entry.is_file()):
            entries.append((name, "other"))  # never the archive's (bentomodel.NOT_A_FILE)
        else:
            entries.append((name, filehash.state(entry) if entry.is_file() else "dir"))
    return (filehash.state(archive), str(root), tuple(entries))


def import_once(archive: Path, tag: str) -> Imported:
    """:func:`cicd.bentomodel.import_checked` of ``archive``, unless this process has already
    found the store's entry ``tag`` to hold the archive's files and neither has changed since
    (:data:`_STORE_MATCHES`). A check that saw the entry change while it read is not kept."""
    before = store_state(archive, tag)
    if before is not None and before in _STORE_MATCHES:
        return Imported(tag, False)
    done = import_checked(archive)
    after = store_state(archive, tag)
    # Kept: an entry found equal and unchanged meanwhile, or the one the import just wrote.
    if after is not None and (done.imported or after == before):
        _STORE_MATCHES.add(after)
    return done


def store_model(run: Run, model: ModelInfo) -> None:
    """The workspace's model in the BentoML store, checked against its archive.

    The store is trusted for nothing: an entry under the archive's tag is kept only when its
    files are the archive's (names and sha256, :func:`cicd.bentomodel.import_checked`); one
    that differs is reported in one line and imported again from the archive. Checked once
    per process while neither the archive nor the entry changes (:func:`import_once`)."""
    check_recorded(run, model)
    archive = run.settings.path(run.settings.bentomodel).resolve()

    def run_import() -> Imported:
        from bentoml.exceptions import BentoMLException

        try:
            return import_once(archive, model.tag)
        except (BentoMLException, ValueError, OSError) as error:
            raise SuiteError(f"importing {archive} failed ({error}): {MAKE_MODEL_HINT}") from error

    command = [tool("bentoml"), "models", "import", str(archive)]
    done = run.runner.call(command, run_import)
    if done is None:  # a dry run
        return
    if done.replaced:
        run.runner.echo(
            f"model {done.tag} in the BentoML store is not the archive's ({done.replaced}): "
            f"re-imported from {run.settings.bentomodel}"
        )
    elif not done.imported:
        run.runner.detail(
            f"model {done.tag} is already in the BentoML store (its files are the archive's)"
        )


def bento_in_store(tag: str) -> bool:
    """Is the bento ``tag`` in the local BentoML store? A read-only check, in this process."""
    import bentoml
    from bentoml.exceptions import BentoMLException

    try:
        bentoml.get(tag)
    except (BentoMLException, ValueError):  # not found; a dry run's placeholder is no tag
        return False
    return True


def bento_tag(settings: Settings, version: str) -> str:
    return f"{settings.bento_name}:{version}"


def service_arguments(model: ModelInfo) -> dict[str, str]:
    """The service's bento arguments: ``model_tag`` (src/serve.py), the exact model to serve."""
    return {"model_tag": model.tag}


def model_argument(model: ModelInfo) -> list[str]:
    """:func:`service_arguments` as `bentoml build/serve` options."""
    return [part for item in service_arguments(model).items() for part in ("--arg", "=".join(item))]


def build_bento(run: Run, model: ModelInfo | None = None) -> str:
    """Build the bento of this commit serving the workspace's model: one commit, one bento.

    The bento is versioned by the revision's tag and records the model (bento.yaml: the
    service's models and ``args``); it is checked against ``model`` after the build. The
    bento does not hold the model: containerize copies it from the store, so the store's
    model is checked against the archive first (and imported again when it differs:
    :func:`store_model`). ``model``: the archive's, when the caller has read it.

    A bento already in the store under this tag is never reused: it is deleted and built
    again. Unlike the model it has nothing to be checked against: its bento.yaml, ``env/``
    (the requirements the image installs, the entrypoint it runs) and ``src/`` are what a
    build makes of the working tree, bento.yaml records its build time, and nothing outside
    the store records what an earlier build made. Anything that can write the store could
    have changed it; a build takes seconds.

    The build runs in this process (:mod:`cicd.bento_build`: BentoML's own build, not its
    command line's 1-3 s start), shown as the equivalent `bentoml build`. A service that names
    itself otherwise than the suite expects is one line (:func:`check_bento_name`).
    """
    runner, settings = run.runner, run.settings
    model = model or archived_model(run)
    store_model(run, model)
    version = run.revision.tag
    tag = bento_tag(settings, version)
    if bento_in_store(tag):
        delete_bento(run, tag)
    command = [
        tool("bentoml"),
        "build",
        "--bentofile",
        str(settings.bentofile),
        "--version",
        version,
        "--output=tag",  # quiet: what the build below does (BentoML's own log only with -e)
        *model_argument(model),
        str(settings.build_context),
    ]

    def build() -> tuple[str, str]:
        try:
            return bento_build.build(
                bentofile=settings.bentofile,
                build_context=settings.build_context,
                version=version,
                args=service_arguments(model),
                cwd=settings.root,
                env=runner.child_env(BENTOML_ENV),
                show=runner.echo if runner.verbose else None,
                hint=f"Check {settings.bentofile} and the service it names; `invoke -e bento` "
                "shows BentoML's own account",
            )
        except BentoBuildFailed as error:  # the service's error may quote the environment
            raise BentoBuildFailed(runner.mask(str(error))) from error

    built = runner.call(command, build)
    if built is not None:  # None: a dry run
        check_bento_name(built[0], tag, settings.bentofile)
    if not runner.dry:
        check_bento_model(tag, model)
        BUILT_HERE[tag] = model
    return tag


def check_stored_bento(run: Run, tag: str, model: ModelInfo) -> None:
    """Before containerize builds the stored bento ``tag``: the model it ships is the one this
    commit records, or one line says to build the bento again (nothing is built).

    A bento this process built from ``model`` is taken as it is (:data:`BUILT_HERE`). Any
    other (`invoke containerize` alone) is whatever the store holds under the tag, and
    containerize copies its model from the store: so the bento must list exactly the
    archive's model, the store's files under that tag must be the archive's, and the archive
    must be the train output ``dvc.lock`` records (:func:`check_recorded`). The bento's own
    code and environment cannot be checked: nothing outside the store records them (see
    :func:`build_bento`), which is why a publish builds the bento in the same run."""
    if run.dry or BUILT_HERE.get(tag) == model:
        return
    if not bento_in_store(tag):
        raise BentoNotTrusted(f"no bento {tag} in the BentoML store: {BUILD_BOTH}")
    check_bento_model(tag, model, BUILD_BOTH)
    check_recorded(run, model)
    archive = run.settings.path(run.settings.bentomodel)
    differs = stored_difference(archive, model.tag)
    if differs is None:
        raise BentoNotTrusted(f"model {model.tag} is not in the BentoML store: {BUILD_BOTH}")
    if differs:
        raise BentoNotTrusted(
            f"the BentoML store's model {model.tag} is not the archive's ({differs}): {BUILD_BOTH}"
        )


def delete_bento(run: Run, tag: str) -> None:
    """Delete the stored bento ``tag`` before it is built again (:func:`build_bento`), in
    this process, shown as the equivalent `bentoml delete`."""
    import bentoml

    run.runner.detail(f"bento {tag} is already in the BentoML store: built again, not reused")
    run.runner.call([tool("bentoml"), "delete", "-y", tag], lambda: bentoml.delete(tag))


def check_bento_name(built: str, tag: str, bentofile: Path | str) -> None:
    """The bento was built under the name ``built``; the suite expected the one its settings
    give (bentofile's ``name``, else the service's class). A service that names itself
    (``@bentoml.service(name=...)``) builds under that name: one line says what to add."""
    expected = tag.split(":", 1)[0]
    if built != expected:
        raise BentoBuildFailed(
            f"bentoml build named the bento {built}, not {expected}: add `name: {built}` to "
            f"{bentofile} (the suite takes the bento's name from there)"
        )


def bento_models(tag: str) -> list[str]:
    """The tags of the models a built bento carries (what `bentoml get` lists)."""
    import bentoml

    return sorted(str(info.tag) for info in bentoml.get(tag).info.all_models)


def check_bento_model(tag: str, model: ModelInfo, hint: str = "") -> None:
    """The bento carries exactly the workspace's model, or one line says which is which and
    ``hint`` (default: delete the bento and build it again)."""
    carried = bento_models(tag)
    if carried != [model.tag]:
        hint = hint or f"delete it (`bentoml delete -y {tag}`) and build again"
        raise BentoNotTrusted(
            f"bento {tag} carries model {', '.join(carried) or 'none'} but the workspace's "
            f"archive is {model.tag}: {hint}"
        )


def serve(run: Run, port: int) -> None:
    """``bentoml serve`` the workspace's model from the working tree, reloading on code changes.

    The model is imported into the store first (a model already there is fine)."""
    settings = run.settings
    model = import_model(run)
    service = yaml.safe_load(settings.path(settings.bentofile).read_text())["service"]
    run.runner.run(
        [
            tool("bentoml"),
            "serve",
            service,
            *model_argument(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--reload",
        ],
        cwd=settings.path(settings.build_context),
        env=BENTOML_ENV,
    )
