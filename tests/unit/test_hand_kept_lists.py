"""Lists kept by hand, checked against what they describe.

- each DVC stage's code `deps` are exactly the stage script and the `celestial` (and `cicd`)
  modules it imports, directly or not: a missing one means DVC does not rerun a stage whose code
  changed, an extra one reruns it for nothing;
- the bento's `include` is exactly what the service imports;
- the bento's pinned packages are the versions of requirements-freeze.txt, so the image
  serves with what the tests ran.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
# The project's packages: the example's, and the suite's (the evaluate stage imports its
# model importer, cicd.bentomodel).
PACKAGES = ("celestial", "cicd")


def imported_modules(path: Path) -> set[str]:
    """The project's modules a file imports (any form, at any depth of the file)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] in PACKAGES}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            package = node.module.split(".")[0]
            if package not in PACKAGES:
                continue
            if node.module == package:  # from celestial import MODEL_NAME, some_module
                found.add(package)
                found |= {
                    f"{package}.{alias.name}"
                    for alias in node.names
                    if (SRC / package / f"{alias.name}.py").is_file()
                }
            else:
                found |= {package, node.module}
    return found


def module_file(module: str) -> Path:
    parts = module.split(".")
    package = SRC.joinpath(*parts) / "__init__.py"
    return package if package.is_file() else SRC.joinpath(*parts[:-1], f"{parts[-1]}.py")


def code_closure(script: Path) -> set[str]:
    """The script and every project file it needs, as paths relative to the repository."""
    files = {script}
    todo = [script]
    while todo:
        for module in imported_modules(todo.pop()):
            path = module_file(module)
            init = SRC / module.split(".")[0] / "__init__.py"
            if init not in files:
                files.add(init)
                todo.append(init)
            if path not in files:
                files.add(path)
                todo.append(path)
    return {path.relative_to(ROOT).as_posix() for path in files}


STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_each_stage_depends_on_exactly_the_code_it_runs(stage):
    spec = STAGES[stage]
    script = re.search(r"python (src/\S+\.py)", spec["cmd"]).group(1)
    declared = {dep for dep in spec["deps"] if dep.startswith("src/")}
    needed = code_closure(ROOT / script)
    assert declared == needed, (
        f"dvc.yaml stage {stage}: add {sorted(needed - declared)}, "
        f"remove {sorted(declared - needed)}"
    )


BENTOFILE = yaml.safe_load((ROOT / "bentofile.yaml").read_text())


def test_the_bento_includes_exactly_what_the_service_imports():
    service_file = BENTOFILE["service"].split(":")[0] + ".py"
    needed = {Path(path).relative_to("src").as_posix() for path in code_closure(SRC / service_file)}
    assert set(BENTOFILE["include"]) == needed


def freeze_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements-freeze.txt").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)", line.strip())
        if match:
            pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def test_the_bento_pins_the_versions_of_the_freeze_file():
    frozen = freeze_pins()
    for requirement in BENTOFILE["python"]["packages"]:
        name, version = requirement.split("==")
        key = name.lower().replace("_", "-")
        assert key in frozen, f"{name} is pinned in bentofile.yaml but not frozen"
        assert frozen[key] == version, (
            f"bentofile.yaml pins {name}=={version}, requirements-freeze.txt {frozen[key]}"
        )
