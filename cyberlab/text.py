"""Markdown authored by staff, rendered for learners without letting raw HTML through."""

from __future__ import annotations

import html
import re
from urllib.parse import urlsplit
from xml.etree.ElementTree import Element

import markdown
from markdown.extensions import Extension
from markdown.treeprocessors import Treeprocessor

SAFE_SCHEMES = {"", "http", "https", "mailto"}
_INVISIBLE = re.compile(r"[\x00-\x20\x7f]+")


def _safe_url(url: str) -> bool:
    # Browsers ignore control characters and entities inside a scheme
    # ("jav&#x61;script:"), so the check runs on what the browser would see.
    visible = _INVISIBLE.sub("", html.unescape(url))
    try:
        scheme = urlsplit(visible).scheme.lower()
    except ValueError:
        return False
    return scheme in SAFE_SCHEMES


class _DropUnsafeUrls(Treeprocessor):
    def run(self, root: Element) -> None:
        for element in root.iter():
            for attribute in ("href", "src"):
                value = element.get(attribute)
                if value is not None and not _safe_url(value):
                    element.set(attribute, "#")


class _EscapeRawHtml(Extension):
    """Raw HTML in the source is shown as text, and only web and mail links survive.

    Authors are staff, but a description is shown to every learner: one careless paste
    of a `<script>` must not run in their browsers.
    """

    def extendMarkdown(self, md: markdown.Markdown) -> None:
        md.preprocessors.deregister("html_block")
        md.inlinePatterns.deregister("html")
        md.treeprocessors.register(_DropUnsafeUrls(md), "drop_unsafe_urls", 0)


def render_markdown(source: str) -> str:
    """HTML for a Markdown description, safe to insert into a page as is."""
    if not source:
        return ""
    return markdown.markdown(source, extensions=[_EscapeRawHtml(), "fenced_code", "tables", "sane_lists"])
