"""The automation suite (distribution ``model-cicd``): one module per kind of step.

A model repository's ``tasks.py`` exposes the steps of ``cicd.tasks``.

Data flows one way: params + data -> DVC stages -> ``.bentomodel`` -> bento -> image ->
smoke-tested image -> registry. Modules here are plain functions with typed errors; the
invoke tasks only parse options and call them. Heavy libraries (bentoml, dvc,
python-on-whales, onnxruntime) are imported inside the functions that need them so that
``invoke --list`` stays instant.

``__version__`` is the installed distribution's version: pyproject.toml is its one source,
so a release changes no module here (the example's ``evaluate`` stage imports
``cicd.bentomodel`` and so depends on this file: a version bump must not re-run it).
"""

from __future__ import annotations


def __getattr__(name: str) -> str:
    # Read on first use only: importing cicd (invoke --list, a DVC stage) stays free.
    if name == "__version__":
        from importlib.metadata import version

        return version("model-cicd")
    raise AttributeError(f"module 'cicd' has no attribute {name!r}")
