"""Settings: defaults from ``invoke.yaml``, overridden by environment variables.

This is the only module that reads ``os.environ`` for settings; everything else receives a
:class:`Settings`. CI providers set secrets as environment variables, so those names are
the interface: ``CONTAINER_REGISTRY_HOST``, ``CONTAINER_REGISTRY_USERNAME``,
``CONTAINER_REGISTRY_PASSWORD``, ``IMAGE_NAME``, ``SIGNING_KEY`` (the PEM private key that
signs the SBOM and provenance); the guide's own secret names work too
(``GCP_CONTAINER_REGISTRY_HOST``, and ``GOOGLE_SERVICE_ACCOUNT_KEY`` as the password of the
user ``_json_key``).

What the suite knows of the model comes from the same section, never from the model's code
(the suite imports none of it): the model's name and archive (``model``), the smoke test's
request and expected answer (``smoke``), the service image's base (``base_image``), the record
named when a retrain does not reproduce (``reproducibility``); the bento's name is
bentofile.yaml's (:attr:`Settings.bento_name`).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cicd.errors import SuiteError

GOOGLE_KEY_USER = "_json_key"


# suite.dvc_jobs "auto": DVC's own default (4 transfers per core, a transfer mostly waits on
# the network), capped so that a 64-core runner does not open 256 connections to one bucket.
DVC_JOBS_PER_CORE, DVC_JOBS_CAP = 4, 16


def resolve_dvc_jobs(value: Any, cores: int | None) -> int:
    """Parallel transfers of `dvc pull` and `dvc push` (``--jobs``): ``auto`` or a count."""
    if value is None or value == "auto":
        return max(1, min(DVC_JOBS_PER_CORE * (cores or 1), DVC_JOBS_CAP))
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)  # INVOKE_SUITE_DVC_JOBS=8 arrives as a string
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SuiteError(
            f"setting dvc_jobs is {value!r} in invoke.yaml: give auto or a whole number >= 1"
        )
    return value


AUTO = 0  # suite.local_registry.port: let the OS (binary) or the engine (container) choose


def recorded_port(storage: Path, port: int) -> int:
    """The port the embedded registry of ``port`` uses: ``port`` itself, or for
    :data:`AUTO` the one its last start recorded (0 when none is recorded)."""
    if port != AUTO:
        return port
    record = Path(storage).expanduser() / f"run-{AUTO}" / "port"
    try:
        return int(record.read_text().strip() or 0)
    except (OSError, ValueError):
        return AUTO


@dataclass(frozen=True)
class LocalRegistry:
    """The embedded registry used when no registry is configured (invoke.yaml)."""

    host: str
    port: int
    storage: Path
    auth: bool  # ask for the configured registry user and password (basic auth, htpasswd)
    # The image run as a container when the engine already has it (never pulled); else the binary.
    image: str = "registry:2"

    @property
    def address(self) -> str:
        """``host:port``; for port 0 (the OS or the engine chooses) the port its running
        registry recorded, ``host:0`` while none is."""
        return f"{self.host}:{recorded_port(self.storage, self.port)}"


@dataclass(frozen=True)
class Model:
    """The model the train stage exports (a ``.bentomodel``), as the BentoML store names it."""

    name: str
    archive: Path  # default model/<name>.bentomodel: the train stage's output (dvc.yaml)


@dataclass(frozen=True)
class SmokeRequest:
    """What the smoke test sends: one file as a multipart field, or a JSON body."""

    kind: str  # "file" or "json"
    field: str = "image"  # kind file: the multipart field's name
    path: Path | None = None  # kind file: the file sent (a pipeline output, pulled if missing)
    content_type: str | None = None  # kind file: the part's type (default: from the suffix)
    body: Any = None  # kind json: the JSON sent

    @property
    def payload_source(self) -> str:
        return str(self.path) if self.kind == "file" else "the JSON body"


@dataclass(frozen=True)
class SmokeExpect:
    """What the answer must be: what ``function`` computes in-process from the workspace's
    model (``"module:callable"``, called with the archive's path and the request's payload:
    the file's bytes or the JSON body), or a recorded ``answer``. Numbers may differ by
    ``tolerance`` (the image's libraries may round differently in the last bits)."""

    function: str | None = None
    answer: Any = None
    tolerance: float = 1e-4


@dataclass(frozen=True)
class Smoke:
    """The smoke test: one request to the running image, its answer checked."""

    request: SmokeRequest
    expect: SmokeExpect | None = None  # None: any JSON answer with HTTP 200 passes
    path: str = "/predict"
    timeout: float = 90.0  # seconds the container may take to be ready


@dataclass(frozen=True)
class Settings:
    """Everything the steps need to know, read once.

    The defaults are in one place, invoke.yaml (section ``suite``); the environment
    overrides some of them and brings the secrets.
    """

    root: Path
    image_name: str
    bentofile: Path
    build_context: Path
    model: Model
    smoke: Smoke
    network_timeout: float  # deadline of one registry or forge call, its retries included
    command_timeout: float  # deadline of one command (dvc, bentoml, docker, git)
    registry: str
    local_registry: LocalRegistry
    base_branch: str
    docker_client: str
    signing_public_key: Path  # the committed public key `invoke verify` checks against
    # The service image's base (the provenance records its digest, checked to start the image).
    base_image: str = "python:3.11-slim"  # BentoML's own base for Python 3.11
    # The train stage's record of what computed the weights (threadpoolctl's BLAS info),
    # named when a retrain does not reproduce dvc.lock; None: no such record.
    blas_record: Path | None = None
    # Outputs (dvc.lock paths) whose bytes a retrain cannot reproduce (an export stamping a
    # random version or the time): check-reproduced warns, not fails, when the metrics match.
    unstable_outputs: tuple[str, ...] = ()
    # The requirements files `invoke freeze` compiles into requirements-freeze.txt: those
    # that list the pipeline's dependencies, the suite among them.
    freeze_inputs: tuple[Path, ...] = (Path("requirements.txt"),)
    registry_username: str | None = None
    registry_password: str | None = field(default=None, repr=False)
    signing_key: str | None = field(default=None, repr=False)  # SIGNING_KEY: PEM, a CI secret
    verbose: bool = False  # show commands, requests, tools' output (INVOKE_SUITE_VERBOSE=1)
    # Parallel transfers of `dvc pull`/`dvc push` (suite.dvc_jobs, resolved by resolve_dvc_jobs()).
    dvc_jobs: int = resolve_dvc_jobs("auto", os.cpu_count())
    # Labels given to every container the suite starts (smoke test, SBOM): CONTAINER_LABELS,
    # e.g. a CI job's id, so that a cleanup after a cancelled job finds its containers.
    container_labels: tuple[tuple[str, str], ...] = ()

    @property
    def bentomodel(self) -> Path:
        """The model's archive, the train stage's output (relative to the root)."""
        return self.model.archive

    @property
    def bento_name(self) -> str:
        """The bento's name, as ``bentoml build`` names it: bentofile.yaml's ``name``, else
        the service's (BentoML: ``to_snake_case`` of ``@bentoml.service(name=...)``, which
        defaults to the class name). The suite does not import the service, so a service
        named otherwise than its class must have ``name:`` in its bentofile."""
        import yaml

        path = self.path(self.bentofile)
        try:
            bentofile = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise SuiteError(f"cannot read {path} ({error}): set suite.bentofile") from error
        if bentofile.get("name"):
            return str(bentofile["name"])
        service = str(bentofile.get("service") or "")
        if ":" not in service:
            raise SuiteError(
                f"{self.bentofile} names no service (`service: module:Class`) and no `name`: "
                "add them"
            )
        return _snake_case(service.rsplit(":", 1)[1].rsplit(".", 1)[-1])

    @property
    def uses_local_registry(self) -> bool:
        return not self.registry

    @property
    def registry_host(self) -> str:
        """Host (and port) of the target registry, without any repository path."""
        return (self.registry or self.local_registry.address).split("/", 1)[0]

    @property
    def repository(self) -> str:
        """``<registry>[/<namespace>]/<image>``: the image reference without a tag."""
        return f"{self.registry or self.local_registry.address}/{self.image_name}"

    @property
    def repository_path(self) -> str:
        """The repository's name inside its registry (``<namespace>/<image>``), for its API."""
        return self.repository.split("/", 1)[1]

    def path(self, relative: Path) -> Path:
        return relative if relative.is_absolute() else self.root / relative


CONFIG_FILE = "invoke.yaml"


def read_config(root: Path) -> dict[str, Any]:
    """The repository's invoke.yaml, as invoke reads it (without environment overrides)."""
    import yaml

    return yaml.safe_load((root / CONFIG_FILE).read_text())


def load(root: Path, environ: Mapping[str, str]) -> Settings:
    """The settings of the repository at ``root`` (its invoke.yaml) and the environment:
    for code that does not run under invoke (benchmarks, tests)."""
    return from_config(root, read_config(root), environ)


def from_config(root: Path, config: Mapping[str, Any], environ: Mapping[str, str]) -> Settings:
    """Build the settings from the ``suite`` section of invoke's config and the environment."""
    suite = dict(config.get("suite", {}) or {})
    local = _mapping("local_registry", suite.pop("local_registry", {}))
    model = _mapping("model", suite.pop("model", None))
    smoke = _mapping("smoke", suite.pop("smoke", None))
    reproducibility = _mapping("reproducibility", suite.pop("reproducibility", {}))
    derived = (
        "root", "local_registry", "model", "smoke", "blas_record", "unstable_outputs",
        "container_labels",  # the environment's only (CONTAINER_LABELS)
    )  # fmt: skip
    _check_keys("", suite, Settings, derived)
    _check_keys("local_registry.", local, LocalRegistry)
    _check_keys("reproducibility.", reproducibility, _Reproducibility)
    values: dict[str, Any] = dict(suite)
    for key in ("bentofile", "build_context", "signing_public_key"):
        values[key] = Path(values[key])
    for key in ("network_timeout", "command_timeout"):
        values[key] = _number(key, values[key])
    if "freeze_inputs" in values:
        values["freeze_inputs"] = _paths("freeze_inputs", values["freeze_inputs"])
    values["model"] = _model(model)
    values["smoke"] = _smoke(smoke)
    values["blas_record"] = (
        Path(reproducibility["blas_record"]) if reproducibility.get("blas_record") else None
    )
    unstable = reproducibility.get("unstable_outputs") or []
    values["unstable_outputs"] = tuple(
        path.as_posix() for path in _paths("reproducibility.unstable_outputs", unstable, empty=True)
    )

    host = environ.get("CONTAINER_REGISTRY_HOST") or environ.get("GCP_CONTAINER_REGISTRY_HOST")
    if host:
        values["registry"] = host
    values["registry"] = _clean_registry(values.get("registry") or "")
    if environ.get("IMAGE_NAME"):
        values["image_name"] = environ["IMAGE_NAME"]
    username = environ.get("CONTAINER_REGISTRY_USERNAME")
    password = environ.get("CONTAINER_REGISTRY_PASSWORD")
    if not password and environ.get("GOOGLE_SERVICE_ACCOUNT_KEY"):
        username, password = username or GOOGLE_KEY_USER, environ["GOOGLE_SERVICE_ACCOUNT_KEY"]
    if password and not username:
        raise SuiteError(
            "CONTAINER_REGISTRY_PASSWORD is set but CONTAINER_REGISTRY_USERNAME is not: set both"
        )
    values.update(registry_username=username or None, registry_password=password or None)
    values["signing_key"] = environ.get("SIGNING_KEY") or None
    values["verbose"] = _flag(values.get("verbose", False))
    values["dvc_jobs"] = resolve_dvc_jobs(values.get("dvc_jobs", "auto"), os.cpu_count())
    values["container_labels"] = parse_labels(environ.get("CONTAINER_LABELS", ""))
    registry = LocalRegistry(
        host=str(local["host"]),
        port=int(local["port"]),
        storage=Path(str(local["storage"])).expanduser(),
        auth=_flag(local["auth"]),
        **({"image": str(local["image"])} if local.get("image") else {}),
    )
    return Settings(root=root, local_registry=registry, **values)


@dataclass(frozen=True)
class _Reproducibility:
    """The keys of ``reproducibility`` (they become :attr:`Settings.blas_record` and
    :attr:`Settings.unstable_outputs`)."""

    blas_record: str = ""
    unstable_outputs: tuple[str, ...] = ()


def parse_labels(value: str) -> tuple[tuple[str, str], ...]:
    """``key=value,key=value`` (CONTAINER_LABELS) as pairs; "" gives none."""
    pairs = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        key, equals, text = item.partition("=")
        if not equals or not key or any(ch.isspace() for ch in key):
            raise SuiteError(
                f"CONTAINER_LABELS has {item!r}: give key=value pairs separated by commas, "
                "e.g. CONTAINER_LABELS=ci.job=1234,ci.pipeline=99"
            )
        pairs.append((key, text))
    return tuple(pairs)


def _model(given: dict[str, Any]) -> Model:
    _check_keys("model.", given, Model, optional=("archive",))
    name = _text("model.name", given["name"])
    archive = given.get("archive") or f"model/{name}.bentomodel"
    return Model(name=name, archive=Path(str(archive)))


def _smoke(given: dict[str, Any]) -> Smoke:
    _check_keys("smoke.", given, Smoke)
    request = _mapping("smoke.request", given["request"])
    _check_keys("smoke.request.", request, SmokeRequest)
    kind = request["kind"]
    if kind == "file":
        if not request.get("path"):
            raise SuiteError(
                "setting smoke.request.path missing from invoke.yaml: kind file sends a file"
            )
        if "body" in request:
            raise SuiteError("setting smoke.request.body is for kind json, not file: remove it")
        request_value = SmokeRequest(
            kind="file",
            field=_text("smoke.request.field", request.get("field", "image")),
            path=Path(str(request["path"])),
            content_type=request.get("content_type") or None,
        )
    elif kind == "json":
        if "body" not in request:
            raise SuiteError(
                "setting smoke.request.body missing from invoke.yaml: kind json sends it"
            )
        extra = sorted(set(request) - {"kind", "body"})
        if extra:
            raise SuiteError(
                f"setting(s) {', '.join('smoke.request.' + k for k in extra)} are for kind "
                "file, not json: remove them"
            )
        request_value = SmokeRequest(kind="json", body=request["body"])
    else:
        raise SuiteError(f"setting smoke.request.kind is {kind!r} in invoke.yaml: use file or json")
    expect = None
    if given.get("expect") is not None:
        expect_given = _mapping("smoke.expect", given["expect"])
        _check_keys("smoke.expect.", expect_given, SmokeExpect)
        function, answer = expect_given.get("function"), expect_given.get("answer")
        if (function is None) == (answer is None):
            raise SuiteError(
                "setting smoke.expect needs exactly one of function (module:callable) "
                "and answer (the recorded JSON) in invoke.yaml"
            )
        if function is not None and not re.fullmatch(r"[\w.]+:[\w.]+", str(function)):
            raise SuiteError(
                f"setting smoke.expect.function is {function!r} in invoke.yaml: "
                "use module:callable, e.g. mypackage.predict:answer"
            )
        tolerance = _number("smoke.expect.tolerance", expect_given.get("tolerance", 1e-4))
        expect = SmokeExpect(function=function, answer=answer, tolerance=tolerance)
    path = _text("smoke.path", given.get("path", "/predict"))
    if not path.startswith("/"):
        raise SuiteError(f"setting smoke.path is {path!r} in invoke.yaml: start it with /")
    return Smoke(
        request=request_value,
        expect=expect,
        path=path,
        timeout=_number("smoke.timeout", given.get("timeout", 90)),
    )


def _mapping(key: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SuiteError(f"setting {key} is {value!r} in invoke.yaml: it is a section (key: value)")
    return dict(value)


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SuiteError(f"setting {key} is {value!r} in invoke.yaml: give a non-empty text")
    return value


def _paths(key: str, value: Any, empty: bool = False) -> tuple[Path, ...]:
    if (
        not isinstance(value, list)
        or not (value or empty)
        or not all(isinstance(item, str) and item.strip() for item in value)
    ):
        raise SuiteError(
            f"setting {key} is {value!r} in invoke.yaml: give a list of files, "
            "e.g. [requirements.txt]"
        )
    return tuple(Path(item) for item in value)


def _number(key: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not number >= 0:
        raise SuiteError(f"setting {key} is {value!r} in invoke.yaml: give a number >= 0")
    return number


def _snake_case(name: str) -> str:
    """BentoML's ``to_snake_case`` (bentoml._internal.tag): how it names a service's bento."""

    def join(match: re.Match[str]) -> str:
        word = match.group()
        return f"_{word[:-1]}_{word[-1]}".lower() if len(word) > 1 else "_" + word.lower()

    return re.sub(r"([A-Z]+)(?=[a-z0-9])", join, name).lstrip("_")


def _check_keys(
    prefix: str,
    given: Mapping[str, Any],
    kind: type,
    not_settings: Collection[str] = (),
    optional: Collection[str] = (),
) -> None:
    """Every setting of ``kind`` given, none unknown: else one line that says which."""
    fields = {f.name: f for f in dataclasses.fields(kind) if f.name not in not_settings}
    required = {
        name
        for name, f in fields.items()
        if f.default is dataclasses.MISSING and name not in optional
    }
    unknown = sorted(set(given) - set(fields))
    if unknown:
        names = ", ".join(prefix + name for name in unknown)
        raise SuiteError(f"unknown setting(s) {names} in invoke.yaml: remove them")
    missing = sorted(required - set(given))
    if missing:
        names = ", ".join(prefix + name for name in missing)
        raise SuiteError(
            f"setting(s) {names} missing from the suite section of invoke.yaml: add them "
            "(the repository's invoke.yaml has them all)"
        )


def _flag(value: Any) -> bool:
    """A yes/no setting from invoke.yaml (a bool) or the environment (a string)."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _clean_registry(value: str) -> str:
    """``https://ghcr.io/owner/`` -> ``ghcr.io/owner``: docker wants no scheme, no slash."""
    value = value.strip().removeprefix("https://").removeprefix("http://").strip("/")
    if any(ch.isspace() for ch in value) or value != value.lower():
        raise SuiteError(
            f"registry {value!r} is not a valid registry address: use lowercase "
            "host[:port][/namespace], e.g. ghcr.io/my-org"
        )
    return value
