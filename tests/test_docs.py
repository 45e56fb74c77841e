"""Docs that cannot drift: every relative link of every tracked Markdown page reaches a file and, with a
#anchor, a heading of it (the figures live in docs/results.md and the other pages link to its sections);
docs/ARCHITECTURE.md names every module of the four packages, and every `path.py: name` it names exists."""
from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

from helpers import REPO

PACKAGES = ("firmware_bridge", "edge", "training", "export")
LINK = re.compile(r"\]\(([^)\s]+)\)")
CODE_REF = re.compile(r"`((?:firmware_bridge|edge|training|export|scripts)/[\w/]+\.py): ([^`]+)`")


def heading_anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but - and _ dropped, spaces as -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in re.sub(r"```.*?```", "", page.read_text(), flags=re.S).splitlines():
        if match := re.match(r"^#{1,6} (.*)", line):
            anchor = heading_anchor(match.group(1))
            n = seen.get(anchor, 0)
            seen[anchor] = n + 1
            found.add(anchor if n == 0 else f"{anchor}-{n}")
    return found


def broken_links(page: Path, root: Path = REPO) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code blocks hold no links
    broken = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        if not destination.exists():
            broken.append(f"{page.relative_to(root)}: {target} (no such file)")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{page.relative_to(root)}: {target} (no such heading)")
    return broken


def tracked_pages() -> list[Path]:
    names = subprocess.run(["git", "ls-files", "*.md"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [REPO / name for name in names.split()]


def test_every_link_of_every_page_reaches_its_file_and_heading():
    pages = tracked_pages()
    assert len(pages) >= 10 and REPO / "docs" / "results.md" in pages
    assert [b for page in pages for b in broken_links(page)] == []


def test_the_link_check_can_fail(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Results\n## Lean runtime: start-up, memory (aarch64)\n\n[ok](#lean-runtime-start-up-memory-aarch64) "
                    "[ok](#results) [gone](#old-section) [missing](nowhere.md)\n")
    assert anchors(page) == {"results", "lean-runtime-start-up-memory-aarch64"}
    found = [b.split(": ", 1)[1] for b in broken_links(page, root=tmp_path)]
    assert found == ["#old-section (no such heading)", "nowhere.md (no such file)"]


def defined_names(module: Path) -> set[str]:
    return {node.name for node in ast.walk(ast.parse(module.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}


def test_architecture_names_every_module_and_only_names_that_exist():
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    unnamed = [f"{package}/{module.name}" for package in PACKAGES for module in sorted((REPO / package).glob("*.py"))
               if module.name != "__init__.py" and f"`{module.name}`" not in text and f"/{module.name}" not in text]
    assert unnamed == [], "docs/ARCHITECTURE.md does not say what these modules are"
    references = CODE_REF.findall(text)
    assert len(references) >= 20  # the sample's path from the port to its label, step by step
    missing = []
    for path, names in references:
        module = REPO / path
        if not module.is_file():
            missing.append(path)
            continue
        defined = defined_names(module)
        for name in re.findall(r"\b[A-Za-z_]\w*\b", re.sub(r"\(.*?\)", "", names)):
            if name not in defined:
                missing.append(f"{path}: {name}")
    assert missing == [], "docs/ARCHITECTURE.md names what the code does not have"
