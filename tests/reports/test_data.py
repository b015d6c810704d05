"""Report inputs: safe file names, structural per-shop filtering, loading a run from DuckDB."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import synthetic as syn

from qa_inspect import schema as S
from qa_inspect.errors import BugError, UserError
from qa_inspect.reports.data import (
    ReportData,
    assert_single_shop,
    for_shop,
    load_report_data,
    trend_from_conversations,
)
from qa_inspect.safe_io import safe_component, safe_path

HOSTILE_IDS = ["../../x", "..", ".", "con", "CON.txt", "nul", "a/b", "a\\b", "晨光:小美", "", " ", "lpt1",
               "x" * 300, "a\x00b", "normal-id_1.2"]


def test_safe_names_stay_inside_and_stay_distinct(tmp_path: Path) -> None:
    names = [safe_component(i) for i in HOSTILE_IDS]
    assert len(set(names)) == len(names)
    for ident, name in zip(HOSTILE_IDS, names, strict=True):
        assert re.fullmatch(r"\w[\w.\-]{0,119}", name), (ident, name)
        assert name.lower().split(".")[0] not in {"con", "nul", "lpt1", "prn", "aux"}
        assert safe_path(tmp_path, ident, suffix=".html").parent == tmp_path
    assert safe_component("normal-id_1.2") == "normal-id_1.2"


@pytest.mark.parametrize("shop", [syn.SHOP_A, syn.SHOP_B])
def test_for_shop_filters_every_frame(report_data: ReportData, shop: str) -> None:
    d = for_shop(report_data, shop)
    for name in ("conversations", "messages", "findings", "agent_kpis", "shop_kpis"):
        frame: pd.DataFrame = getattr(d, name)
        assert len(frame) > 0 and set(frame[S.SHOP_ID]) == {shop}, name
    assert set(d.review_queue[S.CONVERSATION_ID]) <= set(d.conversations[S.CONVERSATION_ID])
    assert len(d.review_queue) == 1
    assert d.trend.empty and d.kb_answers == {} and list(d.shops) == [shop]


def test_assert_single_shop_catches_contamination(report_data: ReportData) -> None:
    d = for_shop(report_data, syn.SHOP_A)
    leaked = replace(d, findings=pd.concat([d.findings, report_data.findings.tail(1)]))
    with pytest.raises(BugError, match=syn.SHOP_B):
        assert_single_shop(leaked, syn.SHOP_A)
    foreign_queue = replace(d, review_queue=report_data.review_queue)
    with pytest.raises(BugError, match="review_queue"):
        assert_single_shop(foreign_queue, syn.SHOP_A)


def _store(path: Path, data: ReportData, runs: list[str]) -> None:
    con = duckdb.connect(str(path))
    for table, frame in (("conversations", data.conversations), ("messages", data.messages),
                         ("findings", data.findings), ("review_queue", data.review_queue)):
        parts = [frame.assign(run_id=r) for r in runs]
        both = pd.concat(parts, ignore_index=True)
        con.register("src", both)
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM src")
        con.unregister("src")
    if len(runs) > 1:  # the last run only has shop A
        con.execute(f"DELETE FROM conversations WHERE run_id = '{runs[-1]}' AND shop_id = '{syn.SHOP_B}'")
    con.close()


def test_load_report_data_reads_one_run(report_data: ReportData, tmp_path: Path) -> None:
    db = tmp_path / "qa.duckdb"
    _store(db, report_data, ["r1", "r2"])
    con = duckdb.connect(str(db), read_only=True)
    d1 = load_report_data(con, "r1", report_data.shops)
    d2 = load_report_data(con, "r2", report_data.shops)
    assert len(d1.conversations) == 7 and len(d1.messages) == len(report_data.messages)
    assert d2.shop_ids() == [syn.SHOP_A]
    assert d1.agent_kpis.empty and d1.shop_kpis.empty  # no KPI tables in this store
    d1.validate()
    assert len(d1.trend) == len(trend_from_conversations(report_data.conversations)) > 0
    with pytest.raises(UserError, match="r1, r2"):
        load_report_data(con, "nope", report_data.shops)
    con.close()


def test_trend_is_the_mean_total_per_night_and_agent(report_data: ReportData) -> None:
    t = trend_from_conversations(report_data.conversations)
    row = t[(t[S.AGENT_ID] == syn.AGENT_A2) & (t[S.NIGHT] == "2026-11-26")].iloc[0]
    assert row["mean_total"] == 0.0 and row["n"] == 1
    row = t[(t[S.AGENT_ID] == syn.AGENT_B2) & (t[S.NIGHT] == "2026-11-25")].iloc[0]
    assert row["mean_total"] == 88.0


def test_report_from_store_shows_effective_totals_and_marks_overrides(report_data: ReportData, tmp_path: Path) -> None:
    """A supervisor's override (reviews.override) replaces the automatic total on every page."""
    from datetime import UTC, datetime

    from qa_inspect import store
    from qa_inspect.reports.data import AUTO_TOTAL
    from qa_inspect.reports.render import render_reports

    con = store.connect(tmp_path / "qa.duckdb")
    store.write_run(con, store.RunRecord(run_id="r1", started_at=datetime(2026, 11, 27, tzinfo=UTC),
                                         ruleset_version="v1"),
                    conversations=report_data.conversations, messages=report_data.messages,
                    findings=report_data.findings, trace=pd.DataFrame(), conversation_kpis=pd.DataFrame(),
                    review_queue=report_data.review_queue)
    a1, a2 = f"{syn.SHOP_A}:a1", f"{syn.SHOP_A}:a2"  # both AGENT_A1's; a1 automatic total 52
    con.execute("INSERT INTO reviews (conversation_id, reviewer, total, override, imported_at) VALUES "
                "(?, 'lead', 85.0, true, '2026-11-27 08:00+00'), (?, 'lead', 81.0, false, '2026-11-27 08:00+00'),"
                "(?, 'qa2', 10.0, true, '2026-11-26 08:00+00')", [a1, a2, a1])  # latest override wins
    d = load_report_data(con, "r1", report_data.shops, grade=lambda t: "良好" if t >= 80 else "不合格")
    con.close()
    c = d.conversations.set_index(S.CONVERSATION_ID)
    assert (c.loc[a1, S.TOTAL], c.loc[a1, AUTO_TOTAL], c.loc[a1, S.GRADE]) == (85.0, 52.0, "良好")
    assert bool(c.loc[a1, S.OVERRIDDEN]) and not bool(c.loc[a2, S.OVERRIDDEN])
    assert c.loc[a2, S.TOTAL] == 93.0  # a review without override changes nothing
    assert int(c[S.OVERRIDDEN].sum()) == 1
    t = d.trend[(d.trend[S.AGENT_ID] == syn.AGENT_A1) & (d.trend[S.NIGHT] == "2026-11-24")]
    assert t["mean_total"].tolist() == [85.0]  # the trend follows the effective total

    idx = render_reports(d, tmp_path / "out")  # one render (charts are the slow part) for all pages
    html = idx.agents[syn.AGENT_A1].read_text(encoding="utf-8")
    assert '<div class="v">89.0</div>' in html  # mean of the effective totals (85 + 93) / 2, not 72.5
    head = html[html.index('id="c-' + a1):]
    head = head[:head.index("</header>")]
    assert ">85.0<" in head and "人工复核 · 自动评分 52.0" in head
    assert "人工复核" not in idx.agents[syn.AGENT_A2].read_text(encoding="utf-8")
    assert "人工复核 1" in idx.index.read_text(encoding="utf-8")


def test_lazy_buyer_aliases_behave_like_the_plain_map() -> None:
    from qa_inspect.reports.data import BuyerAliases, buyer_alias

    names = ["小美", "b", "王五<script>", "小美美"]
    lazy, ref = BuyerAliases(names), {c: buyer_alias(c) for c in names}
    assert list(lazy) == list(ref) and len(lazy) == len(ref) and dict(lazy) == ref
    assert lazy.get("nobody") is None and lazy.get("nobody", "x") == "x" and lazy.get("b") == ref["b"]
    assert "小美" in lazy and "nobody" not in lazy
    with pytest.raises(KeyError):
        lazy["nobody"]


def test_for_shop_review_queue_matches_isin(report_data: ReportData) -> None:
    """The per-row membership filter keeps exactly the rows ``isin`` keeps (duplicates, other shops)."""
    rq = report_data.review_queue
    other = report_data.conversations[report_data.conversations[S.SHOP_ID] != syn.SHOP_A][S.CONVERSATION_ID]
    mine = report_data.conversations[report_data.conversations[S.SHOP_ID] == syn.SHOP_A][S.CONVERSATION_ID]
    extra = pd.DataFrame({S.CONVERSATION_ID: [mine.iloc[0], mine.iloc[0], other.iloc[0], "unknown"],
                          "reason": ["dup", "dup", "other", "none"], "priority": [1, 1, 1, 1]})
    rq = pd.concat([rq, extra.astype({S.CONVERSATION_ID: rq[S.CONVERSATION_ID].dtype})], ignore_index=True)
    data = replace(report_data, review_queue=rq)
    got = for_shop(data, syn.SHOP_A).review_queue
    ref = rq[rq[S.CONVERSATION_ID].isin(set(mine))]
    pd.testing.assert_frame_equal(got, ref)
    assert len(got) >= 2
