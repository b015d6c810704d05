"""PNG charts with matplotlib (Agg, no pyplot state) for the offline HTML reports.

Axis labels are ASCII on purpose: a CJK font may be missing on the machine that renders, and
tofu boxes in a chart are worse than English labels. Each function returns PNG bytes;
:func:`data_uri` embeds them so a report is one self-contained file.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.artist import Artist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

DIMENSION_EN = {
    "product_knowledge": "Product knowledge",
    "selling": "Selling",
    "attitude": "Attitude",
    "responsiveness": "Responsiveness",
}
_AGENT = "#2563eb"
_TEAM = "#9ca3af"


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    # layout="tight" on the figure instead of bbox_inches="tight": one draw instead of two
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def dimension_chart(agent: Mapping[str, float | None], team: Mapping[str, float | None]) -> bytes:
    """Horizontal bars: the agent's mean score per dimension next to the team's."""
    dims = list(DIMENSION_EN)
    fig = Figure(figsize=(6.0, 2.6), layout="tight")
    ax = fig.add_subplot()
    ys = range(len(dims))
    a = [_num(agent.get(d)) for d in dims]
    t = [_num(team.get(d)) for d in dims]
    ax.barh([y + 0.2 for y in ys], a, height=0.38, color=_AGENT, label="Agent")
    ax.barh([y - 0.2 for y in ys], t, height=0.38, color=_TEAM, label="Team")
    ax.set_yticks(list(ys), [DIMENSION_EN[d] for d in dims])
    ax.set_xlim(0, 100)
    ax.invert_yaxis()
    ax.set_xlabel("Mean score (0-100); missing = not applicable")
    ax.legend(loc="lower right", fontsize=8)
    _style(ax)
    return _png(fig)


def trend_chart(nights: Sequence[str], agent: Sequence[float | None], team: Sequence[float | None]) -> bytes:
    """Mean total per night for the agent and the team."""
    fig = Figure(figsize=(6.0, 2.4), layout="tight")
    ax = fig.add_subplot()
    xs = list(range(len(nights)))
    ax.plot(xs, [_num(v, nan=True) for v in team], color=_TEAM, marker="o", label="Team")
    ax.plot(xs, [_num(v, nan=True) for v in agent], color=_AGENT, marker="o", label="Agent")
    ax.set_xticks(xs, list(nights), rotation=30 if len(nights) > 5 else 0, fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("Mean score")
    ax.legend(loc="lower right", fontsize=8)
    _style(ax)
    return _png(fig)


def distribution_chart(agent: Sequence[float], team: Sequence[float], *, agent_label: str = "Agent") -> bytes:
    """Histogram of conversation totals (10-point bins), agent over team, as shares."""
    bins = list(range(0, 101, 10))
    fig = Figure(figsize=(6.0, 2.4), layout="tight")
    ax = fig.add_subplot()
    if team:
        ax.hist(list(team), bins=bins, color=_TEAM, alpha=0.6, label="Team",
                weights=[100.0 / len(team)] * len(team))
    if agent:
        ax.hist(list(agent), bins=bins, color=_AGENT, alpha=0.8, label=agent_label,
                weights=[100.0 / len(agent)] * len(agent), rwidth=0.6)
    ax.set_xlim(0, 100)
    ax.set_xlabel("Conversation score")
    ax.set_ylabel("% of conversations")
    ax.legend(loc="upper left", fontsize=8)
    _style(ax)
    return _png(fig)


_BINS = list(range(0, 101, 10))


def shares(totals: Sequence[float]) -> list[float]:
    """Percent of ``totals`` in each 10-point bin (the last bin includes 100), as ``ax.hist`` bins them."""
    if not totals:
        return [0.0] * (len(_BINS) - 1)
    counts, _ = np.histogram(np.clip(np.asarray(totals, dtype=float), 0, 100), bins=_BINS)
    return [100.0 * c / len(totals) for c in counts]


class _Blit:
    """One figure drawn once (axes, labels, team series, legend); per agent only the animated
    artists are drawn onto a copy of that background and the pixels encoded as PNG.

    A full ``savefig`` lays out and draws every tick label again (~40 ms a chart); this is ~5 ms.
    The axes limits are fixed up front, so every agent's chart has the same scale.
    """

    def __init__(self, fig: Figure, ax: Any, animated: list[Artist]) -> None:
        self.fig, self.ax, self.animated = fig, ax, animated
        for a in animated:
            a.set_animated(True)
        self.canvas = FigureCanvasAgg(fig)
        self.canvas.draw()
        self.background = self.canvas.copy_from_bbox(fig.bbox)

    def png(self) -> bytes:
        self.canvas.restore_region(self.background)
        for a in self.animated:
            self.ax.draw_artist(a)
        rgba = np.asarray(self.canvas.buffer_rgba())
        buf = io.BytesIO()
        Image.fromarray(rgba[..., :3].copy(), "RGB").save(buf, format="PNG", compress_level=1)
        return buf.getvalue()


class AgentCharts:
    """The three agent-page charts for one run, with the team side drawn once.

    Create one per ``render_reports`` call (or per worker) and pass it in: it holds figures, so
    it must not be shared between threads. Output is deterministic for the same inputs.
    """

    def __init__(self, team_dims: Mapping[str, float | None], team_totals: Sequence[float],
                 nights: Sequence[str], team_trend: Sequence[float | None], *, dist_ymax: float = 100.0) -> None:
        self.nights = list(nights)
        # dimensions: team bars static, agent bars animated
        dims = list(DIMENSION_EN)
        fig = Figure(figsize=(6.0, 2.6), dpi=100, layout="tight")
        ax = fig.add_subplot()
        ys = range(len(dims))
        agent_bars = ax.barh([y + 0.2 for y in ys], [0.0] * len(dims), height=0.38, color=_AGENT, label="Agent")
        ax.barh([y - 0.2 for y in ys], [_num(team_dims.get(d)) for d in dims], height=0.38, color=_TEAM,
                label="Team")
        ax.set_yticks(list(ys), [DIMENSION_EN[d] for d in dims])
        ax.set_xlim(0, 100)
        ax.invert_yaxis()
        ax.set_xlabel("Mean score (0-100); missing = not applicable")
        legend = ax.legend(loc="lower right", fontsize=8)
        _style(ax)
        self._dims_bars = list(agent_bars)
        self._dims = _Blit(fig, ax, [*agent_bars, legend])  # legend last: stays on top of the bars
        # distribution: team histogram static, agent bars (60 % width) animated
        fig = Figure(figsize=(6.0, 2.4), dpi=100, layout="tight")
        ax = fig.add_subplot()
        centers = [b + 5 for b in _BINS[:-1]]
        ax.bar(centers, shares(team_totals), width=10, color=_TEAM, alpha=0.6, label="Team")
        dist_bars = ax.bar(centers, [0.0] * len(centers), width=6, color=_AGENT, alpha=0.8, label="Agent")
        ax.set_xlim(0, 100)
        ax.set_ylim(0, dist_ymax)
        ax.set_xlabel("Conversation score")
        ax.set_ylabel("% of conversations")
        legend = ax.legend(loc="upper left", fontsize=8)
        _style(ax)
        self._dist_bars = list(dist_bars)
        self._dist = _Blit(fig, ax, [*dist_bars, legend])
        # trend: team line static, agent line animated (only when there are nights)
        self._trend: _Blit | None = None
        if self.nights:
            fig = Figure(figsize=(6.0, 2.4), dpi=100, layout="tight")
            ax = fig.add_subplot()
            xs = list(range(len(self.nights)))
            ax.plot(xs, [_num(v, nan=True) for v in team_trend], color=_TEAM, marker="o", label="Team")
            (line,) = ax.plot(xs, [float("nan")] * len(xs), color=_AGENT, marker="o", label="Agent")
            ax.set_xticks(xs, self.nights, rotation=30 if len(xs) > 5 else 0, fontsize=8)
            ax.set_xlim(-0.3, len(xs) - 0.7)  # fixed: the agent line is not part of autoscaling
            ax.set_ylim(0, 100)
            ax.set_ylabel("Mean score")
            legend = ax.legend(loc="lower right", fontsize=8)
            _style(ax)
            self._trend_line = line
            self._trend = _Blit(fig, ax, [line, legend])

    def dimensions(self, agent: Mapping[str, float | None]) -> bytes:
        for bar, d in zip(self._dims_bars, DIMENSION_EN, strict=True):
            bar.set_width(_num(agent.get(d)))
        return self._dims.png()

    def distribution(self, totals: Sequence[float]) -> bytes:
        for bar, h in zip(self._dist_bars, shares(totals), strict=True):
            bar.set_height(h)
        return self._dist.png()

    def trend(self, agent: Sequence[float | None]) -> bytes | None:
        if self._trend is None:
            return None
        self._trend_line.set_ydata([_num(v, nan=True) for v in agent])
        return self._trend.png()


def dist_ymax(per_agent_totals: Sequence[Sequence[float]], team_totals: Sequence[float]) -> float:
    """A shared y-axis top for the distribution charts: the largest bin share, rounded up to 10."""
    top = max([max(shares(team_totals))] + [max(shares(t)) for t in per_agent_totals if t] + [10.0])
    return float(min(100, 10 * math.ceil(top / 10)))


def _num(v: float | None, *, nan: bool = False) -> float:
    if v is None or v != v:  # NaN
        return float("nan") if nan else 0.0
    return float(v)


def _style(ax: object) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)  # type: ignore[attr-defined]
    ax.grid(axis="x", alpha=0.3)  # type: ignore[attr-defined]
