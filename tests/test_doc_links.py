"""Every link to a markdown heading resolves: the README, docs/, the package's and benchmarks'
sources and the notebooks cite sections by anchor (e.g. ``docs/method.md#ccs``), and a heading
renamed or dropped must not leave a reader at the top of a long page.

Anchors follow GitHub's rules: the heading text lower-cased, characters other than word
characters, '-' and ' ' dropped, spaces turned into '-'; a repeated heading gets -1, -2, ...;
a link inside a heading counts as its text, backticks are dropped, and lines inside ``` fences
are not headings. Markdown links resolve relative to their file; citations in sources
(``docs/NAME.md#anchor``) relative to the repository root, falling back to docs/NAME.md.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("README.md", "docs/**/*.md", "jaxpid/**/*.py", "benchmarks/**/*.py", "notebooks/*.ipynb")
# A markdown link with an anchor, [text](target#anchor), or a bare citation NAME.md#anchor.
LINK = re.compile(r"\]\(([^)\s]*#[^)\s]+)\)|([\w./-]+\.md#[\w-]+)")


def heading_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a markdown text."""
    seen: Counter[str] = Counter()
    anchors = set()
    fenced = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if fenced or not line.startswith("#"):
            continue
        text = re.sub(r"^#+\s*", "", line).strip()
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text).replace("`", "")
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        anchors.add(f"{slug}-{seen[slug]}" if seen[slug] else slug)
        seen[slug] += 1
    return anchors


def _target_file(root: Path, source: Path, path: str, markdown_link: bool) -> Path:
    if source.suffix == ".md" and markdown_link:  # relative to the linking file ("" = itself)
        return source.parent / path if path else source
    cited = root / path
    return cited if path and cited.is_file() else root / "docs" / Path(path).name


def dangling_links(root: Path) -> list[str]:
    """'FILE: TARGET' for every heading link under ``root`` whose file or heading does not exist."""
    files = sorted({f for pattern in SCANNED for f in root.glob(pattern) if f.is_file()})
    cache: dict[Path, set[str]] = {}
    bad = set()
    for source in files:
        text = source.read_text(encoding="utf-8", errors="replace")  # a notebook as its JSON text
        name = source.relative_to(root).as_posix()
        for match in LINK.finditer(text):
            target = match.group(1) or match.group(2)
            path, _, anchor = target.partition("#")
            if path.startswith(("http://", "https://")):
                continue
            if not path and source.suffix != ".md":
                continue  # a notebook's or docstring's own anchors are not markdown headings here
            file = _target_file(root, source, path, match.group(1) is not None).resolve()
            if not file.is_file():
                bad.add(f"{name}: {target} (no such file)")
                continue
            if file not in cache:
                cache[file] = heading_anchors(file.read_text(encoding="utf-8"))
            if anchor not in cache[file]:
                bad.add(f"{name}: {target}")
    return sorted(bad)


def test_every_heading_link_resolves():
    bad = dangling_links(ROOT)
    assert not bad, f"{len(bad)} heading link(s) point at no heading:\n  " + "\n  ".join(bad)


def test_heading_anchors_follow_githubs_rules():
    text = "\n".join([
        "# The method",
        "## Partial information decomposition",
        "### `ccs`",
        "## [Ground truth](other.md) and more",
        "## Sampling the log-SNR",
        "```",
        "## Not a heading",
        "```",
        "## Levels",
        "## Levels",
        "## Levels",
        "plain text # not a heading",
    ])
    assert heading_anchors(text) == {
        "the-method", "partial-information-decomposition", "ccs", "ground-truth-and-more",
        "sampling-the-log-snr", "levels", "levels-1", "levels-2",
    }


def test_checker_catches_dangling_links_and_accepts_good_ones(tmp_path):
    def write(path: str, text: str) -> None:
        file = tmp_path / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text, encoding="utf-8")

    write("docs/method.md", "# The method\n## Standard errors\n## Levels\n## Levels\n```\n## Fenced\n```\n")
    write("docs/other.md", "## Local\n[a](method.md#levels-1) [b](#local) [c](#gone) [d](method.md#fenced)\n"
                           "[e](nofile.md#x) [f](https://example.com/a.md#x)\n")
    write("README.md", "[g](docs/method.md#standard-errors) [h](docs/method.md#standard-error)\n")
    write("jaxpid/core/x.py", '"""See docs/method.md#levels and method.md#the-method; docs/method.md#missing."""\n')
    write("benchmarks/b.py", "# docs/method.md#levels-2\n")
    notebook = {"cells": [{"cell_type": "markdown", "source": ["[i](../docs/method.md#levels)\n",
                                                               "docs/method.md#nope"]}]}
    write("notebooks/n.ipynb", json.dumps(notebook))
    write("elsewhere/ignored.py", "docs/method.md#not-scanned\n")

    assert dangling_links(tmp_path) == sorted([
        "docs/other.md: #gone",
        "docs/other.md: method.md#fenced",
        "docs/other.md: nofile.md#x (no such file)",
        "README.md: docs/method.md#standard-error",
        "jaxpid/core/x.py: docs/method.md#missing",
        "benchmarks/b.py: docs/method.md#levels-2",
        "notebooks/n.ipynb: docs/method.md#nope",
    ])
    write("docs/method.md", "# The method\n## Standard errors\n## Standard error\n## Levels\n## Levels\n"
                            "## Levels\n## Missing\n## Nope\n## Fenced\n")
    write("docs/other.md", "## Local\n[a](method.md#levels-1) [b](#local) [d](method.md#fenced)\n")
    assert dangling_links(tmp_path) == []
