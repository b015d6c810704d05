"""Calibration metrics on a small case worked out by hand; review CSV validation and import."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from qa_inspect import schema as S
from qa_inspect import store
from qa_inspect.calibration import calibrate_frames, import_reviews, read_reviews_csv
from qa_inspect.errors import InputError, UserError
from qa_inspect.scoring.scorecard import load_scorecard


def auto_conversations() -> pd.DataFrame:
    totals = [90.0, 80.0, 70.0, 60.0]
    grades = ["优秀", "合格", "待改进", "待改进"]
    return pd.DataFrame({S.CONVERSATION_ID: ["c1", "c2", "c3", "c4"], S.TOTAL: totals, S.GRADE: grades,
                         **{S.score_column(d): totals for d in S.DIMENSIONS}})


def human_reviews() -> pd.DataFrame:
    return pd.DataFrame({S.CONVERSATION_ID: ["c1", "c2", "c3", "c4", "c4"], "reviewer": ["p", "p", "p", "p", "q"],
                         S.TOTAL: [88.0, 82.0, 65.0, 40.0, 60.0], S.GRADE: [None] * 5,
                         **{S.score_column(d): [None] * 5 for d in S.DIMENSIONS}})


def finding(cid: str, rule: str, pol: str) -> dict:
    return {S.CONVERSATION_ID: cid, S.SHOP_ID: "s", S.AGENT_ID: "a", S.MESSAGE_INDEX: 0, S.RULE_ID: rule,
            S.DIMENSION: "attitude", S.POLARITY: pol, S.SEVERITY: "minor", S.POINTS: 1.0, S.EVIDENCE: "",
            S.EVIDENCE_START: -1, S.EVIDENCE_END: -1, S.EXPLANATION: "", S.SOURCE: "rule", S.CONFIDENCE: 1.0}


def test_agreement_metrics_known_case(rules_dir: Path) -> None:
    sc = load_scorecard(rules_dir)
    f = S.findings_frame([finding("c1", "ATT-X", "-"), finding("c2", "ATT-X", "-"), finding("c2", "ATT-X", "-"),
                          finding("c4", "ATT-Y", "-"), finding("c4", "SEL-P", "+")])
    rep = calibrate_frames(auto_conversations(), human_reviews(), f, sc, min_hits=1)
    a = rep.agreement.set_index("measure")
    # human c4 = mean(40, 60) = 50; |diffs| = 2, 2, 5, 10
    assert a.loc["total", "n"] == 4
    assert a.loc["total", "mae"] == pytest.approx(4.75)
    assert a.loc["total", "bias"] == pytest.approx((2 - 2 + 5 + 10) / 4)
    assert a.loc["total", "spearman"] == pytest.approx(1.0)
    # grades auto 优秀/合格/待改进/待改进 vs human 合格/合格/待改进/不合格: po = 0.5,
    # pe = .25*.5 (合格) + .5*.25 (待改进) = .25 -> kappa = (0.5 - 0.25) / 0.75
    assert a.loc["grade", "agreement"] == pytest.approx(0.5)
    assert a.loc["grade", "kappa"] == pytest.approx(1 / 3)
    assert a.loc["product_knowledge", "n"] == 0  # no per-dimension human scores given
    r = rep.rules.set_index(S.RULE_ID)
    assert r.loc["ATT-X", "n_reviewed_hits"] == 2  # duplicate hits in c2 count once
    assert r.loc["ATT-X", "disagreement"] == 1.0  # people passed both conversations it penalised
    assert r.loc["ATT-Y", "disagreement"] == 0.0 and r.loc["SEL-P", "disagreement"] == 1.0
    assert rep.rules.iloc[0][S.RULE_ID] in {"ATT-X", "SEL-P"}


def test_reviews_csv_aliases_and_errors(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    p.write_text("会话ID,质检员,总分,服务态度,覆盖,备注\nc1,张三,88,90,是,好\nc2,李四,,,,\n", encoding="utf-8-sig")
    r = read_reviews_csv(p)
    assert r[S.TOTAL].tolist()[0] == 88 and r["override"].tolist() == [True, False]
    assert r[S.score_column("attitude")].iloc[0] == 90 and pd.isna(r[S.TOTAL].iloc[1])
    p.write_text("conversation_id,reviewer,total\nc1,x,88\nc2,y,abc\n", encoding="utf-8")
    with pytest.raises(InputError) as ei:
        read_reviews_csv(p)
    assert ei.value.line == 3 and ei.value.field == "total"
    p.write_text("conversation_id,reviewer,override\nc1,x,true\n", encoding="utf-8")
    with pytest.raises(InputError, match="override needs a total"):
        read_reviews_csv(p)


def test_import_replaces_same_reviewer_and_refuses_unknown_ids(tmp_path: Path) -> None:
    db = tmp_path / "qa.duckdb"
    with store.open_store(db) as con:
        conv = auto_conversations().assign(**{S.NIGHT: "2026-11-23", S.AGENT_ID: "a", S.SHOP_ID: "s"})
        run = store.RunRecord(run_id="r1", started_at=datetime.now(UTC), ruleset_version="v")
        store.write_run(con, run, conversations=conv, messages=S.empty_messages(), findings=S.empty_findings(),
                        trace=pd.DataFrame(), conversation_kpis=pd.DataFrame(), review_queue=pd.DataFrame())
    p = tmp_path / "r.csv"
    p.write_text("conversation_id,reviewer,total,override\nc1,x,50,true\nzz,x,10,false\n", encoding="utf-8")
    res = import_reviews(db, p)
    assert res.imported == 1 and res.unknown_ids == ["zz"] and res.overrides == 1
    p.write_text("conversation_id,reviewer,total,override\nc1,x,55,true\n", encoding="utf-8")
    import_reviews(db, p)
    with store.open_store(db, read_only=True) as con:
        assert con.execute("SELECT count(*), max(total) FROM reviews").fetchone() == (1, 55.0)
        assert store.read_conversations(con).set_index(S.CONVERSATION_ID).loc["c1", S.HUMAN_TOTAL] == 55
    p.write_text("conversation_id,reviewer,total\nnope,x,50\n", encoding="utf-8")
    with pytest.raises(UserError, match="none of the"):
        import_reviews(db, p)
