"""The automation suite (distribution ``model-cicd``): one module per kind of step.

A model repository's ``tasks.py`` exposes the steps of ``cicd.tasks``.

Data flows one way: params + data -> DVC stages -> ``.bentomodel`` -> bento -> image ->
smoke-tested image -> registry. Modules here are plain functions with typed errors; the
invoke tasks only parse options and call them. Heavy libraries (bentoml, dvc,
python-on-whales, onnxruntime) are imported inside the functions that need them so that
``invoke --list`` stays instant.

``__version__`` is the distribution's version (pyproject.toml reads it from here).
"""

__version__ = "0.2.0"
