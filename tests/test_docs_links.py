"""Every relative link in the README and ``docs/`` points to a file that exists, and an anchor to one of its headings."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def _pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _prose(path: Path) -> str:
    return INLINE_CODE.sub("", FENCE.sub("", path.read_text(encoding="utf-8")))


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#{1,6}\s+(.*?)\s*$", FENCE.sub("", path.read_text(encoding="utf-8")), re.M)
    return {re.sub(r"[^\w\- ]", "", h.replace("`", "").lower()).replace(" ", "-") for h in headings}


def _broken(page: Path) -> list[str]:
    broken = []
    for target in LINK.findall(_prose(page)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        name, _, anchor = target.partition("#")
        path = (page.parent / name).resolve() if name else page
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{target}: no heading with that anchor")
    return broken


def test_the_check_sees_links_and_catches_broken_ones(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A title\n\n[ok](page.md#a-title) [bad](missing.md) [anchor](#nowhere) `[code](x.md)`\n"
                    "```\n[fenced](y.md)\n```\n[web](https://example.org)\n")  # fmt: skip
    assert _broken(page) == ["missing.md: no such file", "#nowhere: no heading with that anchor"]


def test_readme_and_docs_links_point_to_existing_files_and_headings():
    pages = _pages()
    assert len(pages) > 2 and sum(len(LINK.findall(_prose(p))) for p in pages) > 10
    problems = [f"{page.relative_to(REPO)}: {item}" for page in pages for item in _broken(page)]
    assert not problems, "\n".join(problems)
