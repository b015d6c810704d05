"""The whole audit against the planted ground truth of sample_logs/ (one pipeline run per module).

scripts/eval_sample_truth.py holds the mapping planted kind -> expected rules and computes the
figures; here we assert the ones the system can defend. Thresholds were set from what a QA
supervisor would require, not from the measured values; `pytest -s` prints the tables.
Known gaps (not asserted): no_selling (model and the generator's coupon tails).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

from qa_inspect import schema as S

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "eval_sample_truth.py"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("eval_sample_truth", SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["eval_sample_truth"] = mod  # dataclasses need the module registered
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def ev_mod() -> ModuleType:
    return _load_script()


@pytest.fixture(scope="module")
def ev(ev_mod: ModuleType, sample_logs_dir: Path, rules_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    if not sample_logs_dir.is_dir() or not ev_mod.TRUTH.exists():
        pytest.skip("sample logs / truth not generated")
    out = tmp_path_factory.mktemp("sample_truth_run")
    result = ev_mod.run_and_evaluate(sample_logs_dir, ev_mod.TRUTH, rules_dir, out)
    print("\n" + ev_mod.render(result))
    return result


def _rate(ev, kinds: tuple[str, ...] | str) -> tuple[float, int, int]:
    kinds = (kinds,) if isinstance(kinds, str) else kinds
    k = ev.kinds[ev.kinds["kind"].isin(kinds)]
    assert len(k) == len(kinds), f"kinds missing from the truth file: {set(kinds) - set(k['kind'])}"
    return float(k["flagged"].sum() / k["mapped"].sum()), int(k["flagged"].sum()), int(k["mapped"].sum())


def test_truth_rows_map_onto_messages(ev) -> None:
    assert ev.truth[S.SEQ].notna().mean() >= 0.98, ev.notes


@pytest.mark.parametrize(("kinds", "minimum"), [
    ("rude", 0.9),
    (("wrong_price", "wrong_material", "wrong_warranty", "wrong_return", "wrong_dispatch", "wrong_shipping",
      "wrong_stock"), 0.85),
    ("deflection", 0.85),
    ("slow_first_reply", 0.9),
    ("slow_reply", 0.9),
    ("unanswered", 0.8),
    ("proactive_selling", 0.9),
    ("cuifu", 0.9),
    ("empathy_apology", 0.9),
    ("template_reply", 0.9),
    ("partial_answer", 0.85),
])
def test_planted_problems_and_good_practice_are_found(ev, kinds, minimum: float) -> None:
    rate, hit, n = _rate(ev, kinds)
    assert rate >= minimum, f"{kinds}: {hit}/{n} = {rate:.3f} < {minimum}"


TRAPS = ("agent_negation_trap", "agent_quote_trap", "buyer_negation_trap", "positive_context_trap")


def test_traps_do_not_count_against_the_agent(ev) -> None:
    rate, hit, n = _rate(ev, TRAPS)
    assert rate <= 0.05, f"traps with an attitude/deflection '-' finding: {hit}/{n}"


def test_rules_alone_never_fire_on_traps(ev, ev_mod: ModuleType) -> None:
    # the keyword rules (not the models) are what rule authors control: no trap may trigger one
    t = ev.truth[ev.truth["kind"].isin(TRAPS) & ev.truth[S.SEQ].notna()]
    f = ev.findings[ev.findings[S.SOURCE] != "model"]
    keys = set(zip(t["conversation_id"], t[S.SEQ].astype(int), strict=True))
    on = f[[(c, int(s)) in keys for c, s in zip(f[S.CONVERSATION_ID], f[S.MESSAGE_INDEX], strict=True)]]
    bad = on[[ev_mod.TRAP.matches(r, p, d) for r, p, d in zip(on[S.RULE_ID], on[S.POLARITY], on[S.DIMENSION],
                                                                strict=True)]]
    assert bad.empty, bad[[S.CONVERSATION_ID, S.MESSAGE_INDEX, S.RULE_ID, S.EVIDENCE]].to_string()


def test_good_practice_is_not_penalised(ev) -> None:
    for kinds, maximum in ((("greeting", "closing"), 0.02), (("postsale",), 0.1)):
        rate, hit, n = _rate(ev, kinds)
        assert rate <= maximum, f"{kinds}: {hit}/{n}"
    contradicted = ev.kinds[ev.kinds["kind"].str.endswith("(contradicted)")]
    assert contradicted["flagged"].sum() / contradicted["mapped"].sum() <= 0.02


def test_rule_precision_on_labelled_messages(ev) -> None:
    # findings of the message rules on truth-labelled messages: supported vs conflicting
    r = ev.rules.set_index("rule_id")
    for rule in ("ATT-001", "ATT-002", "ATT-003", "KB-DEFLECT", "KB-PRICE", "KB-MATERIAL", "SEL-001", "SEL-004",
                 "SEL-006", "SEL-008", "RSP-004", "MEC-002", "MEC-004"):
        row = r.loc[rule]
        assert row["supported"] >= 5, f"{rule} hardly fires on planted items"
        assert row["precision"] >= 0.9, f"{rule}: {row.to_dict()}"


def test_planted_problems_cost_points(ev) -> None:
    s = ev.scores.set_index("group")
    clean = s.loc["clean", "mean_total"]
    assert clean >= 90
    assert s.loc["rude", "mean_total"] <= clean - 10
    wrong = ev.truth[ev.truth["kind"].str.startswith("wrong_")]["conversation_id"].unique()
    conv = ev.conversations.set_index(S.CONVERSATION_ID)
    assert float(conv.loc[wrong, S.TOTAL].astype(float).mean()) <= clean - 8
    assert s.loc["any problem", "mean_total"] <= clean - 5
    # the grade follows: most clean chats are 优秀, most rude ones are not
    assert s.loc["clean"].get("优秀", 0) >= 0.9
    assert s.loc["rude"].get("优秀", 0) <= 0.2


def test_expectations_cover_every_assertable_kind(ev_mod: ModuleType) -> None:
    truth = pd.read_csv(ev_mod.TRUTH, dtype=str, keep_default_na=False)
    unmapped = set(truth["kind"]) - set(ev_mod.EXPECT) - set(ev_mod.PROBLEM_KINDS) - {
        "auto_reply", "returning_buyer", "bad_row_empty_text", "bad_row_bad_time", "bad_row_unknown_role"}
    assert not unmapped, f"truth kinds without an expectation: {unmapped}"


def test_mechanical_rules_stay_quiet_where_nothing_was_planted(ev) -> None:
    # the generator plants every pasted blurb; partial answers also happen by chance in its
    # unlabelled chats (成分是什么，敏感肌可以用吗 answered with the ingredients only), so a few
    # MEC-002 findings outside planted conversations are allowed, MEC-004 none
    r = ev.rules.set_index("rule_id")
    assert r.loc["MEC-004", "outside"] == 0
    planted = ev.truth.loc[ev.truth["kind"] == "partial_answer", "conversation_id"].nunique()
    others = len(ev.conversations) - planted
    assert r.loc["MEC-002", "outside"] <= 0.05 * others, r.loc["MEC-002"].to_dict()
