"""Every relative link of README.md and docs/*.md reaches an existing file, and its #anchor a heading there."""

from __future__ import annotations

import re
from pathlib import Path

from export_core.settings import REPO_ROOT

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    for heading in re.findall(r"^#+ (.+)$", FENCE.sub("", page.read_text()), re.MULTILINE):
        base = slug(heading)
        name, n = base, 0
        while name in found:  # GitHub numbers repeated headings: name, name-1, name-2, ...
            n += 1
            name = f"{base}-{n}"
        found.add(name)
    return found


def relative_links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text())
    return [t for t in LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def test_the_slugs_are_githubs() -> None:
    assert slug("What `make run` starts") == "what-make-run-starts"
    assert slug("6. REST API") == "6-rest-api"
    assert slug("Secrets at rest (`SECRETS_KEY`)") == "secrets-at-rest-secrets_key"


def test_every_relative_link_resolves() -> None:
    broken, checked = [], 0
    for page in PAGES:
        for target in relative_links(page):
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            checked += 1
            if not file.exists():
                broken.append(f"{page.relative_to(REPO_ROOT)}: {target} (no such file)")
            elif anchor and (file.suffix != ".md" or anchor not in anchors(file)):
                broken.append(f"{page.relative_to(REPO_ROOT)}: {target} (no such heading)")
    assert checked > 50, "the pages link to each other"
    assert broken == []
