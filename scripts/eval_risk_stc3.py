"""Evaluate the dissatisfaction-risk model on STC-3 (DCH-1) against a plain TF-IDF + Ridge baseline.

Held-out split by dialogue (seeded 80/20). Reports Spearman rho between predicted risk and the
annotators' mean S (negative: high risk = low satisfaction) and ROC AUC for "dissatisfied"
dialogues (mean S < -0.5). Both models see the same split in the same run.

    /work/venv/bin/python scripts/eval_risk_stc3.py [--data ../shared/data/stc3/dialogues_dev.json]
        [--seed 0] [--save-model DIR]   # DIR outside the repo: models trained on research data are never shipped
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import Ridge
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline

from qa_inspect import schema
from qa_inspect.config import default_rules_dir
from qa_inspect.ingest.core import ingest_paths
from qa_inspect.ingest.research import stc3_labels
from qa_inspect.models import load_models, predict_acts
from qa_inspect.models.features import conversation_texts, ensure_text_columns
from qa_inspect.models.risk import TARGET, train_risk

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "stc3" / "dialogues_dev.json"


def scores(pred: np.ndarray, s: np.ndarray) -> dict[str, float]:
    rho = float(spearmanr(pred, s).statistic)
    auc = float(roc_auc_score((s < -0.5).astype(int), pred))
    return {"spearman_vs_S": round(rho, 4), "abs_rho": round(abs(rho), 4), "auc_S<-0.5": round(auc, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--test-frac", type=float, default=0.2)
    ap.add_argument("--save-model", type=Path, default=None)
    args = ap.parse_args()
    t0 = time.time()
    msgs = ensure_text_columns(ingest_paths(args.data, rules_dir=default_rules_dir()).messages)
    lab = stc3_labels(args.data)
    lab[schema.CONVERSATION_ID] = lab[schema.CONVERSATION_ID].astype(str)
    ids = np.array(sorted(set(msgs[schema.CONVERSATION_ID].astype(str)) & set(lab[schema.CONVERSATION_ID])))
    rng = np.random.default_rng(args.seed)
    rng.shuffle(ids)
    n_test = int(len(ids) * args.test_frac)
    test_ids, train_ids = set(ids[:n_test]), set(ids[n_test:])
    cid = msgs[schema.CONVERSATION_ID].astype(str)
    m_tr, m_te = msgs[cid.isin(train_ids)], msgs[cid.isin(test_ids)]
    S = lab.set_index(schema.CONVERSATION_ID)["S"]
    SAE = lab.set_index(schema.CONVERSATION_ID)[["S", "A", "E"]].mean(axis=1)
    models = load_models(None)
    acts_tr, acts_te = predict_acts(m_tr, models), predict_acts(m_te, models)
    print(f"{len(train_ids)} train / {len(test_ids)} test dialogues; prep {time.time() - t0:.0f}s")

    rows = []
    # baseline: TF-IDF + Ridge on the concatenated dialogue text, target -S
    tx_tr, tx_te = conversation_texts(m_tr), conversation_texts(m_te)
    base = make_pipeline(TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), min_df=2, sublinear_tf=True),
                         Ridge(alpha=1.0))
    base.fit(tx_tr["all"].tolist(), -S.reindex(tx_tr.index).to_numpy())
    s_te = S.reindex(tx_te.index).to_numpy()
    rows.append({"model": "baseline tfidf+ridge (all text)", **scores(base.predict(tx_te["all"].tolist()), s_te)})

    variants = [("risk: stacked, acts, target -S", "S", True),
                ("risk: stacked, no acts, target -S", "S", False),
                ("risk: stacked, acts, target -(S+A+E)/3", "SAE", True)]
    for name, tgt, use_acts in variants:
        t = time.time()
        y = -(S if tgt == "S" else SAE)
        labels = pd.DataFrame({schema.CONVERSATION_ID: y.index, TARGET: y.to_numpy()})
        labels = labels[labels[schema.CONVERSATION_ID].isin(train_ids)]
        model, cv = train_risk(m_tr, labels, acts=acts_tr if use_acts else None, random_state=args.seed)
        pred = model.predict_frame(m_te, acts_te if use_acts else None, None).set_index(schema.CONVERSATION_ID)
        pred.index = pred.index.astype(str)
        p = pred[schema.RISK].reindex(tx_te.index).to_numpy()
        rows.append({"model": name, **scores(p, s_te), "train_cv_spearman": cv["spearman_oof"],
                     "secs": round(time.time() - t)})
        if args.save_model and tgt == "S" and use_acts:
            from qa_inspect.models.card import new_card, save_model
            from qa_inspect.models.features import RISK_FEATURE_SET

            card = new_card(kind="risk", name=args.save_model.name, feature_set=RISK_FEATURE_SET,
                            training_data=[args.data.name + " (80% split)"], data_sha256="n/a",
                            n_train=len(train_ids), classes=["dissatisfaction_risk"],
                            random_state=args.seed, metrics={**cv, "heldout": rows[-1]})
            save_model(model, card, args.save_model)
    out = pd.DataFrame(rows)
    print(out.to_string(index=False))


if __name__ == "__main__":
    main()
