"""The README and the docs point only at files that exist: every relative Markdown link, and every repository
path that the README names in backticks (``docs/table1/README.md``, ``bench/accel.py``)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted({ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("docs/*/README.md"),
               *ROOT.glob("docs/*/report/table.md")})
LINK = re.compile(r"!?\[[^\]]*\]\(<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\)")
REPO_PATH = re.compile(r"`((?:bench|benchmarks|docs|methods|reports|scripts|tests|transforms)/[\w./-]+\.\w+)`")


def relative_links(text: str) -> list[str]:
    """Targets of Markdown links and images that are files here (no URL, no bare #anchor)."""
    targets = [m.group(1).split("#", 1)[0] for m in LINK.finditer(text)]
    return [t for t in targets if t and not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def test_the_link_finder_finds_links():
    text = "see [a](docs/x.md#part), ![b](report/y.png \"t\"), [c](https://e.org), [d](#top)"
    assert relative_links(text) == ["docs/x.md", "report/y.png"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path):
    missing = [t for t in relative_links(doc.read_text(encoding="utf-8")) if not (doc.parent / t).exists()]
    assert not missing, f"{doc.relative_to(ROOT)} links to missing files: {missing}"


def test_repository_paths_named_in_the_readme_exist():
    named = REPO_PATH.findall((ROOT / "README.md").read_text(encoding="utf-8"))
    assert named, "the pattern found no path at all"
    missing = [p for p in named if "*" not in p and not (ROOT / p).exists()]
    assert not missing, f"README.md names missing files: {missing}"
