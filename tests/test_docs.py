"""The README stays short and points into the manual; the manual's configuration reference covers the schema.
(The manual itself builds in strict mode in .ci/run: broken links and anchors, missing images and pages left out of
the nav fail there. Its commands run in tests/test_readme_commands.py.)"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import yaml

from vlmsweep.config.keys import schema_keys

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = REPO / "docs"


def _anchors(page: Path) -> set[str]:
    """The ids mkdocs gives the headings of a page (toc's default slugify, for the headings used here)."""
    out = set()
    fence = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence and line.startswith("#"):
            title = line.lstrip("#").strip()
            out.add(re.sub(r"[\s]+", "-", re.sub(r"[^\w\s-]", "", title).strip().lower()))
    return out


def test_the_readme_is_short_and_its_links_into_the_manual_resolve():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    links = re.findall(r"\]\((docs/[^)\s]+)\)", text)
    assert "docs/own-data.md#evaluate-your-own-manifest" in links  # "evaluate my own manifest": one click away
    for link in links:
        path, _, anchor = link.partition("#")
        assert (REPO / path).is_file(), link
        assert not anchor or anchor in _anchors(REPO / path), link


def test_every_page_of_the_manual_is_in_the_nav():
    def pages(nav) -> list[str]:
        out = []
        for item in nav:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            out += pages(value) if isinstance(value, list) else [value]
        return out

    nav = pages(yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))["nav"])
    assert sorted(nav) == sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))


def test_the_configuration_reference_lists_every_key_of_the_schema():
    spec = importlib.util.spec_from_file_location("config_reference", DOCS / "hooks" / "config_reference.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    assert hook.MARKER in page
    reference = hook.on_page_markdown(page, None, None, None)
    missing = [k for k in schema_keys(sections=False) if f"| `{k}` |" not in reference]
    assert not missing, f"keys missing from the generated configuration reference: {missing}"
    assert "**`tiny_warm`** (default)" in reference and "`max_pixels` | `str`" not in reference
