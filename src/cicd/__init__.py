"""The automation suite behind ``tasks.py``: one module per kind of step.

Data flows one way: params + data -> DVC stages -> ``.bentomodel`` -> bento -> image ->
smoke-tested image -> registry. Modules here are plain functions with typed errors; the
invoke tasks only parse options and call them. Heavy libraries (bentoml, dvc,
python-on-whales, onnxruntime) are imported inside the functions that need them so that
``invoke --list`` stays instant.
"""
