"""This model repository's pipeline steps: the suite's (`invoke --list`, `invoke STEP --help`).

The steps come from the installed suite (`cicd.tasks`); settings from invoke.yaml next to
this file. Add the repository's own tasks with `ns.add_task(...)` (docs/adopt.md).
"""

import sys

try:
    from cicd.tasks import namespace
except ModuleNotFoundError:  # an environment with the dependencies but not the suite
    sys.exit(
        "error: the suite (model-cicd) is not installed in this environment: run "
        "`uv pip install -r requirements-freeze.txt -e .`, or use the nox sessions"
    )

ns = namespace()
