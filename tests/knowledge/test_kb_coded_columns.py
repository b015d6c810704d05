"""verify_knowledge reads Arrow string columns through their codes (one Python str per distinct
value, ``verify._coded``); object columns and columns with missing values take the plain per-row
path. Both must give the same findings, frame-equal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qa_inspect import schema
from qa_inspect.ingest import ingest_paths
from qa_inspect.knowledge import KnowledgeBase, catalog_words, verify_knowledge
from qa_inspect.knowledge.verify import _coded
from qa_inspect.text.normalize import normalize
from qa_inspect.text.tokenize import Tokenizer, tokenize

_STR_COLS = (schema.CONVERSATION_ID, schema.SHOP_ID, schema.ROLE, schema.AGENT_ID, schema.SKU, schema.TEXT,
             schema.NORM_TEXT)


@pytest.fixture(scope="module")
def sample(sample_logs_dir: Path, rules_dir: Path, kbs: dict[str, KnowledgeBase]) -> pd.DataFrame:
    msgs = ingest_paths([sample_logs_dir], rules_dir=rules_dir).messages
    return tokenize(normalize(msgs), Tokenizer.from_rules(rules_dir, catalog_words(kbs)))


def _as_objects(df: pd.DataFrame) -> pd.DataFrame:
    """The same rows with plain object string columns (the per-row conversion path)."""
    out = df.copy()
    for c in _STR_COLS:
        out[c] = out[c].astype(object).where(out[c].notna(), None)
    return out


def test_sample_is_read_through_codes(sample: pd.DataFrame) -> None:
    # the fast path is really taken on the pipeline's frames
    for c in _STR_COLS:
        assert isinstance(sample[c].dtype, pd.StringDtype), c
    assert not sample[schema.CONVERSATION_ID].hasnans and not sample[schema.TEXT].hasnans


def test_coded_equals_tolist(sample: pd.DataFrame) -> None:
    for c in (schema.CONVERSATION_ID, schema.ROLE, schema.TEXT, schema.NORM_TEXT):
        values, codes, uniques = _coded(sample[c])
        assert values == sample[c].tolist()
        assert [uniques[k] for k in codes.tolist()] == values
        assert all(type(v) is str for v in values)


def test_codes_and_objects_give_the_same_findings(sample: pd.DataFrame, kbs: dict[str, KnowledgeBase]) -> None:
    fast = verify_knowledge(sample, kbs)
    assert len(fast) > 50
    pd.testing.assert_frame_equal(fast, verify_knowledge(_as_objects(sample), kbs), check_exact=True)


def test_shuffled_rows_with_missing_values(sample: pd.DataFrame, kbs: dict[str, KnowledgeBase]) -> None:
    rng = np.random.default_rng(7)
    part = sample.sample(frac=1.0, random_state=3).reset_index(drop=True)
    idx = rng.choice(len(part), size=len(part) // 10, replace=False)
    part.loc[idx[: len(idx) // 2], schema.AGENT_ID] = pd.NA  # missing agents / skus: the per-row path
    part.loc[idx[len(idx) // 2:], schema.SKU] = pd.NA
    got = verify_knowledge(part, kbs)
    pd.testing.assert_frame_equal(got, verify_knowledge(_as_objects(part), kbs), check_exact=True)
    # and without the missing values, the codes again
    whole = sample.sample(frac=1.0, random_state=5).reset_index(drop=True)
    pd.testing.assert_frame_equal(verify_knowledge(whole, kbs), verify_knowledge(_as_objects(whole), kbs),
                                  check_exact=True)


def test_norm_text_longer_than_text_is_renormalised(sample: pd.DataFrame, kbs: dict[str, KnowledgeBase]) -> None:
    # a norm_text that does not fit its text makes the stage normalise every text itself (and
    # count repeats from those): same findings as the object path
    part = sample.copy()
    part.loc[part.index[3], schema.NORM_TEXT] = part[schema.NORM_TEXT].iloc[3] + "xx"
    pd.testing.assert_frame_equal(verify_knowledge(part, kbs), verify_knowledge(_as_objects(part), kbs),
                                  check_exact=True)
