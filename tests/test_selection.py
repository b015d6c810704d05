"""Sampling reproducibility and stratification, review-queue reasons, coaching picks."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qa_inspect import schema as S
from qa_inspect.errors import UsageError
from qa_inspect.selection import (
    coach_csv_path,
    coach_picks,
    review_queue,
    sample_conversations,
    write_coach_csv,
)

GRADES = ["优秀", "合格", "待改进", "不合格"]


def conversations(n_agents: int = 3, per_agent: int = 40, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for a in range(n_agents):
        for i in range(per_agent):
            total = float(rng.uniform(30, 100))
            rows.append({S.CONVERSATION_ID: f"s:a{a}-{i:03d}", S.SHOP_ID: "s", S.AGENT_ID: f"a{a}",
                         S.NIGHT: "2026-11-23", S.TOTAL: total,
                         S.GRADE: GRADES[0 if total >= 90 else 1 if total >= 75 else 2 if total >= 60 else 3],
                         S.VETO: False, S.VETO_RULE: None, S.RISK: float("nan"),
                         **{S.score_column(d): total for d in S.DIMENSIONS}})
    return pd.DataFrame(rows)


def test_same_seed_same_sample_and_other_seed_differs() -> None:
    c = conversations()
    a = sample_conversations(c, per_agent=5, seed=42)
    b = sample_conversations(c.sample(frac=1.0, random_state=1), per_agent=5, seed=42)  # row order irrelevant
    assert a[S.CONVERSATION_ID].tolist() == b[S.CONVERSATION_ID].tolist()
    other = sample_conversations(c, per_agent=5, seed=43)
    assert set(other[S.CONVERSATION_ID]) != set(a[S.CONVERSATION_ID])
    assert a.groupby(S.AGENT_ID).size().tolist() == [5, 5, 5]


def test_sample_is_stratified_by_grade_and_stable_per_agent() -> None:
    c = conversations()
    s = sample_conversations(c, per_agent=4, seed=1)
    for agent, g in s.groupby(S.AGENT_ID):
        present = set(c.loc[c[S.AGENT_ID] == agent, S.GRADE])
        assert set(g[S.GRADE]) == present  # every band the agent has is represented
    # adding another agent does not change anyone else's picks
    more = pd.concat([c, conversations(n_agents=4, seed=9).query("agent_id == 'a3'")], ignore_index=True)
    s2 = sample_conversations(more, per_agent=4, seed=1)
    assert s2[s2[S.AGENT_ID] != "a3"][S.CONVERSATION_ID].tolist() == s[S.CONVERSATION_ID].tolist()


def test_small_agent_gets_everything_and_bad_n_is_usage_error() -> None:
    c = conversations(n_agents=1, per_agent=3)
    assert len(sample_conversations(c, per_agent=10, seed=0)) == 3
    with pytest.raises(UsageError):
        sample_conversations(c, per_agent=0, seed=0)


def test_review_queue_reasons_and_order() -> None:
    c = conversations(n_agents=2, per_agent=10)
    c.loc[0, [S.VETO, S.VETO_RULE, S.TOTAL]] = [True, "ATT-INSULT-001", 0.0]
    c.loc[1, S.RISK] = 0.9
    items = pd.DataFrame({S.CONVERSATION_ID: [c.loc[2, S.CONVERSATION_ID]] * 2 + ["unknown"],
                          S.RULE_ID: ["ATT-004", "ATT-005", "X"], "reason": ["model disagrees"] * 3,
                          "model_probability": [0.05, 0.01, 0.0]})
    q = review_queue(c, items, low_total=60, max_low_per_agent=2)
    reasons = q.groupby("reason")[S.CONVERSATION_ID].apply(set).to_dict()
    assert reasons["veto"] == {c.loc[0, S.CONVERSATION_ID]}
    assert reasons["high_risk"] == {c.loc[1, S.CONVERSATION_ID]}
    assert reasons["rule_model_disagreement"] == {c.loc[2, S.CONVERSATION_ID]}  # unknown ids dropped
    low = q[q["reason"] == "low_total"]
    assert (low[S.TOTAL] < 60).all() and low.groupby(S.AGENT_ID).size().max() <= 2
    for agent, g in low.groupby(S.AGENT_ID):  # the lowest ones of each agent
        mine = c[(c[S.AGENT_ID] == agent) & (c[S.TOTAL] < 60) & ~c[S.VETO]].nsmallest(2, S.TOTAL)
        assert set(g[S.CONVERSATION_ID]) == set(mine[S.CONVERSATION_ID])
    assert q.iloc[0]["reason"] == "veto" and q["priority"].is_monotonic_decreasing
    detail = q.loc[q["reason"] == "rule_model_disagreement", "detail"].iloc[0]
    assert "ATT-004" in detail and "ATT-005" in detail


def test_coach_picks_weakest_rules_with_evidence() -> None:
    c = conversations(n_agents=1, per_agent=5)
    ids = c[S.CONVERSATION_ID].tolist()
    trace = pd.DataFrame([
        {S.CONVERSATION_ID: ids[0], S.DIMENSION: "attitude", S.RULE_ID: "ATT-001", S.MESSAGE_INDEX: 3,
         S.POINTS: -20.0, S.EVIDENCE: "不知道", S.EXPLANATION: "服务禁用语"},
        {S.CONVERSATION_ID: ids[1], S.DIMENSION: "attitude", S.RULE_ID: "ATT-001", S.MESSAGE_INDEX: 1,
         S.POINTS: -10.0, S.EVIDENCE: "自己看", S.EXPLANATION: "服务禁用语"},
        {S.CONVERSATION_ID: ids[1], S.DIMENSION: "attitude", S.RULE_ID: "ATT-004", S.MESSAGE_INDEX: 0,
         S.POINTS: -2.0, S.EVIDENCE: "", S.EXPLANATION: "开场问候缺失"},
        {S.CONVERSATION_ID: ids[2], S.DIMENSION: "attitude", S.RULE_ID: "ATT-101", S.MESSAGE_INDEX: 0,
         S.POINTS: 2.0, S.EVIDENCE: "抱歉", S.EXPLANATION: "共情"},
        {S.CONVERSATION_ID: ids[3], S.DIMENSION: "selling", S.RULE_ID: "MEC-003", S.MESSAGE_INDEX: 0,
         S.POINTS: -30.0, S.EVIDENCE: "", S.EXPLANATION: "no selling"},
    ])
    picks = coach_picks(c, trace, agent_id="a0", dimension="attitude", n=10, top_items=1)
    assert picks[S.CONVERSATION_ID].tolist() == [ids[0], ids[1]]  # ranked by points lost to ATT-001
    assert "不知道" in picks.iloc[0]["evidence"] and "服务禁用语" in picks.iloc[0]["evidence"]
    assert picks.iloc[0]["weak_rules"] == "ATT-001"
    with pytest.raises(UsageError):
        coach_picks(c, trace, agent_id="a0", dimension="charm")


HOSTILE_AGENTS = ["../../x", "..", "/etc/passwd", "a/b", "a\\b", "CON", "nul.txt", "客服/小美", "a\x00b", "A01", "a01",
                  "x" * 400]


def test_coach_csv_stays_inside_out_dir_for_hostile_agent_ids(tmp_path: Path) -> None:
    out = tmp_path / "out"
    picks = pd.DataFrame({S.CONVERSATION_ID: ["c1"], S.AGENT_ID: ["?"], "evidence": ["#1 ATT-001 (-10.0): 不知道"]})
    paths = [write_coach_csv(picks.assign(**{S.AGENT_ID: a}), out, a) for a in HOSTILE_AGENTS]
    root = os.path.realpath(out)
    for a, p in zip(HOSTILE_AGENTS, paths, strict=True):
        assert os.path.dirname(os.path.realpath(p)) == root, a  # directly inside, no sub-folders
        assert p.name.startswith("coach_") and p.suffix == ".csv" and len(p.name.encode()) <= 255
        back = pd.read_csv(p, encoding="utf-8-sig", dtype=str, keep_default_na=False)
        if "\x00" not in a:
            assert back[S.AGENT_ID].tolist() == [a]
    assert len(set(paths)) == len(HOSTILE_AGENTS)  # distinct agents never share (or overwrite) a file
    assert sorted(os.listdir(out)) == sorted(p.name for p in paths)  # nothing written anywhere else
    assert not (tmp_path / "x").exists() and not any(tmp_path.glob("*.csv"))
    assert coach_csv_path(out, "a01") == out / "coach_a01.csv"  # ordinary ids stay readable


def test_coach_csv_is_formula_safe(tmp_path: Path) -> None:
    picks = pd.DataFrame({S.CONVERSATION_ID: ["c1"], S.AGENT_ID: ["a01"], "points_lost": [-12.5],
                          "evidence": ["=HYPERLINK(\"http://x\")"]})
    p = write_coach_csv(picks, tmp_path, "a01")
    raw = p.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    back = pd.read_csv(p, encoding="utf-8-sig")
    assert back.loc[0, "evidence"] == "'=HYPERLINK(\"http://x\")" and back.loc[0, "points_lost"] == -12.5
