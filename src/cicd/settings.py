"""Settings: defaults from ``invoke.yaml``, overridden by environment variables.

This is the only module that reads ``os.environ`` for settings; everything else receives a
:class:`Settings`. CI providers set secrets as environment variables, so those names are
the interface: ``CONTAINER_REGISTRY_HOST``, ``CONTAINER_REGISTRY_USERNAME``,
``CONTAINER_REGISTRY_PASSWORD``, ``IMAGE_NAME``; the guide's own secret names work too
(``GCP_CONTAINER_REGISTRY_HOST``, and ``GOOGLE_SERVICE_ACCOUNT_KEY`` as the password of
the user ``_json_key``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cicd.errors import SuiteError

GOOGLE_KEY_USER = "_json_key"


@dataclass(frozen=True)
class LocalRegistry:
    """The embedded registry used when no registry is configured."""

    host: str = "127.0.0.1"
    port: int = 5050
    storage: Path = field(
        default_factory=lambda: Path("~/.cache/celestial-bodies/registry").expanduser()
    )

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Settings:
    """Everything the steps need to know, read once."""

    root: Path
    model_name: str = "celestial_bodies_classifier_model"
    bento_name: str = "celestial_bodies_classifier"
    image_name: str = "celestial-bodies-classifier"
    bentomodel: Path = Path("model/celestial_bodies_classifier_model.bentomodel")
    bentofile: Path = Path("bentofile.yaml")
    build_context: Path = Path("src")
    smoke_image: Path = Path("data/raw/Earth/Earth_1.jpg")
    smoke_timeout: float = 90.0
    network_timeout: float = 60.0  # deadline of one registry or forge call, retries included
    registry: str = ""
    registry_username: str | None = None
    registry_password: str | None = field(default=None, repr=False)
    local_registry: LocalRegistry = field(default_factory=LocalRegistry)
    base_branch: str = "main"
    docker_client: str = "auto"

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


def from_config(root: Path, config: Mapping[str, Any], environ: Mapping[str, str]) -> Settings:
    """Build the settings from the ``suite`` section of invoke's config and the environment."""
    suite = dict(config.get("suite", {}) or {})
    local = dict(suite.pop("local_registry", {}) or {})
    paths = ("bentomodel", "bentofile", "build_context", "smoke_image")
    known = Settings.__dataclass_fields__.keys()
    unknown = sorted(set(suite) - set(known))
    if unknown:
        raise SuiteError(f"unknown setting(s) {', '.join(unknown)} in invoke.yaml: remove them")
    values: dict[str, Any] = {k: Path(v) if k in paths else v for k, v in suite.items()}

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
    if "smoke_timeout" in values:
        values["smoke_timeout"] = float(values["smoke_timeout"])
    registry = LocalRegistry(
        host=str(local.get("host", LocalRegistry.host)),
        port=int(local.get("port", LocalRegistry.port)),
        **({"storage": Path(str(local["storage"])).expanduser()} if "storage" in local else {}),
    )
    return Settings(root=root, local_registry=registry, **values)


def _clean_registry(value: str) -> str:
    """``https://ghcr.io/owner/`` -> ``ghcr.io/owner``: docker wants no scheme, no slash."""
    value = value.strip().removeprefix("https://").removeprefix("http://").strip("/")
    if any(ch.isspace() for ch in value) or value != value.lower():
        raise SuiteError(
            f"registry {value!r} is not a valid registry address: use lowercase "
            "host[:port][/namespace], e.g. ghcr.io/my-org"
        )
    return value
