"""Put the committed benchmark results into the documentation pages, verbatim.

    python bench/readme.py           # rewrite the pages' result blocks from bench/results/
    python bench/readme.py --check   # exit 1 when a block differs from its file (a test runs it)

A block in a page (README.md or any docs/**/*.md; the tables live in docs/benchmarks.md) is
the Markdown a bench script rendered from its raw JSON, between

    <!-- bench: bench/results/NAME.md -->
    ...
    <!-- /bench -->

so that every figure the documentation shows is the one a committed result file holds (raw
JSON beside it, with the machine, the date and the commit), and the same command reproduces
it: `python bench/layers.py` writes bench/results/layers-latest.{json,md}, then this script.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- bench: (?P<path>\S+) -->\n)(?P<body>.*?)(<!-- /bench -->)", re.DOTALL)


def pages(root: Path = ROOT) -> list[Path]:
    """The files this script scans for blocks: README.md and every Markdown page of docs/."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def render(page: str, root: Path = ROOT, name: str = "the page") -> str:
    """``page`` (the text of the file ``name``) with each block's body replaced by its file's."""

    def fill(match: re.Match) -> str:
        source = root / match["path"]
        if not source.is_file():
            sys.exit(f"error: {name} names {match['path']}, which does not exist")
        # The result file's own title becomes bold text: the page's sections keep their levels.
        body = re.sub(r"^#+ (.*)$", r"**\1**", source.read_text(), count=1, flags=re.MULTILINE)
        return match.group(1) + body + match.group(4)

    return BLOCK.sub(fill, page)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="only say whether the pages are current"
    )
    args = parser.parse_args()
    stale = []
    for path in pages():
        name = str(path.relative_to(ROOT))
        current = path.read_text()
        if not BLOCK.search(current):
            continue
        wanted = render(current, name=name)
        if wanted == current:
            continue
        stale.append(name)
        if not args.check:
            path.write_text(wanted)
            print(f"{name}: {len(BLOCK.findall(wanted))} benchmark block(s) written")
    if args.check:
        if stale:
            sys.exit(
                f"error: the benchmark blocks of {', '.join(stale)} differ from bench/results/: "
                "run `python bench/readme.py`"
            )
        print("the pages' benchmark blocks are the committed results")
    elif not stale:
        print("the pages' benchmark blocks were already the committed results")


if __name__ == "__main__":
    main()
