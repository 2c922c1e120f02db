"""Put the committed benchmark results into README.md, verbatim.

    python bench/readme.py           # rewrite README's result blocks from bench/results/
    python bench/readme.py --check   # exit 1 when a block differs from its file (a test runs it)

A block in README.md is the Markdown a bench script rendered from its raw JSON, between

    <!-- bench: bench/results/NAME.md -->
    ...
    <!-- /bench -->

so that every figure README shows is the one a committed result file holds (raw JSON beside
it, with the machine, the date and the commit), and the same command reproduces it:
`python bench/layers.py` writes bench/results/layers-latest.{json,md}, then this script.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"(<!-- bench: (?P<path>\S+) -->\n)(?P<body>.*?)(<!-- /bench -->)", re.DOTALL)


def render(readme: str, root: Path = ROOT) -> str:
    """``readme`` with each block's body replaced by its file's content."""

    def fill(match: re.Match) -> str:
        source = root / match["path"]
        if not source.is_file():
            sys.exit(f"error: README.md names {match['path']}, which does not exist")
        # The result file's own title becomes bold text: README's sections keep their levels.
        body = re.sub(r"^#+ (.*)$", r"**\1**", source.read_text(), count=1, flags=re.MULTILINE)
        return match.group(1) + body + match.group(4)

    return BLOCK.sub(fill, readme)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say whether README is current")
    args = parser.parse_args()
    current = README.read_text()
    wanted = render(current)
    if args.check:
        if wanted != current:
            sys.exit(
                "error: README.md's benchmark blocks differ from bench/results/: run "
                "`python bench/readme.py`"
            )
        print("README.md's benchmark blocks are the committed results")
        return
    README.write_text(wanted)
    print(f"README.md: {len(BLOCK.findall(wanted))} benchmark block(s) written")


if __name__ == "__main__":
    main()
