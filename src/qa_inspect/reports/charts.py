"""Report charts: inline SVG for the pages read in a browser, PNG (Pillow) for mail.

Agent pages get SVG that this module writes directly: deterministic text, no matplotlib (drawing
180 PNGs a night cost seconds), and every label goes through :func:`svgplot.esc`, so chart text is as
inert as the rest of the page. The SVG uses presentation attributes only (no ``style``): the
page's Content-Security-Policy allows no inline style beyond its own hashed sheet. Merchant pages
are also sent by email, and Gmail/Outlook do not render SVG: they keep a PNG, drawn with Pillow
(pngchart.py; matplotlib took ~0.25 s a chart plus ~0.5 s to import).

Axis labels are ASCII on purpose: a CJK font may be missing on the machine that renders, and
tofu boxes in a chart are worse than English labels.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence

import numpy as np

from qa_inspect.reports import pngchart
from qa_inspect.reports.svgplot import Plot, esc, fmt

DIMENSION_EN = {
    "product_knowledge": "Product knowledge",
    "selling": "Selling",
    "attitude": "Attitude",
    "responsiveness": "Responsiveness",
}
_AGENT = "#2563eb"
_TEAM = "#9ca3af"
_BINS = list(range(0, 101, 10))

__all__ = ["DIMENSION_EN", "AgentCharts", "data_uri", "dist_ymax", "esc", "shares", "shop_distribution_png"]


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def shares(totals: Sequence[float]) -> list[float]:
    """Percent of ``totals`` in each 10-point bin (the last bin includes 100), as ``ax.hist`` bins them."""
    if not totals:
        return [0.0] * (len(_BINS) - 1)
    counts, _ = np.histogram(np.clip(np.asarray(totals, dtype=float), 0, 100), bins=_BINS)
    return [100.0 * c / len(totals) for c in counts]


def dist_ymax(per_agent_totals: Sequence[Sequence[float]], team_totals: Sequence[float]) -> float:
    """A shared y-axis top for the distribution charts: the largest bin share, rounded up to 10."""
    top = max([max(shares(team_totals))] + [max(shares(t)) for t in per_agent_totals if t] + [10.0])
    return float(min(100, 10 * math.ceil(top / 10)))


def _num(v: float | None, *, nan: bool = False) -> float:
    if v is None or v != v:  # NaN
        return float("nan") if nan else 0.0
    return float(v)


def _val(v: float | None) -> str:
    return "n/a" if v is None or v != v else f"{float(v):.1f}"


# --- SVG: agent pages ------------------------------------------------------------------------

class AgentCharts:
    """The three agent-page charts of one run as inline SVG (one per ``render_reports`` call).

    All agents share the scales (x 0-100, the distribution's ``dist_ymax``, the run's nights), so
    pages compare at a glance; each chart is a pure function of the team values given here and
    the agent values passed to a method. Returned strings are complete ``<svg>`` elements;
    ``label`` (the page's localised chart name) becomes the accessible name.
    """

    def __init__(self, team_dims: Mapping[str, float | None], team_totals: Sequence[float],
                 nights: Sequence[str], team_trend: Sequence[float | None], *, dist_ymax: float = 100.0) -> None:
        self.team_dims = {d: team_dims.get(d) for d in DIMENSION_EN}
        self.team_shares = shares(team_totals)
        self.nights = [str(n) for n in nights]
        self.team_trend = list(team_trend)
        self.ymax = float(dist_ymax)

    def dimensions(self, agent: Mapping[str, float | None], *, label: str = "Dimension scores") -> str:
        """Horizontal bars per dimension: team above, agent below; missing = no bar."""
        dims = list(DIMENSION_EN)
        p = Plot(600, 260, left=132, right=16, top=12, bottom=46, xlim=(-0.0, 100.0), ylim=(len(dims) - 0.5, -0.5))
        p.xgrid([0, 20, 40, 60, 80, 100])
        for y, d in enumerate(dims):
            p.hbar(y - 0.2, 0.38, _num(self.team_dims[d]), _TEAM)
            p.hbar(y + 0.2, 0.38, _num(agent.get(d)), _AGENT)
        p.axes(left=True, bottom=True)
        p.xticks([0, 20, 40, 60, 80, 100])
        p.yticks(list(range(len(dims))), [DIMENSION_EN[d] for d in dims])
        p.xlabel("Mean score (0-100); missing = not applicable")
        p.legend([("Agent", _AGENT, "box", 1.0), ("Team", _TEAM, "box", 1.0)], corner="lower right")
        title = "; ".join(f"{DIMENSION_EN[d]}: agent {_val(agent.get(d))}, team {_val(self.team_dims[d])}"
                          for d in dims)
        return p.svg(label, title)

    def distribution(self, totals: Sequence[float], *, label: str = "Score distribution") -> str:
        """Share of conversations per 10-point bin: team (wide, grey) under agent (narrow, blue)."""
        mine = shares(totals)
        p = Plot(600, 240, left=60, right=16, top=12, bottom=46, xlim=(0.0, 100.0), ylim=(0.0, self.ymax))
        step = 10 if self.ymax <= 50 else 20
        yt = [float(v) for v in range(0, int(self.ymax) + 1, step)]
        p.xgrid([0, 20, 40, 60, 80, 100])
        for b, h in zip(_BINS, self.team_shares, strict=False):
            p.vbar(b + 5, 10, h, _TEAM, opacity=0.6)
        for b, h in zip(_BINS, mine, strict=False):
            p.vbar(b + 5, 6, h, _AGENT, opacity=0.8)
        p.axes(left=True, bottom=True)
        p.xticks([0, 20, 40, 60, 80, 100])
        p.yticks(yt, [fmt(v, 0) for v in yt])
        p.xlabel("Conversation score")
        p.ylabel("% of conversations")
        p.legend([("Team", _TEAM, "box", 0.6), ("Agent", _AGENT, "box", 0.8)], corner="upper left")
        title = "; ".join(f"{b}-{b + 10}: agent {m:.1f}%, team {t:.1f}%"
                          for b, m, t in zip(_BINS, mine, self.team_shares, strict=False))
        return p.svg(label, "% of conversations per score bin: " + title)

    def trend(self, agent: Sequence[float | None], *, label: str = "Trend") -> str | None:
        """Mean total per night, team and agent lines (gaps where a night has no value)."""
        if not self.nights:
            return None
        n = len(self.nights)
        rotate = n > 5
        p = Plot(600, 240, left=60, right=16, top=12, bottom=70 if rotate else 46,
                 xlim=(-0.3, n - 0.7), ylim=(0.0, 100.0))
        xs = list(range(n))
        p.xgrid(xs)
        p.line(xs, [_num(v, nan=True) for v in self.team_trend], _TEAM)
        p.line(xs, [_num(v, nan=True) for v in agent], _AGENT)
        p.axes(left=True, bottom=True)
        p.xticks(xs, self.nights, rotate=30 if rotate else 0, size=8)
        p.yticks([0.0, 20.0, 40.0, 60.0, 80.0, 100.0])
        p.ylabel("Mean score")
        p.legend([("Team", _TEAM, "line", 1.0), ("Agent", _AGENT, "line", 1.0)], corner="lower right")
        title = "; ".join(f"{night}: agent {_val(a)}, team {_val(t)}"
                          for night, a, t in zip(self.nights, agent, self.team_trend, strict=False))
        return p.svg(label, "Mean score per night: " + title)


# --- PNG: merchant pages (also mailed) --------------------------------------------------------

def shop_distribution_png(totals: Sequence[float], *, label: str = "Shop") -> bytes:
    """Histogram of a shop's conversation totals (10-point bins, % of conversations) as PNG."""
    return pngchart.distribution_png(shares(totals), colour=_AGENT, label=label)
