"""Rewrite the generated parts of docs/ from the code: the measures table of docs/measures.md (between its
``generated`` markers). ``make docs`` runs it; tests/test_docs.py fails while a page is stale."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GENERATED = re.compile(r"(do not edit -->\n).*?(<!-- end of generated -->)", re.S)


def build_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=__doc__)


def main(argv: list[str] | None = None) -> None:
    build_parser().parse_args(argv)
    sys.path.insert(0, str(REPO))
    from Evaluation.measures import measures_markdown

    page = REPO / "docs" / "measures.md"
    page.write_text(GENERATED.sub(lambda match: match.group(1) + measures_markdown() + match.group(2),
                                  page.read_text()))


if __name__ == "__main__":
    main()
