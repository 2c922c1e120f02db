"""Read `params.yaml`, the single source of the experiment's knobs (DVC tracks it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

DEFAULT_PARAMS = Path("params.yaml")


def load_params(path: str | Path = DEFAULT_PARAMS, section: str | None = None) -> dict[str, Any]:
    """Return the whole params file, or one top-level section of it."""
    with open(path, encoding="utf-8") as f:
        params = yaml.safe_load(f) or {}
    return params[section] if section else params
