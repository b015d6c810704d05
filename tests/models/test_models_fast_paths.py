"""The fast act / act-finding / combine paths give exactly what the per-row reference gives.

Inputs are a few hundred real-looking messages (sample_logs through the text stages and the
rule engine), with some conversations copied under new ids and slightly changed texts so that
both repeated and distinct texts occur, as in real chat logs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from model_test_helpers import agent_partition
from reference_stages import (
    ref_act_findings_frame,
    ref_combine,
    ref_conversation_structure,
    ref_conversation_texts,
    ref_predict_act_frame,
)

from qa_inspect import schema
from qa_inspect.ingest import ingest_paths
from qa_inspect.models import Models, ModelsConfig, act_findings, predict_acts
from qa_inspect.models.combine import combine
from qa_inspect.models.features import conversation_structure, conversation_texts, ensure_text_columns
from qa_inspect.pipeline import load_context, prepare_partition, stage


@pytest.fixture(scope="module")
def audit(rules_dir: Path, sample_logs_dir: Path) -> dict:
    ctx = load_context(rules_dir)
    msgs = ingest_paths(sample_logs_dir, rules_dir=rules_dir).messages
    ids = pd.unique(msgs[schema.CONVERSATION_ID])
    base = msgs[msgs[schema.CONVERSATION_ID].isin(set(ids[::8]))]  # spread over the shops
    copy = base.copy()
    copy[schema.CONVERSATION_ID] = copy[schema.CONVERSATION_ID].astype(str) + "-copy"
    tail = np.where(np.arange(len(copy)) % 3 == 0, "呢", "")  # some texts change, most repeat
    copy[schema.TEXT] = copy[schema.TEXT].astype(str) + tail
    part = pd.concat([base, copy], ignore_index=True)
    p, counts = prepare_partition(part, ctx)
    rule_f = stage("qa_inspect.ruleengine", "apply_rules")(p, ctx.ruleset, ctx.shops)
    tmpl_f = stage("qa_inspect.ruleengine", "apply_template_rules")(p, ctx.ruleset, counts, ctx.shops)
    rules = pd.concat([f for f in (rule_f, tmpl_f) if len(f)], ignore_index=True)
    return {"p": p, "models": ctx.models, "thresholds": ctx.thresholds, "rules": rules}


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in (schema.CONVERSATION_ID, schema.MESSAGE_INDEX, schema.RULE_ID, schema.EXPLANATION)
            if c in df.columns]
    return df.sort_values(keys, kind="stable").reset_index(drop=True)


def test_partition_is_realistic(audit: dict) -> None:
    agents = audit["p"][audit["p"][schema.ROLE] == "agent"]
    assert 200 <= len(audit["p"]) <= 2000
    n_distinct = agents[schema.NORM_TEXT].nunique()
    assert 20 < n_distinct < len(agents)  # repeats and distinct texts both occur


def test_acts_match_reference(audit: dict) -> None:
    models: Models = audit["models"]
    fast = predict_acts(audit["p"], models)
    ref = ref_predict_act_frame(audit["p"], models.acts)
    assert list(fast.columns) == list(ref.columns)
    pd.testing.assert_frame_equal(fast[[schema.CONVERSATION_ID, schema.SEQ]], ref[[schema.CONVERSATION_ID,
                                                                                   schema.SEQ]])
    pd.testing.assert_frame_equal(fast, ref, check_exact=True)  # probabilities equal to the bit


def test_act_findings_match_reference(audit: dict) -> None:
    models: Models = audit["models"]
    acts = ref_predict_act_frame(audit["p"], models.acts)
    fast = act_findings(audit["p"], acts, models, audit["thresholds"])
    ref = ref_act_findings_frame(audit["p"], acts, models.acts, audit["thresholds"])
    assert len(ref) > 10
    pd.testing.assert_frame_equal(_sorted(fast), _sorted(ref))


def test_act_findings_with_shuffled_acts(audit: dict) -> None:
    """The acts frame is matched by (conversation_id, seq), not by position."""
    models: Models = audit["models"]
    acts = ref_predict_act_frame(audit["p"], models.acts).sample(frac=1.0, random_state=1)
    fast = act_findings(audit["p"], acts.reset_index(drop=True), models, audit["thresholds"])
    ref = ref_act_findings_frame(audit["p"], acts.reset_index(drop=True), models.acts, audit["thresholds"])
    pd.testing.assert_frame_equal(_sorted(fast), _sorted(ref))


def _combine_both(rules: pd.DataFrame, model_f: pd.DataFrame, acts: pd.DataFrame,
                  thresholds: ModelsConfig) -> None:
    f_fast, r_fast = combine(rules, model_f, acts, thresholds)
    f_ref, r_ref = ref_combine(rules, model_f, acts, thresholds)
    pd.testing.assert_frame_equal(_sorted(f_fast), _sorted(f_ref))
    pd.testing.assert_frame_equal(_sorted(r_fast), _sorted(r_ref))
    # Same order too (reports list findings in combine's order).
    pd.testing.assert_frame_equal(f_fast.reset_index(drop=True), f_ref.reset_index(drop=True))


def test_combine_matches_reference(audit: dict) -> None:
    models: Models = audit["models"]
    acts = ref_predict_act_frame(audit["p"], models.acts)
    model_f = ref_act_findings_frame(audit["p"], acts, models.acts, audit["thresholds"])
    f_ref, r_ref = ref_combine(audit["rules"], model_f, acts, audit["thresholds"])
    expl = f_ref[schema.EXPLANATION].astype(str)
    assert expl.str.contains("model agrees").any() and expl.str.contains("model only").any()
    _combine_both(audit["rules"], model_f, acts, audit["thresholds"])


def test_combine_edge_cases_match_reference(audit: dict) -> None:
    """Missing confidence, model-sourced rule rows, conversation-level rows, shuffled acts."""
    models: Models = audit["models"]
    th: ModelsConfig = audit["thresholds"]
    acts = ref_predict_act_frame(audit["p"], models.acts)
    model_f = ref_act_findings_frame(audit["p"], acts, models.acts, th)
    rules = audit["rules"].copy()
    rules.loc[rules.index[::4], schema.CONFIDENCE] = np.nan
    rules.loc[rules.index[1::7], schema.SOURCE] = "model"
    rules.loc[rules.index[2::9], schema.MESSAGE_INDEX] = -1
    # Force every outcome on linked findings: agreement, disagreement and in-between.
    linked = rules[rules[schema.RULE_ID].isin({r for link in th.combine.links for r in link.rule_ids})]
    assert len(linked) > 3
    shuffled = acts.sample(frac=1.0, random_state=2).reset_index(drop=True)
    for value in (0.0, 0.5, 0.99):
        a = shuffled.copy()
        keys = set(zip(linked[schema.CONVERSATION_ID].astype(str), linked[schema.MESSAGE_INDEX], strict=True))
        hit = [(str(c), int(s)) in keys for c, s in zip(a[schema.CONVERSATION_ID], a[schema.SEQ], strict=True)]
        for col in [c for c in a.columns if c.startswith("act_")]:
            a.loc[hit, col] = value
        _combine_both(rules, model_f, a, th)
    _combine_both(rules, model_f, shuffled, th)
    _combine_both(rules.iloc[0:0], model_f, shuffled, th)
    _combine_both(rules, model_f.iloc[0:0], shuffled.iloc[0:0], th)


def test_same_norm_text_different_tokens_not_merged(audit: dict) -> None:
    """Distinct inputs are (norm_text, tokens) pairs: a re-tokenised copy gets its own prediction."""
    models: Models = audit["models"]
    texts = ["你是不是没看详情页啊", "你是不是没看详情页啊", "好的亲", "你是不是没看详情页啊", "好的亲"]
    part = ensure_text_columns(agent_partition(texts))
    agent_pos = [i for i, r in enumerate(part[schema.ROLE]) if r == "agent"]
    tokens = [list(t) for t in part[schema.TOKENS]]
    tokens[agent_pos[1]] = list(part[schema.NORM_TEXT].iloc[agent_pos[1]])  # one char per token
    part[schema.TOKENS] = tokens
    fast = predict_acts(part, models)
    ref = ref_predict_act_frame(part, models.acts)
    cols = [c for c in ref.columns if c.startswith("act_")]
    assert np.allclose(fast[cols].to_numpy(), ref[cols].to_numpy(), rtol=0, atol=1e-12)
    vals = fast[cols].to_numpy()
    assert not np.allclose(vals[0], vals[1])  # same norm_text, other tokens: other probabilities
    assert np.array_equal(vals[0], vals[3]) and np.array_equal(vals[2], vals[4])
    th = audit["thresholds"]
    pd.testing.assert_frame_equal(_sorted(act_findings(part, fast, models, th)),
                                  _sorted(ref_act_findings_frame(part, ref, models.acts, th)))


def test_risk_features_match_reference(audit: dict) -> None:
    """Conversation features from one global sort equal the per-group pandas version."""
    p = audit["p"].sample(frac=1.0, random_state=4).reset_index(drop=True)  # rows out of order
    roles = p[schema.ROLE].astype(object).to_numpy().copy()
    roles[::11] = "bot"
    p[schema.ROLE] = roles
    p.loc[p.index[:3], schema.CONVERSATION_ID] = None  # rows without a conversation are skipped
    for fast, ref in ((conversation_structure, ref_conversation_structure),
                      (conversation_texts, ref_conversation_texts)):
        want = ref(p)
        assert len(want) > 20
        pd.testing.assert_frame_equal(fast(p), want)
        pd.testing.assert_frame_equal(fast(p.iloc[0:0]), ref(p.iloc[0:0]))


def test_key_rows_is_a_dict_lookup() -> None:
    """Hash join == a dict filled row by row (repeated keys: last row), also with missing ids and
    float seqs (the dict route)."""
    from qa_inspect.models.features import key_rows

    rng = np.random.default_rng(3)
    cids = pd.Series(rng.choice(["a", "b", "c", "d"], 300), dtype="string")
    seqs = rng.integers(-2, 40, 300)
    q_cids = pd.Series(rng.choice(["a", "b", "e"], 200), dtype="string")
    q_seqs = rng.integers(-5, 45, 200)

    def by_dict(c: pd.Series, s: np.ndarray, qc: pd.Series, qs: np.ndarray) -> np.ndarray:
        row_of = {k: r for r, k in enumerate(zip(c.tolist(), s.tolist(), strict=True))}
        return np.array([row_of.get(k, -1) for k in zip(qc.tolist(), qs.tolist(), strict=True)], dtype=np.intp)

    got = key_rows(cids, seqs, q_cids, q_seqs)
    assert np.array_equal(got, by_dict(cids, seqs, q_cids, q_seqs))
    assert (got >= 0).any() and (got == -1).any()
    with_na = cids.copy()
    with_na.iloc[::17] = pd.NA
    assert np.array_equal(key_rows(with_na, seqs, q_cids, q_seqs), by_dict(with_na, seqs, q_cids, q_seqs))
    fs = seqs.astype(float)
    assert np.array_equal(key_rows(cids, fs, q_cids, q_seqs), by_dict(cids, fs, q_cids, q_seqs))
    assert len(key_rows(cids.iloc[0:0], seqs[:0], q_cids, q_seqs)) == len(q_cids)
    assert len(key_rows(cids, seqs, q_cids.iloc[0:0], q_seqs[:0])) == 0


def test_act_findings_with_repeated_message_keys(audit: dict) -> None:
    """Two agent rows with one (conversation_id, seq): the last one is the message, as in the reference."""
    models: Models = audit["models"]
    p = audit["p"].copy()
    agent_idx = p.index[p[schema.ROLE] == "agent"]
    p.loc[agent_idx[5], schema.SEQ] = p.loc[agent_idx[4], schema.SEQ]
    p.loc[agent_idx[5], schema.CONVERSATION_ID] = p.loc[agent_idx[4], schema.CONVERSATION_ID]
    acts = ref_predict_act_frame(p, models.acts)
    pd.testing.assert_frame_equal(predict_acts(p, models), acts, check_exact=False, rtol=0, atol=1e-12)
    fast = act_findings(p, acts, models, audit["thresholds"])
    ref = ref_act_findings_frame(p, acts, models.acts, audit["thresholds"])
    pd.testing.assert_frame_equal(_sorted(fast), _sorted(ref))
