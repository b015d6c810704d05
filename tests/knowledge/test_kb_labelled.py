"""Precision/recall of ``contradicted`` on the hand-labelled agent messages.

The set (tests/knowledge/data/claims_labelled.csv) is written against the sample shops' KBs in
rules/knowledge/. Rows with split=holdout were written up-front and not used while tuning; the
figures are printed (pytest -s) and both splits must meet the bar.
"""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import pytest

from qa_inspect.knowledge import analyse_message, message_verdict

DATA = Path(__file__).parent / "data" / "claims_labelled.csv"


def _rows() -> list[dict[str, str]]:
    with DATA.open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _evaluate(kbs: dict, rows: list[dict[str, str]]) -> tuple[float, float, list[str]]:
    tp = fp = fn = 0
    errors = []
    for r in rows:
        kb = kbs[r["shop_id"]]
        day = dt.date.fromisoformat(r["date"])
        ctx = [r["sku_context"]] if r["sku_context"] else []
        results, _ = analyse_message(kb, r["text"], None, day, ctx)
        got = message_verdict(results)
        exp = r["expected"]
        if got == "contradicted" and exp == "contradicted":
            tp += 1
        elif got == "contradicted":
            fp += 1
        elif exp == "contradicted":
            fn += 1
        if got != exp:
            errors.append(f"{r['shop_id']} {r['text']!r}: expected {exp}, got {got} "
                          f"{[(x.claim.kind, x.verdict.status) for x in results]}")
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return precision, recall, errors


def test_labelled_set_is_large_and_valid(kbs: dict) -> None:
    rows = _rows()
    assert len(rows) >= 150
    for r in rows:
        assert r["expected"] in ("contradicted", "confirmed", "none"), r
        assert r["split"] in ("dev", "holdout"), r
        assert r["shop_id"] in kbs, r
        assert not r["sku_context"] or r["sku_context"] in kbs[r["shop_id"]].products, r
    assert sum(r["split"] == "holdout" for r in rows) >= len(rows) // 4


@pytest.mark.parametrize("split", ["dev", "holdout", "all"])
def test_contradicted_precision_recall(kbs: dict, split: str) -> None:
    rows = [r for r in _rows() if split == "all" or r["split"] == split]
    precision, recall, errors = _evaluate(kbs, rows)
    n_contra = sum(r["expected"] == "contradicted" for r in rows)
    print(f"\n[knowledge labelled set: {split}] n={len(rows)} contradicted={n_contra} "
          f"precision={precision:.3f} recall={recall:.3f} message-level mismatches={len(errors)}")
    for e in errors:
        print("  ", e)
    assert precision >= 0.9
    assert recall >= 0.8
