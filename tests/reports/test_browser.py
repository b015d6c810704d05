"""Open the reports in real headless Chromium: planted scripts must not run, ours must."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import synthetic as syn

from qa_inspect.reports.render import ReportIndex

pytestmark = pytest.mark.browser


def _chromium() -> str:
    exe = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium")
    if not exe:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is required in CI for the browser tests")
        pytest.skip("chromium not installed")
    return exe


def _run(tmp_path: Path, page: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    args = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}", *extra, page.as_uri()]
    return subprocess.run(args, capture_output=True, text=True, timeout=90, check=False)


def _dom(tmp_path: Path, page: Path, shot: Path | None = None) -> str:
    """The DOM after scripts ran; with ``shot``, the same launch also writes a screenshot
    (one Chromium start per page keeps these tests fast)."""
    extra = (f"--screenshot={shot}", "--window-size=1280,2000") if shot else ()
    res = _run(tmp_path, page, "--dump-dom", *extra)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def _assert_png(shot: Path) -> None:
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_planted_script_does_not_run_and_text_shows_literally(rendered: ReportIndex, tmp_path: Path) -> None:
    shot = tmp_path / "agent.png"
    dom = _dom(tmp_path, rendered.agents[syn.AGENT_A1], shot)
    assert "<title>客服质检报告 · 晨光:小美</title>" in dom
    assert 'document.title="PW"+"NED"' in dom  # the planted text is there, as text ...
    assert "pwned" not in dom and "PWNED" not in dom  # ... but it did not execute
    assert "&lt;script&gt;document.title" in dom
    assert "{{ 7*7 }}" in dom
    assert '<mark class="neg">这款现在是199元<sup>1</sup></mark>' in dom
    _assert_png(shot)  # the agent report also renders to a real screenshot


def test_long_lines_and_markup_in_chat_render_as_text(rendered: ReportIndex, tmp_path: Path) -> None:
    dom = _dom(tmp_path, rendered.agents[syn.AGENT_A2])
    assert "&lt;b&gt;不是粗体&lt;/b&gt;" in dom and "<b>不是粗体</b>" not in dom
    assert syn.LONG in dom


def test_overview_script_runs_under_its_csp(rendered: ReportIndex, tmp_path: Path) -> None:
    dom = _dom(tmp_path, rendered.index)
    # table.js adds the "sortable" class to every header cell; only visible if the CSP let it run
    assert 'class="sortable"' in dom and "<th class=\"sortable\"" in dom.replace('class="num sortable"', 'class="sortable"')


def test_screenshot_of_merchant_report(rendered: ReportIndex, tmp_path: Path) -> None:
    shot = tmp_path / "merchant.png"
    res = _run(tmp_path, rendered.merchants[syn.SHOP_B], f"--screenshot={shot}", "--window-size=1280,2000")
    assert res.returncode == 0, res.stderr[-2000:]
    _assert_png(shot)


CHART_PROBE = r"""
(function () {
  var out = [];
  document.querySelectorAll("svg.chart").forEach(function (svg) {
    var b = svg.getBoundingClientRect();
    out.push({w: b.width, h: b.height, top: b.top, label: svg.getAttribute("aria-label"),
              bars: svg.querySelectorAll("rect").length, dots: svg.querySelectorAll("circle").length,
              visible: getComputedStyle(svg).visibility === "visible" && getComputedStyle(svg).display !== "none"});
  });
  document.body.setAttribute("data-charts", JSON.stringify(out));
})();
"""


def _blue_pixels(shot: Path) -> int:
    import numpy as np
    from PIL import Image

    px = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    return int((np.abs(px - np.array([0x25, 0x63, 0xEB])).sum(axis=2) < 40).sum())


def test_svg_charts_render_visibly_under_the_csp(rendered: ReportIndex, tmp_path: Path) -> None:
    """The agent page's inline SVG charts get a real box and paint the agent's bars under the page's
    own CSP: the same page with the charts cut out has far fewer agent-blue pixels."""
    import html as _html
    import json
    import re

    page = rendered.agents[syn.AGENT_A1]
    text = page.read_text(encoding="utf-8")
    assert text.count('<svg class="chart"') == 3 and "<img" not in text
    with_shot, without_shot = tmp_path / "with.png", tmp_path / "without.png"
    no_charts = tmp_path / "no_charts.html"
    no_charts.write_text(re.sub(r'<svg class="chart".*?</svg>', "", text, flags=re.S), encoding="utf-8")
    for src, shot in ((page, with_shot), (no_charts, without_shot)):
        res = _run(tmp_path, src, f"--screenshot={shot}", "--window-size=1280,2000")
        assert res.returncode == 0, res.stderr[-2000:]
    assert _blue_pixels(with_shot) > _blue_pixels(without_shot) + 2000
    # boxes and content, measured by a probe (on a copy without the CSP, which forbids scripts)
    probe = tmp_path / "probe.html"
    probe.write_text(re.sub(r'<meta http-equiv="Content-Security-Policy" content="[^"]*">', "", text)
                     .replace("</body>", f"<script>{CHART_PROBE}</script></body>"), encoding="utf-8")
    res = _run(tmp_path, probe, "--dump-dom", "--window-size=1280,2000")
    m = re.search(r'data-charts="([^"]*)"', res.stdout)
    assert m, res.stdout[-2000:]
    boxes = json.loads(_html.unescape(m.group(1)))
    assert len(boxes) == 3
    for b in boxes:
        assert b["visible"] and b["w"] > 300 and b["h"] > 150 and b["top"] < 2000, b
        assert b["label"], b  # the accessible name
    assert [b["bars"] > 4 for b in boxes[:2]] == [True, True] and boxes[2]["dots"] >= 2, boxes
