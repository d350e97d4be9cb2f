"""The docs hold together: every relative link of the README and docs/ reaches a file (and a heading,
when it names one), and docs/numbers.md carries the blocks `make bench` and `make chaos` rewrite."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench import readme
from bench.common import NUMBERS_PAGE, OUT, replace_block

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces as hyphens."""
    text = FENCE.sub("", page.read_text())
    headings = re.findall(r"^#+ (.+)$", text, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_reaches_a_file_and_its_heading(page: Path) -> None:
    broken = []
    for target in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in anchors(linked)):
            broken.append(target)
    assert broken == []


def test_the_numbers_page_holds_the_block_make_bench_writes_from_docs_bench() -> None:
    block = NUMBERS_PAGE.read_text().partition(readme.START)[2].partition(readme.END)[0]
    assert block == f"\n{readme.section()}\n"
    assert "(bench/lab-timings.png)" in block and (NUMBERS_PAGE.parent / "bench" / "lab-timings.png").is_file()
    assert "<!-- chaos:start -->" in NUMBERS_PAGE.read_text() and (OUT / "chaos.json").is_file()


def test_replace_block_rewrites_between_the_markers_only(tmp_path: Path) -> None:
    page = tmp_path / "numbers.md"
    page.write_text("# Numbers\n\n<!-- x:start -->\nold\n<!-- x:end -->\n\nafter\n")
    assert replace_block(page, "<!-- x:start -->", "<!-- x:end -->", "new")
    assert page.read_text() == "# Numbers\n\n<!-- x:start -->\nnew\n<!-- x:end -->\n\nafter\n"


def test_a_page_without_the_markers_is_left_alone(tmp_path: Path) -> None:
    page = tmp_path / "numbers.md"
    page.write_text("# Numbers\n")
    assert not replace_block(page, "<!-- x:start -->", "<!-- x:end -->", "new")
    assert page.read_text() == "# Numbers\n"
    with pytest.raises(SystemExit, match="no <!-- bench:start -->"):
        readme.update(page)
