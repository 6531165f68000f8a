"""The README and the docs/ pages: a README of SpeechBrain's size, and links that resolve."""

import glob
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README_LIMIT = (
    15_000  # bytes; SpeechBrain's longest recipe README is about 16 KB
)
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def _pages():
    pages = [os.path.join(ROOT, "README.md")]
    pages += sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
    pages += sorted(glob.glob(os.path.join(ROOT, "recipes", "*", "README.md")))
    return pages


def _prose(path):
    """The lines of a Markdown file outside fenced code blocks."""
    lines, fenced = [], False
    with open(path, encoding="utf-8") as fin:
        for line in fin:
            if FENCE.match(line):
                fenced = not fenced
            elif not fenced:
                lines.append(line)
    return lines


def _anchors(path):
    """GitHub's anchors of a Markdown file's headings."""
    anchors, seen = set(), {}
    for line in _prose(path):
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).lower())
            slug = slug.replace(" ", "-")
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            anchors.add(f"{slug}-{count}" if count else slug)
    return anchors


def _broken_links(path):
    broken = []
    for line in _prose(path):
        for target in LINK.findall(line):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            linked = (
                os.path.normpath(os.path.join(os.path.dirname(path), file_part))
                if file_part
                else path
            )
            where = f"{os.path.relpath(path, ROOT)}: ({target})"
            if not os.path.exists(linked):
                broken.append(f"{where}: no {os.path.relpath(linked, ROOT)}")
            elif anchor and linked.endswith(".md"):
                if anchor not in _anchors(linked):
                    broken.append(f"{where}: no heading #{anchor}")
    return broken


def test_the_readme_is_of_speechbrains_size():
    size = os.path.getsize(os.path.join(ROOT, "README.md"))
    assert size <= README_LIMIT, (
        f"README.md is {size} bytes, more than {README_LIMIT}: move the "
        "details to a page under docs/ and link it"
    )


def test_every_relative_link_resolves():
    broken = [link for page in _pages() for link in _broken_links(page)]
    assert not broken, "\n".join(broken)


def test_every_docs_page_is_linked_from_the_readme():
    readme = os.path.join(ROOT, "README.md")
    linked = {
        os.path.normpath(os.path.join(ROOT, target.partition("#")[0]))
        for line in _prose(readme)
        for target in LINK.findall(line)
    }
    orphans = [
        os.path.relpath(page, ROOT)
        for page in glob.glob(os.path.join(ROOT, "docs", "*.md"))
        if page not in linked
    ]
    assert not orphans, f"pages the README does not link: {orphans}"
