"""ci/check_schemas.py (`nox -s lint`) checks each CI file against its official schema in one
process: a file the schema refuses fails the run and is named, the others are still checked."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FILES = (".github/workflows/mlops.yaml", ".gitlab-ci.yml", ".github/dependabot.yml")
# One edit per file that its schema refuses (the line as the file has it, then the broken one).
BREAKS = {
    ".github/workflows/mlops.yaml": ("    runs-on: ubuntu-latest\n", "    runs-on: 3\n"),
    ".gitlab-ci.yml": ("      when: manual\n", "      when: manaul\n"),
    ".github/dependabot.yml": ("      interval: weekly\n", "      interval: fortnightly\n"),
}


def check_schemas(tmp_path: Path, monkeypatch, broken: str | None = None) -> int:
    """ci/check_schemas.py's run() in a copy of the CI files, ``broken`` edited to fail."""
    for name in FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    if broken:
        good, bad = BREAKS[broken]
        text = (tmp_path / broken).read_text()
        assert good in text, f"{broken} no longer has {good!r}: choose another break"
        (tmp_path / broken).write_text(text.replace(good, bad, 1))
    spec = importlib.util.spec_from_file_location("check_schemas", ROOT / "ci/check_schemas.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.chdir(tmp_path)
    return module.run()


def test_the_ci_files_pass(tmp_path, monkeypatch, capsys):
    assert check_schemas(tmp_path, monkeypatch) == 0
    assert capsys.readouterr().out.count("ok -- validation done") == len(FILES)


@pytest.mark.parametrize("broken", FILES)
def test_a_file_its_schema_refuses_fails_the_run_and_is_named(
    tmp_path, monkeypatch, capsys, broken
):
    assert check_schemas(tmp_path, monkeypatch, broken) == 1
    output = capsys.readouterr()
    assert output.err.strip().endswith(f"(errors above): {broken}")
    # The other files were checked all the same.
    assert output.out.count("ok -- validation done") == len(FILES) - 1
