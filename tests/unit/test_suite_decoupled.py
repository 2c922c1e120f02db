"""The suite (src/cicd) imports nothing of the example model (`celestial`, `serve`), so that
any model repository can adopt it: every cicd module is imported where those cannot be."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "src" / "cicd"

# Run in a fresh interpreter: a meta path finder refuses the example's modules, so that an
# import of them, at any depth, fails the import of the cicd module that makes it.
IMPORT_ALL_BLOCKED = """
import importlib, pkgutil, sys
BLOCKED = ("celestial", "serve")

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"the suite imported the example's module {name}")
        return None

sys.meta_path.insert(0, Block())
import cicd
failed = []
for module in sorted(m.name for m in pkgutil.walk_packages(cicd.__path__, "cicd.")):
    try:
        importlib.import_module(module)
    except ImportError as error:
        failed.append(f"{module}: {error}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_suite_module_imports_without_the_example_model():
    modules = sorted(path.stem for path in SUITE.glob("*.py"))
    assert {"settings", "smoke", "bento", "dvc", "attestations", "bentomodel"} <= set(modules)
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL_BLOCKED],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert done.returncode == 0, f"cicd imports the example's code:\n{done.stdout}{done.stderr}"


def test_no_suite_module_imports_the_example_model_even_lazily():
    # Importing a module runs its top level only: an import inside a function (the suite
    # imports heavy libraries lazily) is found here, in the source.
    import ast

    found = []
    for path in sorted(SUITE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            found += [
                f"{path.name}:{node.lineno} imports {name}"
                for name in names
                if name.split(".")[0] in ("celestial", "serve")
            ]
    assert not found, "\n".join(found)


def test_no_import_cycle_between_suite_modules():
    # Imports under TYPE_CHECKING and inside functions count too: a cycle is a cycle for a
    # reader and a type checker (ci.py <-> context.py was one).
    import ast

    graph: dict[str, set[str]] = {}
    for path in SUITE.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module == "cicd":
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cicd."):
                found.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("cicd.")}
        graph[path.stem] = found - {path.stem}

    def reaches(start: str, goal: str) -> list[str] | None:
        """A path of imports from ``start`` to ``goal``, or None."""
        todo, seen = [[start]], {start}
        while todo:
            trail = todo.pop()
            for name in sorted(graph.get(trail[-1], ())):
                if name == goal:
                    return [*trail, name]
                if name not in seen:
                    seen.add(name)
                    todo.append([*trail, name])
        return None

    assert {"ci", "context", "docker", "retry"} <= set(graph)
    cycles = [" -> ".join(found) for name in sorted(graph) if (found := reaches(name, name))]
    assert not cycles, "\n".join(cycles)
