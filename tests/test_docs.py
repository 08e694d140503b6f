"""The documentation holds together: a short front page, every `§` citation of the code a heading of docs/design.md,
every relative link a file, the generated pages current, BENCHMARKS.md current figures only."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import readme_support as rs

from Evaluation.measures import MEASURES, measures_markdown

DOCS = rs.REPO / "docs"


def tracked_files(*patterns: str) -> list[Path]:
    """The repository's files (committed or not, git's ignored ones left out) matching ``patterns``."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", *patterns],
                            cwd=rs.REPO, capture_output=True, text=True, check=True).stdout
    return [rs.REPO / name for name in listed.split()]


def test_the_front_page_is_short_and_starts_with_the_quick_start() -> None:
    readme = (rs.REPO / "README.md").read_text()
    assert len(readme.encode()) <= 12 * 1024
    assert re.findall(r"^## .*", readme, re.M)[0] == "## Quick start"


def test_every_section_citation_resolves_to_a_heading_of_the_design_page() -> None:
    headings = set(re.findall(r"^#+ (§[\d.]*\d)\b", (DOCS / "design.md").read_text(), re.M))
    cited = {}
    for path in tracked_files("*.py", "*.sh", "*.md", "Makefile"):
        if path.name not in ("design.md", "test_docs.py") and path.is_file():
            text = path.read_text()
            assert "SPEC §" not in text, f"{path}: cites a specification outside the repository"
            for section in re.findall(r"§(\d+(?:\.\d+)*)", text):
                cited.setdefault(f"§{section}", path.relative_to(rs.REPO))
    missing = {section: str(path) for section, path in cited.items() if section not in headings}
    assert len(cited) > 20 and not missing


def test_every_relative_link_of_the_docs_leads_to_a_file() -> None:
    for page in [rs.REPO / "README.md", *sorted(DOCS.glob("*.md")), rs.REPO / "BENCHMARKS.md"]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if not re.match(r"\w+://", target):
                assert (page.parent / target).exists(), f"{page.name}: {target}"


def test_the_measures_page_is_written_from_the_code() -> None:
    """docs/measures.md holds `measures_markdown()` between its markers (`make docs` rewrites it)."""
    page = (DOCS / "measures.md").read_text()
    generated = page.split("do not edit -->\n", 1)[1].split("<!-- end of generated -->", 1)[0]
    assert generated == measures_markdown()
    for measure in MEASURES.values():
        assert f"| `{measure.name}` | {', '.join(measure.keys)} | {measure.what} | {measure.source} |" in generated


def test_benchmarks_hold_current_figures_only() -> None:
    """BENCHMARKS.md holds one current record per subject (superseded runs live in bench/history.md): no two
    sections of one subject, each section's figures with the command that made them (a script that exists) and a
    date, and the page stays short (25 KiB)."""
    text = (rs.REPO / "BENCHMARKS.md").read_text()
    assert len(text.encode()) <= 25 * 1024
    sections = re.split(r"^## ", text, flags=re.M)[1:]
    assert sections
    for section in sections:
        title = section.splitlines()[0]
        subjects = [re.sub(r",? \d{4}-\d{2}-\d{2}.*", "", line) for line in re.findall(r"^### (.+)$", section, re.M)]
        assert len(subjects) == len(set(subjects)), f"{title}: a subject recorded twice: {subjects}"
        assert re.search(r"\b20\d\d-\d\d-\d\d\b", section), f"{title}: no date"
        commands = re.findall(r"```bash\n(.*?)```", section, re.S) + re.findall(r"`([^`\n]*\.py\b[^`\n]*)`", section)
        scripts = [script for command in commands for script in re.findall(r"(?<![\w/.])((?:bench/)?\w+\.py)\b",
                                                                             command)]
        assert scripts, f"{title}: no command"
        for script in scripts:
            assert (rs.REPO / script).is_file() or (rs.REPO / "tests" / script).is_file(), f"{title}: {script}?"
    assert (rs.REPO / "bench" / "history.md").is_file()
