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
