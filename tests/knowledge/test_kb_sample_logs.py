"""End to end on the bundled sample logs: planted wrong facts and deflections are found.

sample_logs/ and tests/data/sample_truth.csv are generated from the same KB (see
sample_logs/README.md). Recall is measured on the planted wrong_* and deflection rows; false
alarms on the planted correct_* rows. Figures are printed (pytest -s).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from qa_inspect import schema
from qa_inspect.ingest import ingest_paths
from qa_inspect.knowledge import catalog_words, verify_knowledge
from qa_inspect.text.normalize import normalize
from qa_inspect.text.tokenize import Tokenizer, tokenize

TRUTH = Path(__file__).resolve().parents[1] / "data" / "sample_truth.csv"


@pytest.fixture(scope="module")
def run(sample_logs_dir: Path, rules_dir: Path, kbs: dict) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    if not sample_logs_dir.is_dir() or not TRUTH.exists():
        pytest.skip("sample logs / truth not generated")
    msgs = ingest_paths([sample_logs_dir], rules_dir=rules_dir).messages
    msgs = tokenize(normalize(msgs), Tokenizer.from_rules(rules_dir, catalog_words(kbs)))
    findings = verify_knowledge(msgs, kbs)
    truth = pd.read_csv(TRUTH, dtype=str)
    truth = truth[truth["kind"].str.startswith(("wrong_", "correct_")) | (truth["kind"] == "deflection")]
    key = msgs[[schema.CONVERSATION_ID, schema.SEQ, schema.TEXT]].copy()
    key["_t"] = key[schema.TEXT].astype(str).str.strip()
    truth = truth.assign(_t=truth["message_text"].astype(str).str.strip()).merge(
        key, left_on=["conversation_id", "_t"], right_on=[schema.CONVERSATION_ID, "_t"], how="left")
    return msgs, findings, truth


def test_planted_wrong_facts_and_deflections_are_found(run: tuple) -> None:
    _msgs, findings, truth = run
    assert truth[schema.SEQ].notna().mean() > 0.95  # truth rows map onto ingested messages
    neg = findings[(findings[schema.POLARITY] == "-") & (findings[schema.RULE_ID] != "KB-FAQ")]
    flagged = set(zip(neg[schema.CONVERSATION_ID], neg[schema.MESSAGE_INDEX], strict=True))
    truth = truth[truth[schema.SEQ].notna()]
    hit = [(c, int(s)) in flagged for c, s in zip(truth["conversation_id"], truth[schema.SEQ], strict=True)]
    truth = truth.assign(hit=hit)
    wrong = truth[truth["kind"].str.startswith("wrong_")]
    defl = truth[truth["kind"] == "deflection"]
    correct = truth[truth["kind"].str.startswith("correct_")]
    r_wrong, r_defl, fa = wrong["hit"].mean(), defl["hit"].mean(), correct["hit"].mean()
    print(f"\n[sample logs] wrong facts found {wrong['hit'].sum()}/{len(wrong)} ({r_wrong:.3f}); "
          f"deflections {defl['hit'].sum()}/{len(defl)} ({r_defl:.3f}); "
          f"false alarms on correct facts {correct['hit'].sum()}/{len(correct)} ({fa:.3f})")
    print(wrong.groupby("kind")["hit"].agg(["sum", "count"]).to_string())
    assert r_wrong >= 0.85
    assert r_defl >= 0.8
    assert fa <= 0.02
