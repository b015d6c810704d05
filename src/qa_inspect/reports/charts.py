"""PNG charts with matplotlib (Agg, no pyplot state) for the offline HTML reports.

Axis labels are ASCII on purpose: a CJK font may be missing on the machine that renders, and
tofu boxes in a chart are worse than English labels. Each function returns PNG bytes;
:func:`data_uri` embeds them so a report is one self-contained file.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

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
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def dimension_chart(agent: Mapping[str, float | None], team: Mapping[str, float | None]) -> bytes:
    """Horizontal bars: the agent's mean score per dimension next to the team's."""
    dims = list(DIMENSION_EN)
    fig = Figure(figsize=(6.0, 2.6))
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
    fig = Figure(figsize=(6.0, 2.4))
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
    fig = Figure(figsize=(6.0, 2.4))
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


def _num(v: float | None, *, nan: bool = False) -> float:
    if v is None or v != v:  # NaN
        return float("nan") if nan else 0.0
    return float(v)


def _style(ax: object) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)  # type: ignore[attr-defined]
    ax.grid(axis="x", alpha=0.3)  # type: ignore[attr-defined]
