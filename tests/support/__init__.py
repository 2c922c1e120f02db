"""Support shared by the tests that run the real pipeline (clones, registries, containers).

`tests.support.project` holds the helpers; `tests/conftest.py` turns them into fixtures.
"""
