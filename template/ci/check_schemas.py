"""The CI files against their official JSON schemas: `nox -s lint` runs this file.

check-jsonschema (its vendored copies of the schemas) checks each file, exactly as
`check-jsonschema --builtin-schema NAME FILE` would, but all of them in this one process: each
check-jsonschema process spends about 1.8 s of CPU importing itself, and CI runs the lint
session again inside the CI files' own tests. Every file is checked, then the run fails if any
failed, naming them.

    python ci/check_schemas.py        # from the repository's root
"""

from __future__ import annotations

import sys

from check_jsonschema import main

# Each CI file and the name of its schema (`check-jsonschema --help` lists them).
SCHEMAS = {
    ".github/workflows/mlops.yaml": "vendor.github-workflows",
    ".gitlab-ci.yml": "vendor.gitlab-ci",
    ".github/dependabot.yml": "vendor.dependabot",
}


def check(path: str, schema: str) -> bool:
    """check-jsonschema's own command on one file (it prints its result): did it pass?"""
    print(f"check-jsonschema --builtin-schema {schema} {path}", flush=True)
    try:
        main(["--builtin-schema", schema, path], prog_name="check-jsonschema")
    except SystemExit as done:  # the command always ends so, with its exit status
        return done.code in (0, None)
    return True


def run() -> int:
    failed = [path for path, schema in SCHEMAS.items() if not check(path, schema)]
    if failed:
        print(
            f"check_schemas: not valid against its schema (errors above): {', '.join(failed)}",
            file=sys.stderr,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run())
