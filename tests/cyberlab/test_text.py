"""Markdown descriptions rendered without letting HTML or script links through."""

import pytest

from cyberlab.text import render_markdown


def test_markdown_is_rendered():
    assert render_markdown("# Title\n\n*em*") == "<h1>Title</h1>\n<p><em>em</em></p>"


@pytest.mark.parametrize(
    "source",
    [
        "<script>alert(1)</script>",
        "text <img src=x onerror=alert(1)> more",
        '<div onclick="alert(1)">block</div>',
    ],
)
def test_raw_html_is_escaped(source):
    html = render_markdown(source)
    assert "<script" not in html
    assert "<img" not in html
    assert "<div" not in html
    assert "&lt;" in html


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", "jav&#x61;script:alert(1)", " JavaScript:x", "data:text/html,x"]
)
def test_links_with_a_script_scheme_are_neutralised(url):
    html = render_markdown(f"[click]({url}) ![img]({url})")
    assert "script:" not in html.lower().replace("&#x61;", "a")
    assert "data:" not in html


def test_web_mail_and_relative_links_survive():
    html = render_markdown("[a](https://example.com) [b](mailto:x@example.com) [c](/labs/1) [d](#top)")
    for href in ["https://example.com", "mailto:x@example.com", "/labs/1", "#top"]:
        assert f'href="{href}"' in html


def test_code_keeps_its_angle_brackets_escaped_once():
    assert render_markdown("`<b>`") == "<p><code>&lt;b&gt;</code></p>"
