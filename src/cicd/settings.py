"""Settings: defaults from ``invoke.yaml``, overridden by environment variables.

This is the only module that reads ``os.environ`` for settings; everything else receives a
:class:`Settings`. CI providers set secrets as environment variables, so those names are
the interface: ``CONTAINER_REGISTRY_HOST``, ``CONTAINER_REGISTRY_USERNAME``,
``CONTAINER_REGISTRY_PASSWORD``, ``IMAGE_NAME``, ``SIGNING_KEY`` (the PEM private key that
signs the SBOM and provenance); the guide's own secret names work too
(``GCP_CONTAINER_REGISTRY_HOST``, and ``GOOGLE_SERVICE_ACCOUNT_KEY`` as the password of the
user ``_json_key``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celestial import MODEL_ARCHIVE, MODEL_NAME, SERVICE_NAME
from cicd.errors import SuiteError

GOOGLE_KEY_USER = "_json_key"


@dataclass(frozen=True)
class LocalRegistry:
    """The embedded registry used when no registry is configured (invoke.yaml)."""

    host: str
    port: int
    storage: Path
    auth: bool  # ask for the configured registry user and password (basic auth, htpasswd)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


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
    smoke_image: Path
    smoke_timeout: float
    network_timeout: float  # deadline of one registry or forge call, its retries included
    command_timeout: float  # deadline of one command (dvc, bentoml, docker, git)
    registry: str
    local_registry: LocalRegistry
    base_branch: str
    docker_client: str
    signing_public_key: Path  # the committed public key `invoke verify` checks against
    registry_username: str | None = None
    registry_password: str | None = field(default=None, repr=False)
    signing_key: str | None = field(default=None, repr=False)  # SIGNING_KEY: PEM, a CI secret
    verbose: bool = False  # show commands, requests, tools' output (INVOKE_SUITE_VERBOSE=1)

    # Facts of the code, not settings: the names the model's code gives (src/celestial).
    model_name = MODEL_NAME
    bento_name = SERVICE_NAME
    bentomodel = Path("model") / MODEL_ARCHIVE  # the train stage's output (dvc.yaml)

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
    local = dict(suite.pop("local_registry", {}) or {})
    _check_keys("", suite, Settings, ("root", "local_registry"))
    _check_keys("local_registry.", local, LocalRegistry)
    values: dict[str, Any] = dict(suite)
    for key in ("bentofile", "build_context", "smoke_image", "signing_public_key"):
        values[key] = Path(values[key])
    for key in ("smoke_timeout", "network_timeout", "command_timeout"):
        values[key] = float(values[key])

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
    registry = LocalRegistry(
        host=str(local["host"]),
        port=int(local["port"]),
        storage=Path(str(local["storage"])).expanduser(),
        auth=_flag(local["auth"]),
    )
    return Settings(root=root, local_registry=registry, **values)


def _check_keys(prefix: str, given: Mapping[str, Any], kind: type, not_settings=()) -> None:
    """Every setting of ``kind`` given, none unknown: else one line that says which."""
    fields = {f.name: f for f in dataclasses.fields(kind) if f.name not in not_settings}
    required = {name for name, f in fields.items() if f.default is dataclasses.MISSING}
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
