"""A small html.parser based validity checker for the reports (balanced tags, one title, lang)."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
# elements whose end tag HTML allows to be omitted; our templates close them anyway, so not listed.


class Checker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.titles = 0
        self.lang: str | None = None
        self.links: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False
        self.csp: str | None = None
        self.svg = 0  # depth inside <svg>: foreign content, where "<x/>" is allowed and <title> is the SVG's

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "html":
            self.lang = a.get("lang")
        if tag == "svg":
            self.svg += 1
        if tag == "title" and not self.svg:
            self.titles += 1
        if tag == "meta" and (a.get("http-equiv") or "").lower() == "content-security-policy":
            self.csp = a.get("content")
        for key in ("href", "src"):
            if a.get(key):
                self.links.append(a[key] or "")
        for k in a:
            if k.startswith("on"):
                self.errors.append(f"event handler attribute {k} on <{tag}>")
        if tag == "script":
            self._in_script = True
            self.scripts.append("")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in VOID and not self.svg:
            self.errors.append(f"self-closing non-void <{tag}/>")
        for k in dict(attrs):
            if k.startswith("on"):
                self.errors.append(f"event handler attribute {k} on <{tag}/>")

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}>, open: {self.stack[-3:]}")
            if tag in self.stack:
                while self.stack and self.stack.pop() != tag:
                    pass
            return
        self.stack.pop()
        if tag == "svg":
            self.svg -= 1
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data


def check_html(text: str) -> Checker:
    c = Checker()
    c.feed(text)
    c.close()
    if c.stack:
        c.errors.append(f"unclosed tags: {c.stack}")
    if c.titles != 1:
        c.errors.append(f"{c.titles} <title> elements")
    if not c.lang:
        c.errors.append("no lang attribute on <html>")
    return c


def broken_local_links(page: Path, links: list[str]) -> list[str]:
    """Links to local files (relative or file:) that do not exist; data:, http(s), mailto, #x ignored."""
    bad = []
    for link in links:
        u = urlparse(link)
        if u.scheme in ("data", "http", "https", "mailto") or link.startswith("#"):
            continue
        target = (page.parent / unquote(u.path)).resolve() if u.scheme == "" else Path(unquote(u.path))
        if not target.exists():
            bad.append(link)
    return bad
