"""Model cards: loading refuses a model built by another version or feature code."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from qa_inspect.errors import ConfigError, UserError
from qa_inspect.models import default_acts_dir, load_models, load_thresholds
from qa_inspect.models.card import CARD_FILE, read_card


def _copy_shipped(tmp_path: Path) -> Path:
    d = tmp_path / "acts"
    shutil.copytree(default_acts_dir(), d)
    return d


@pytest.mark.parametrize("key,value,message", [
    ("sklearn_version", "0.24.2", "scikit-learn"),
    ("feature_set", "acts-v0:old", "feature set"),
    ("qa_inspect_version", "9.9.0", "qa-inspect"),
    ("kind", "risk", "risk"),
])
def test_mismatching_card_refuses_to_load(tmp_path: Path, key: str, value: str, message: str) -> None:
    d = _copy_shipped(tmp_path)
    card = json.loads((d / CARD_FILE).read_text(encoding="utf-8"))
    card[key] = value
    (d / CARD_FILE).write_text(json.dumps(card), encoding="utf-8")
    with pytest.raises(UserError, match=message):
        load_models(tmp_path)


def test_matching_copy_loads_and_missing_card_refuses(tmp_path: Path) -> None:
    d = _copy_shipped(tmp_path)
    assert load_models(tmp_path).acts_card.kind == "acts"
    (d / CARD_FILE).unlink()
    with pytest.raises(UserError, match="no model found"):
        load_models(tmp_path)
    with pytest.raises(UserError, match="card missing"):
        read_card(d)


def test_shipped_model_is_small_and_carded() -> None:
    d = default_acts_dir()
    assert (d / "model.joblib").stat().st_size < 5_000_000
    card = read_card(d)
    assert card.n_train >= 2000 and len(card.metrics["per_class"]) == 8


def test_models_yaml_errors_name_key_path(tmp_path: Path) -> None:
    (tmp_path / "models.yaml").write_text(
        "acts:\n  negative_tone: {threshold: 0.7, dimension: attitude, polarity: '-', points: 5, colour: red}\n",
        encoding="utf-8")
    with pytest.raises(ConfigError, match=r"acts\.negative_tone\.colour.*unknown key"):
        load_thresholds(tmp_path)
    (tmp_path / "models.yaml").write_text("acts:\n  rudeness: {threshold: 0.7, dimension: attitude, "
                                          "polarity: '-', points: 5}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown act 'rudeness'"):
        load_thresholds(tmp_path)


def test_bundled_models_yaml_is_valid(rules_dir: Path) -> None:
    cfg = load_thresholds(rules_dir)
    assert cfg.acts["negative_tone"].dimension == "attitude"
    assert cfg.combine.disagree_below < cfg.combine.agree_above
    # every linked rule id exists in the bundled rule sets (catches renames)
    ids = set()
    for f in rules_dir.glob("*.yaml"):
        ids |= set(re.findall(r"^\s*-\s*id:\s*([A-Za-z0-9_.\-]+)", f.read_text(encoding="utf-8"), re.M))
    linked = {r for link in cfg.combine.links for r in link.rule_ids}
    assert linked and linked <= ids, linked - ids
