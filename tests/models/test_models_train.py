"""Training: reproducible cards, CLI round trip, risk model learns a planted signal."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from typer.testing import CliRunner

from qa_inspect import schema
from qa_inspect.cli import app
from qa_inspect.models import load_models, predict_acts, predict_risk
from qa_inspect.models.card import CARD_FILE
from qa_inspect.models.risk import TARGET, train_risk
from qa_inspect.models.train import train_act_model


def test_act_training_is_reproducible(tmp_path: Path, labelled_slice: pd.DataFrame) -> None:
    csv = tmp_path / "slice.csv"
    labelled_slice.to_csv(csv, index=False)
    a = train_act_model([csv], tmp_path / "a", random_state=7, folds=2)
    b = train_act_model([csv], tmp_path / "b", random_state=7, folds=2)
    assert a.card.metrics == b.card.metrics
    assert a.card.training_data_sha256 == b.card.training_data_sha256
    assert a.metrics["f1"].max() > 0  # it learned something
    loaded = load_models(tmp_path / "a")
    assert loaded.acts_card.n_train == len(labelled_slice)


def test_cli_train_acts_writes_model_and_card(tmp_path: Path, labelled_slice: pd.DataFrame) -> None:
    csv = tmp_path / "slice.csv"
    labelled_slice.to_csv(csv, index=False)
    res = CliRunner().invoke(app, ["train", "acts", "--data", str(csv), "--out", str(tmp_path / "m"),
                                   "--folds", "2"])
    assert res.exit_code == 0, res.output
    assert "negative_tone" in res.output and "precision" in res.output
    assert json.loads((tmp_path / "m" / CARD_FILE).read_text(encoding="utf-8"))["kind"] == "acts"


def test_cli_train_acts_bad_label_is_user_error(tmp_path: Path) -> None:
    csv = tmp_path / "bad.csv"
    pd.DataFrame({"text": ["你好"] * 20, "labels": ["rudeness"] * 20}).to_csv(csv, index=False)
    res = CliRunner().invoke(app, ["train", "acts", "--data", str(csv), "--out", str(tmp_path / "m")])
    assert res.exit_code == 1
    assert "unknown act label 'rudeness'" in res.output
    # too few examples of one act for calibrated CV: a user error naming the act, not a crash
    rows = [("亲，这款是纯棉的", "informative")] * 30 + [("你自己不会看吗", "negative_tone")] * 4
    pd.DataFrame(rows, columns=["text", "labels"]).to_csv(csv, index=False)
    res = CliRunner().invoke(app, ["train", "acts", "--data", str(csv), "--out", str(tmp_path / "m")])
    assert res.exit_code == 1, res.output
    assert "negative_tone" in res.output and "4 positive" in res.output


def _synthetic_chats(n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Conversations whose dissatisfaction depends on the customer's last turn and repeats."""
    rng = random.Random(seed)
    happy = ["好的谢谢", "收到了，谢谢亲", "解决了，满意", "好的，辛苦了"]
    angry = ["到底什么时候发货？我要投诉", "还没到，太差了，差评", "说了好几次了还没处理，无语", "我要退款，什么态度"]
    msgs, labels = [], []
    for i in range(n):
        cid = f"syn:{i}"
        level = rng.random()
        turns = [("customer", "请问什么时候发货"), ("agent", "亲，48小时内发货哦")]
        if level > 0.5:
            turns += [("customer", "请问什么时候发货"), ("agent", "请您耐心等待")]
        turns.append(("customer", rng.choice(angry if level > 0.6 else happy)))
        for seq, (role, text) in enumerate(turns):
            msgs.append({"conversation_id": cid, "seq": seq, "role": role, "text": text})
        labels.append({"conversation_id": cid, TARGET: level})
    return pd.DataFrame(msgs), pd.DataFrame(labels)


def test_risk_model_learns_planted_signal_and_is_reproducible(shipped) -> None:
    msgs, labels = _synthetic_chats(160, seed=1)
    train_ids = set(labels[schema.CONVERSATION_ID][:120])
    tr = msgs[msgs[schema.CONVERSATION_ID].isin(train_ids)]
    te = msgs[~msgs[schema.CONVERSATION_ID].isin(train_ids)]
    acts_tr = predict_acts(tr, shipped)
    m1, cv1 = train_risk(tr, labels, acts=acts_tr, random_state=0, folds=3)
    m2, cv2 = train_risk(tr, labels, acts=acts_tr, random_state=0, folds=3)
    assert cv1 == cv2
    shipped_with_risk = type(shipped)(shipped.acts, shipped.acts_card, m1, None)
    risk = predict_risk(te, predict_acts(te, shipped), None, shipped_with_risk)
    assert risk[schema.RISK].between(0, 1).all() and len(risk) == 40
    truth = labels.set_index(schema.CONVERSATION_ID)[TARGET].reindex(risk[schema.CONVERSATION_ID].astype(str))
    assert spearmanr(risk[schema.RISK], truth).statistic > 0.6


def test_predict_risk_without_risk_model_is_nan(shipped) -> None:
    msgs, _ = _synthetic_chats(3, seed=2)
    out = predict_risk(msgs, None, None, shipped)
    assert len(out) == 3 and out[schema.RISK].isna().all()


@pytest.mark.realdata
def test_stc3_risk_training_smoke(shared_data: Path) -> None:
    """A small STC-3 slice trains through the same ingest path the CLI uses and beats chance."""
    from qa_inspect.config import default_rules_dir
    from qa_inspect.ingest.core import ingest_paths
    from qa_inspect.models.train import stc3_targets

    path = shared_data / "stc3" / "dialogues_dev.json"
    msgs = ingest_paths(path, rules_dir=default_rules_dir()).messages
    targets = stc3_targets([path])
    ids = sorted(set(msgs[schema.CONVERSATION_ID].astype(str)))[:300]
    msgs = msgs[msgs[schema.CONVERSATION_ID].astype(str).isin(ids)]
    _, cv = train_risk(msgs, targets, random_state=0, folds=3)
    assert cv["n_conversations"] == 300
    assert np.isfinite(cv["spearman_oof"]) and cv["spearman_oof"] > 0.3


def test_models_dir_with_risk_subfolder_loads_both(tmp_path: Path, shipped) -> None:
    from qa_inspect.models.card import new_card, save_model
    from qa_inspect.models.features import RISK_FEATURE_SET

    msgs, labels = _synthetic_chats(60, seed=3)
    model, cv = train_risk(msgs, labels, random_state=0, folds=3)
    card = new_card(kind="risk", name="risk", feature_set=RISK_FEATURE_SET, training_data=["synthetic"],
                    data_sha256="-", n_train=60, classes=["dissatisfaction_risk"], random_state=0, metrics=cv)
    save_model(model, card, tmp_path / "risk")
    loaded = load_models(tmp_path)
    assert loaded.risk is not None and loaded.acts_card.kind == "acts"  # shipped act model as fallback
    out = predict_risk(msgs, None, None, loaded)
    assert out[schema.RISK].notna().all()
