"""Scorecard maths: traces sum to scores, caps, N/A, veto, bands, per-shop weights, config errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from qa_inspect import schema as S
from qa_inspect.config import Shop
from qa_inspect.errors import ConfigError
from qa_inspect.scoring.scorecard import (
    CAPPED_BY,
    N_AGENT_MESSAGES,
    PRESALE_INTENT,
    TIMED,
    Scorecard,
    load_scorecard,
    score_conversations,
)

DIMS = list(S.DIMENSIONS)


def card(**over: object) -> Scorecard:
    data: dict = {
        "dimensions": {
            "product_knowledge": {"weight": 0.4, "base": 100, "max_deduction": 50, "max_bonus": 5},
            "selling": {"weight": 0.2, "base": 80, "max_deduction": 30, "max_bonus": 20},
            "attitude": {"weight": 0.3, "base": 100, "max_deduction": 100, "max_bonus": 0},
            "responsiveness": {"weight": 0.1, "base": 100, "max_deduction": 100, "max_bonus": 0},
        },
        "items": [
            {"id": "veto", "select": {"rules": ["ATT-INSULT*"]}, "veto": True},
            {"id": "kb-wrong", "select": {"rules": ["KB-*"], "polarity": "-"}, "multiplier": 2, "max_points": 30},
            {"id": "model", "select": {"rules": ["MODEL:*"]}, "max_points": 8},
            {"id": "fixed", "select": {"rules": ["FIX-*"]}, "points": 7},
            {"id": "minus", "select": {"polarity": "-"}, "max_points": 40},
            {"id": "plus", "select": {"polarity": "+"}},
        ],
        "grades": [{"label": "优秀", "min": 90}, {"label": "合格", "min": 75}, {"label": "待改进", "min": 60},
                   {"label": "不合格", "min": 0}],
    }
    data.update(over)
    return Scorecard.model_validate(data)


def convs(ids: list[str], *, shop: str = "s1", presale: bool = True, timed: bool = True,
          agent_msgs: int = 3) -> pd.DataFrame:
    return pd.DataFrame({S.CONVERSATION_ID: ids, S.SHOP_ID: shop, PRESALE_INTENT: presale, TIMED: timed,
                         N_AGENT_MESSAGES: agent_msgs})


def finding(cid: str, rule: str, dim: str, pol: str, pts: float, *, conf: float = 1.0, idx: int = 0,
            source: str = "rule", severity: str = "minor") -> dict:
    return {S.CONVERSATION_ID: cid, S.SHOP_ID: "s1", S.AGENT_ID: "a1", S.MESSAGE_INDEX: idx, S.RULE_ID: rule,
            S.DIMENSION: dim, S.POLARITY: pol, S.SEVERITY: severity, S.POINTS: pts, S.EVIDENCE: "x",
            S.EVIDENCE_START: 0, S.EVIDENCE_END: 1, S.EXPLANATION: f"{rule} hit", S.SOURCE: source,
            S.CONFIDENCE: conf}


def random_case(seed: int, n_conv: int = 60) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    rules = ["KB-PRICE", "KB-STOCK", "MODEL:tone", "FIX-1", "ATT-001", "SEL-001", "RSP-001", "ATT-101"]
    recs = []
    ids = [f"c{i}" for i in range(n_conv)]
    for cid in ids:
        for _ in range(rng.integers(0, 12)):
            rule = rules[rng.integers(len(rules))]
            recs.append(finding(cid, rule, DIMS[rng.integers(4)], "+" if rng.random() < 0.35 else "-",
                                float(rng.integers(0, 25)), conf=float(rng.uniform(0.3, 1.0)),
                                idx=int(rng.integers(-1, 20)),
                                source="model" if rule.startswith("MODEL") else "rule"))
    c = convs(ids)
    c[PRESALE_INTENT] = rng.random(n_conv) < 0.5
    c[TIMED] = rng.random(n_conv) < 0.7
    return c, S.findings_frame(recs)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_point_traces_to_findings(seed: int) -> None:
    sc = card()
    conv, fnd = random_case(seed)
    scores, trace = score_conversations(conv, fnd, sc, {})
    assert len(scores) == len(conv)
    assert (trace[CAPPED_BY] != "").any(), "the random case should exercise caps"
    for row in scores.itertuples(index=False):
        cid = getattr(row, S.CONVERSATION_ID)
        t = trace[trace[S.CONVERSATION_ID] == cid]
        num = den = 0.0
        for d in DIMS:
            score = getattr(row, S.score_column(d))
            if math.isnan(score):
                assert t[t[S.DIMENSION] == d].empty
                continue
            assert 0 <= score <= 100
            assert score == pytest.approx(sc.dimensions[d].base + t.loc[t[S.DIMENSION] == d, S.POINTS].sum())
            num += sc.dimensions[d].weight * score
            den += sc.dimensions[d].weight
        total = getattr(row, S.TOTAL)
        if den == 0:
            assert math.isnan(total)
        else:
            assert total == pytest.approx(num / den)
        assert getattr(row, S.GRADE) == sc.grade(total)


def test_confidence_multiplier_and_item_caps() -> None:
    sc = card()
    f = S.findings_frame([
        finding("c1", "KB-PRICE", "product_knowledge", "-", 10, idx=1),  # 10 x 2 = 20
        finding("c1", "KB-STOCK", "product_knowledge", "-", 10, idx=2),  # 20 more, item cap 30 -> 10
        finding("c1", "MODEL:tone", "attitude", "-", 10, conf=0.5, idx=3, source="model"),  # 5
        finding("c1", "MODEL:tone", "attitude", "-", 10, conf=0.5, idx=4, source="model"),  # 5, cap 8 -> 3
        finding("c1", "FIX-9", "selling", "-", 99, idx=5),  # fixed 7 points
    ])
    scores, trace = score_conversations(convs(["c1"]), f, sc, {})
    r = scores.iloc[0]
    assert r[S.score_column("product_knowledge")] == pytest.approx(70)
    assert r[S.score_column("attitude")] == pytest.approx(92)
    assert r[S.score_column("selling")] == pytest.approx(73)
    by_idx = trace.set_index(S.MESSAGE_INDEX)
    assert by_idx.loc[2, S.POINTS] == pytest.approx(-10) and by_idx.loc[2, CAPPED_BY] == "item"
    assert by_idx.loc[4, S.POINTS] == pytest.approx(-3) and by_idx.loc[4, "raw_points"] == pytest.approx(-5)


def test_dimension_cap_and_range_clamp() -> None:
    sc = card()
    f = S.findings_frame([finding("c1", "SEL-001", "selling", "+", 15, idx=i) for i in range(3)]
                         + [finding("c1", "KB-X", "product_knowledge", "+", 4, idx=i) for i in range(3)])
    scores, trace = score_conversations(convs(["c1"]), f, sc, {})
    # selling: base 80, bonuses 45 capped to max_bonus 20 -> 100
    assert scores.iloc[0][S.score_column("selling")] == pytest.approx(100)
    # knowledge: base 100, bonus up to 5 allowed, but range clamps at 100 -> every bonus trimmed
    assert scores.iloc[0][S.score_column("product_knowledge")] == pytest.approx(100)
    pk = trace[trace[S.DIMENSION] == "product_knowledge"]
    assert pk[S.POINTS].sum() == pytest.approx(0)
    assert set(pk[CAPPED_BY]) <= {"range", "dimension"}


def test_not_applicable_dimensions_are_excluded_with_reasons() -> None:
    sc = card()
    c = pd.concat([convs(["after_sales"], presale=False, timed=False), convs(["presale"], presale=True)],
                  ignore_index=True)
    f = S.findings_frame([finding("after_sales", "ATT-001", "attitude", "-", 10)])
    scores, _ = score_conversations(c, f, sc, {})
    a = scores.set_index(S.CONVERSATION_ID).loc["after_sales"]
    assert math.isnan(a[S.score_column("selling")])
    assert math.isnan(a[S.score_column("product_knowledge")])
    assert math.isnan(a[S.score_column("responsiveness")])
    assert a[S.TOTAL] == pytest.approx(a[S.score_column("attitude")])  # only attitude applies
    assert "selling" in a[S.NA_REASONS] and "no timestamps" in a[S.NA_REASONS]
    p = scores.set_index(S.CONVERSATION_ID).loc["presale"]
    assert p[S.score_column("selling")] == pytest.approx(80)  # expected to sell, did nothing notable
    # selling findings make selling apply even without intent words
    f2 = S.findings_frame([finding("after_sales", "SEL-001", "selling", "+", 5)])
    s2, _ = score_conversations(convs(["after_sales"], presale=False), f2, sc, {})
    assert s2.iloc[0][S.score_column("selling")] == pytest.approx(85)


def test_all_na_gives_na_grade() -> None:
    sc = card()
    scores, _ = score_conversations(convs(["c"], presale=False, timed=False, agent_msgs=0),
                                    S.empty_findings(), sc, {})
    assert math.isnan(scores.iloc[0][S.TOTAL]) and scores.iloc[0][S.GRADE] == sc.na_grade


def test_veto_sets_total_zero_unless_low_confidence() -> None:
    sc = card()
    f = S.findings_frame([
        finding("v", "ATT-INSULT-001", "attitude", "-", 10, idx=2),
        finding("m", "ATT-INSULT-001", "attitude", "-", 10, idx=2, conf=0.5, source="model"),
        finding("r", "ATT-777", "attitude", "-", 10, idx=1),
    ])
    scores, trace = score_conversations(convs(["v", "m", "r"]), f, sc, {}, veto_rules={"ATT-777"})
    s = scores.set_index(S.CONVERSATION_ID)
    assert s.loc["v", S.TOTAL] == 0 and s.loc["v", S.VETO] and s.loc["v", S.VETO_RULE] == "ATT-INSULT-001"
    assert s.loc["v", S.GRADE] == "不合格"
    assert s.loc["v", S.score_column("attitude")] == pytest.approx(90)  # dimension still explained
    assert not s.loc["m", S.VETO] and s.loc["m", S.TOTAL] > 0
    assert s.loc["r", S.VETO] and s.loc["r", S.VETO_RULE] == "ATT-777"
    assert trace.loc[trace[S.CONVERSATION_ID] == "v", "veto"].all()


@pytest.mark.parametrize(("total", "label"), [(100, "优秀"), (90, "优秀"), (89.99, "合格"), (75, "合格"),
                                              (74.9, "待改进"), (60, "待改进"), (59.9, "不合格"), (0, "不合格")])
def test_grade_bands(total: float, label: str) -> None:
    assert card().grade(total) == label


def test_per_shop_weights() -> None:
    sc = card(shop_weights={"s2": {"attitude": 0.0}})
    f = S.findings_frame([finding("c", "ATT-001", "attitude", "-", 20),
                          finding("c", "SEL-001", "selling", "+", 10)])
    c = convs(["c"])
    base, _ = score_conversations(c, f, sc, {})
    yaml_w, _ = score_conversations(c.assign(**{S.SHOP_ID: "s2"}), f.assign(**{S.SHOP_ID: "s2"}), sc, {})
    shop = Shop(shop_id="s3", name="x", platform="jd", scorecard_weights={"selling": 0.0, "attitude": 1.0})
    shop_w, _ = score_conversations(c.assign(**{S.SHOP_ID: "s3"}), f, sc, {"s3": shop})
    b = base.iloc[0]
    att, sel = b[S.score_column("attitude")], b[S.score_column("selling")]
    resp = b[S.score_column("responsiveness")]
    assert b[S.TOTAL] == pytest.approx((0.3 * att + 0.2 * sel + 0.1 * resp) / 0.6)
    assert yaml_w.iloc[0][S.TOTAL] == pytest.approx((0.2 * sel + 0.1 * resp) / 0.3)
    assert shop_w.iloc[0][S.TOTAL] == pytest.approx((1.0 * att + 0.1 * resp) / 1.1)
    # an unknown dimension in shops.yaml is rejected when shops.yaml is loaded (issue 9 part 4)
    with pytest.raises(ValidationError, match="unknown dimension 'sales'"):
        Shop(shop_id="s4", name="x", platform="jd", scorecard_weights={"sales": 1.0})
    bad = Shop.model_construct(shop_id="s4", name="x", platform="jd", scorecard_weights={"sales": 1.0})
    with pytest.raises(ConfigError, match="scorecard_weights"):
        score_conversations(c.assign(**{S.SHOP_ID: "s4"}), f, sc, {"s4": bad})


def test_bundled_scorecard_loads(rules_dir: Path) -> None:
    sc = load_scorecard(rules_dir)
    assert set(sc.dimensions) == set(S.DIMENSIONS)
    assert any(it.veto for it in sc.items)


def test_config_errors_name_file_item_and_key(tmp_path: Path) -> None:
    text = """
dimensions:
  product_knowledge: {weight: 1}
  selling: {weight: 1}
  attitude: {weight: 1}
  responsiveness: {weight: 1}
grades: [{label: ok, min: 0}]
items:
  - id: good
    select: {polarity: "-"}
  - id: broken-one
    select: {rulez: ["X-*"]}
"""
    (tmp_path / "scorecard.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as ei:
        load_scorecard(tmp_path)
    msg = str(ei.value)
    assert "scorecard.yaml" in msg and "broken-one" in msg and "items[1].select.rulez" in msg
    (tmp_path / "scorecard.yaml").write_text(text.replace("min: 0", "min: 10").replace("rulez", "rules"),
                                             encoding="utf-8")
    with pytest.raises(ConfigError, match="grades"):
        load_scorecard(tmp_path)
