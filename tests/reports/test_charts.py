"""Report charts: agent-page SVG written by our code, the merchant PNG drawn with Pillow.

Checked against straightforward references: bar lengths proportional to the values, bins
counted by a plain loop, NaN gaps in the trend, labels escaped, and no matplotlib import."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qa_inspect.reports import charts, pngchart
from qa_inspect.reports.svgplot import Plot, esc

NS = "{http://www.w3.org/2000/svg}"
TEAM_DIMS = {"product_knowledge": 70.0, "selling": 60.0, "attitude": 80.0, "responsiveness": None}
NIGHTS = ["2026-11-24", "2026-11-25", "2026-11-26"]
AGENT, TEAM = "#2563eb", "#9ca3af"


def _kit(nights: list[str] | None = None) -> charts.AgentCharts:
    nights = NIGHTS if nights is None else nights
    return charts.AgentCharts(TEAM_DIMS, [55.0, 65.0, 75.0, 85.0], nights, [70.0, 72.0, None][:len(nights)],
                              dist_ymax=60)


def _tree(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # well-formed XML, not just tag soup
    assert root.tag == f"{NS}svg" and root.get("class") == "chart" and root.get("role") == "img"
    return root


def _rects(svg: str, fill: str) -> list[dict[str, float]]:
    return [{k: float(r.get(k, 0)) for k in ("x", "y", "width", "height")}
            for r in _tree(svg).iter(f"{NS}rect") if r.get("fill") == fill]


def _plot_bars(svg: str, fill: str) -> list[dict[str, float]]:
    """The bars (not the legend swatch: 20 px wide, 8 px high)."""
    return [r for r in _rects(svg, fill) if not (r["width"] == 20 and r["height"] == 8)]


def _ref_shares(totals: list[float]) -> list[float]:
    counts = [0] * 10
    for t in totals:
        counts[min(int(max(t, 0.0) // 10), 9)] += 1
    return [100.0 * c / len(totals) if totals else 0.0 for c in counts]


def test_svg_is_a_pure_function_of_the_values() -> None:
    a = {"product_knowledge": 95.0, "selling": 20.0, "attitude": 50.0, "responsiveness": 100.0}
    b = {"product_knowledge": 10.0, "selling": 90.0, "attitude": None, "responsiveness": 30.0}
    fresh = _kit()
    first = (fresh.dimensions(a), fresh.distribution([95.0, 91.0, 12.0]), fresh.trend([90.0, None, 40.0]))
    kit = _kit()
    kit.dimensions(b), kit.distribution([50.0] * 9), kit.trend([10.0, 20.0, 30.0])
    again = (kit.dimensions(a), kit.distribution([95.0, 91.0, 12.0]), kit.trend([90.0, None, 40.0]))
    assert first == again
    assert first[0] != kit.dimensions(b)


def test_dimension_bars_are_proportional_and_missing_has_none() -> None:
    kit = _kit()
    agent = {"product_knowledge": 80.0, "selling": 40.0, "attitude": None, "responsiveness": 100.0}
    bars = _plot_bars(kit.dimensions(agent), AGENT)
    assert len(bars) == 3  # attitude is missing: no bar, not a zero-length one
    widths = [b["width"] for b in sorted(bars, key=lambda b: b["y"])]
    assert widths[0] == pytest.approx(2 * widths[1], abs=0.15) and widths[2] == pytest.approx(1.25 * widths[0], abs=0.15)
    team = sorted(_plot_bars(kit.dimensions(agent), TEAM), key=lambda b: b["y"])
    assert [round(t["width"] / widths[2] * 100) for t in team] == [70, 60, 80]  # responsiveness: team n/a
    title = _tree(kit.dimensions(agent)).find(f"{NS}title")
    assert title is not None and "Attitude: agent n/a, team 80.0" in (title.text or "")


@pytest.mark.parametrize("totals", [[0.0, 9.99, 10.0, 100.0], [55.0] * 3 + [61.0], [100.0], [], [5.0] * 30])
def test_distribution_bars_follow_a_plain_binning(totals: list[float]) -> None:
    kit = _kit()
    svg = kit.distribution(totals)
    ref = _ref_shares(totals)
    assert charts.shares(totals) == pytest.approx(ref)
    bars = sorted((b for b in _plot_bars(svg, AGENT)), key=lambda b: b["x"])
    assert len(bars) == sum(1 for r in ref if r > 0)
    full = _plot_bars(_kit().distribution([5.0] * 10), AGENT)[0]  # 100 %, clipped at the axis top (60 %)
    per_pct = full["height"] / 60
    heights = [min(r, 60.0) * per_pct for r in ref if r > 0]
    assert [b["height"] for b in bars] == pytest.approx(heights, abs=0.15)
    assert [b["width"] for b in bars] == pytest.approx([full["width"]] * len(bars))  # 6 points of 10


def test_trend_breaks_at_missing_nights() -> None:
    kit = _kit()
    gap = _tree(kit.trend([90.0, None, 40.0]) or "")
    lines = [p for p in gap.iter(f"{NS}polyline") if p.get("stroke") == AGENT]
    dots = [c for c in gap.iter(f"{NS}circle") if c.get("fill") == AGENT]
    assert lines == [] and len(dots) == 3  # 2 points + the legend marker
    run = _tree(kit.trend([90.0, 80.0, None]) or "")
    lines = [p for p in run.iter(f"{NS}polyline") if p.get("stroke") == AGENT]
    assert len(lines) == 1 and len((lines[0].get("points") or "").split()) == 2
    y90, y80 = (float(pt.split(",")[1]) for pt in (lines[0].get("points") or "").split())
    assert y90 < y80  # higher score, higher on the chart
    assert charts.AgentCharts(TEAM_DIMS, [], [], []).trend([]) is None


def test_hostile_labels_stay_text() -> None:
    night = '</text><script>alert(1)</script><svg onload="x()">&amp;\x01"\''
    svg = _kit([night, "ok"]).trend([50.0, 60.0])
    assert svg is not None and "<script" not in svg and "<svg onload" not in svg
    root = _tree(svg)
    labels = [t.text for t in root.iter(f"{NS}text")]
    assert night.replace("\x01", "") in labels  # shown literally (the XML-illegal byte dropped)
    assert all(not el.tag.endswith("script") for el in root.iter())
    assert esc("a<b") == "a&lt;b" and esc('"') == "&quot;"
    p = Plot(100, 100, left=10, right=10, top=10, bottom=10, xlim=(0, 1), ylim=(0, 1))
    assert "&lt;i&gt;" in p.svg("<i>", "t") and "<i>" not in p.svg("<i>", "<i>")


def _pixels(png: bytes) -> np.ndarray:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def test_merchant_png_bars_sit_in_their_bins() -> None:
    blue = np.array(pngchart.blend(AGENT, 0.8))
    for b in (0, 4, 9):
        px = _pixels(charts.shop_distribution_png([10.0 * b + 5] * 4))
        assert px.shape == (pngchart.H, pngchart.W, 3)
        plot = px[pngchart.TOP + 30:pngchart.H - pngchart.BOTTOM]  # below the legend
        cols = np.flatnonzero((np.abs(plot - blue).sum(axis=2) < 10).any(axis=0))
        x0, x1 = pngchart.LEFT, pngchart.W - pngchart.RIGHT
        lo, hi = x0 + (10 * b + 2) / 100 * (x1 - x0), x0 + (10 * b + 8) / 100 * (x1 - x0)
        assert len(cols) and lo - 1 <= cols.min() and cols.max() <= hi + 1, (b, cols.min(), cols.max())
    empty = _pixels(charts.shop_distribution_png([]))
    plot = empty[pngchart.TOP + 30:pngchart.H - pngchart.BOTTOM]
    assert not (np.abs(plot - blue).sum(axis=2) < 10).any()  # no bars, only the legend swatch above
    assert charts.shop_distribution_png([1.0, 2.0]) == charts.shop_distribution_png([2.0, 1.0])
    assert pngchart.nice_top([0.5]) == 10 and pngchart.nice_top([33.3]) == 40 and pngchart.nice_top([100.0]) == 100


def test_shares_bin_like_the_histogram_and_ymax_rounds_up() -> None:
    assert charts.shares([0.0, 9.99, 10.0, 100.0]) == [50.0, 25.0] + [0.0] * 7 + [25.0]
    assert charts.shares([]) == [0.0] * 10
    assert charts.dist_ymax([[55.0, 56.0, 57.0], [10.0]], [1.0, 50.0]) == 100.0
    assert charts.dist_ymax([[55.0, 65.0, 75.0]], [1.0, 50.0, 60.0, 70.0]) == 40.0


def test_rendering_reports_does_not_import_matplotlib(tmp_path: Path) -> None:
    code = ("import sys; from synthetic import build_report_data; from qa_inspect.reports import render_reports; "
            f"render_reports(build_report_data(), {str(tmp_path)!r}); print('matplotlib' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "False"
    assert (tmp_path / "reports" / "index.html").is_file()
