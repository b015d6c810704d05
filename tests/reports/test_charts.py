"""Agent charts drawn by blitting onto a per-run background: each PNG must depend only on its own
agent's values (nothing left over from the previous agent) and show them."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from qa_inspect.reports import charts

TEAM_DIMS = {"product_knowledge": 70.0, "selling": 60.0, "attitude": 80.0, "responsiveness": None}
NIGHTS = ["2026-11-24", "2026-11-25", "2026-11-26"]


def _kit() -> charts.AgentCharts:
    return charts.AgentCharts(TEAM_DIMS, [55.0, 65.0, 75.0, 85.0], NIGHTS, [70.0, 72.0, None], dist_ymax=60)


def _pixels(png: bytes) -> np.ndarray:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_blitted_charts_do_not_keep_the_previous_agent() -> None:
    a = {"product_knowledge": 95.0, "selling": 20.0, "attitude": 50.0, "responsiveness": 100.0}
    b = {"product_knowledge": 10.0, "selling": 90.0, "attitude": None, "responsiveness": 30.0}
    fresh = _kit()
    first = (fresh.dimensions(a), fresh.distribution([95.0, 91.0, 12.0]), fresh.trend([90.0, None, 40.0]))
    kit = _kit()
    kit.dimensions(b), kit.distribution([50.0] * 9), kit.trend([10.0, 20.0, 30.0])
    again = (kit.dimensions(a), kit.distribution([95.0, 91.0, 12.0]), kit.trend([90.0, None, 40.0]))
    for x, y in zip(first, again, strict=True):
        assert x is not None and y is not None
        assert np.array_equal(_pixels(x), _pixels(y))


def test_agent_values_change_the_agent_colour_only_where_expected() -> None:
    kit = _kit()
    blue = np.array([0x25, 0x63, 0xEB])
    low = _pixels(kit.dimensions(dict.fromkeys(TEAM_DIMS, 5.0)))
    high = _pixels(kit.dimensions(dict.fromkeys(TEAM_DIMS, 100.0)))
    n_low, n_high = ((np.abs(p.astype(int) - blue).sum(axis=2) < 30).sum() for p in (low, high))
    assert n_high > 5 * n_low > 0  # longer agent bars, legend patch in both
    assert kit.trend([None, None, None]) is not None
    assert charts.AgentCharts(TEAM_DIMS, [], [], []).trend([]) is None


def test_shares_bin_like_the_histogram_and_ymax_rounds_up() -> None:
    assert charts.shares([0.0, 9.99, 10.0, 100.0]) == [50.0, 25.0] + [0.0] * 7 + [25.0]
    assert charts.shares([]) == [0.0] * 10
    assert charts.dist_ymax([[55.0, 56.0, 57.0], [10.0]], [1.0, 50.0]) == 100.0
    assert charts.dist_ymax([[55.0, 65.0, 75.0]], [1.0, 50.0, 60.0, 70.0]) == 40.0
