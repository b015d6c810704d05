"""Tokenizer: both backends, one user dictionary, protected spans, tokens rebuild norm_text."""

from __future__ import annotations

import pickle
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qa_inspect import schema
from qa_inspect.errors import ConfigError, UsageError
from qa_inspect.text.normalize import normalize
from qa_inspect.text.tokenize import Tokenizer, read_dict_file, rjieba_available, tokenize

BACKENDS = ["jieba", pytest.param("rjieba", marks=pytest.mark.skipif(not rjieba_available(),
                                                                       reason="rjieba not installed"))]


@pytest.fixture(scope="module", params=BACKENDS)
def tok(request: pytest.FixtureRequest, rules_dir: Path) -> Tokenizer:
    return Tokenizer.from_rules(rules_dir, extra_words=["悦家长绒棉四件套"], backend=request.param)


def test_tokens_concatenate_to_text(tok: Tokenizer) -> None:
    for text in ["亲 您好!我不会不知道的,  这个 ok 吗?\n第二行", "", "   ", "[订单x][数字x]-[数字x]天"]:
        assert "".join(tok.lcut(text)) == text


def test_protected_spans_are_single_tokens(tok: Tokenizer) -> None:
    toks = tok.lcut("亲[微笑]订单[订单x]金额[金额x]😀👍🏻好")
    for t in ("[微笑]", "[订单x]", "[金额x]", "😀", "👍🏻"):
        assert t in toks


def test_user_dictionary_and_extra_words_in_both_backends(tok: Tokenizer) -> None:
    assert "爱买不买" in tok.lcut("你爱买不买")  # rules/dict/qa_terms.txt
    assert "悦家长绒棉四件套" in tok.lcut("这款悦家长绒棉四件套很软")  # extra word (KB product name)


def test_traditional_dictionary_words_are_normalised(tmp_path: Path) -> None:
    (tmp_path / "dict").mkdir()
    (tmp_path / "dict" / "words.txt").write_text("# comment\n蠶絲被枕套組 100 n\n", encoding="utf-8")
    t = Tokenizer.from_rules(tmp_path, backend="jieba")
    assert "蚕丝被枕套组" in t.lcut("这个蚕丝被枕套组不错")


def test_tokenize_frame_reuses_unique_texts_without_sharing_lists(tok: Tokenizer) -> None:
    df = normalize(pd.DataFrame({schema.TEXT: ["在的亲", "在的亲", None]}))
    out = tokenize(df, tok)
    assert out[schema.TOKENS].iloc[0] == out[schema.TOKENS].iloc[1]
    out[schema.TOKENS].iloc[0].append("X")
    assert out[schema.TOKENS].iloc[1][-1] != "X"
    assert out[schema.TOKENS].iloc[2] == []
    assert len(out) == 3


def test_pickle_ships_configuration_not_engine(tok: Tokenizer) -> None:
    tok.lcut("预热")
    clone = pickle.loads(pickle.dumps(tok))
    assert clone._engine is None
    assert clone.lcut("你爱买不买") == tok.lcut("你爱买不买")


def test_stopwords_removed_from_content_tokens(rules_dir: Path) -> None:
    t = Tokenizer.from_rules(rules_dir)
    assert t.content_tokens(["亲", ",", " ", "四件套", "的"]) == ["四件套"]


def test_bad_dictionary_line_names_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.txt"
    f.write_text("好词 10 n\n坏 行 多 余\n", encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        read_dict_file(f)
    assert "bad.txt" in str(exc.value) and "line 2" in str(exc.value)


def test_unknown_backend_is_usage_error() -> None:
    with pytest.raises(UsageError):
        Tokenizer(backend="spacy")  # type: ignore[arg-type]


def test_rule_phrases_join_the_dictionary(rules_dir: Path) -> None:
    with_rules = Tokenizer.from_rules(rules_dir)
    without = Tokenizer.from_rules(rules_dir, rule_phrases=False)
    text = "耳机可以一起买个保护套"  # 一起买 is a SEL-003 phrase
    assert "一起买" in with_rules.lcut(text)
    assert "一起买" not in without.lcut(text)


def test_broken_rule_file_does_not_break_the_tokenizer(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("rules: [{id: X}]\n", encoding="utf-8")
    assert Tokenizer.from_rules(tmp_path).lcut("你好") == ["你好"]


_TEXT = st.lists(st.sampled_from(["亲", "您好", "[微笑]", "[订单x]", "😀", "👍🏻", " ", "\n", ",", "?", "不知道",
                                  "爱买不买", "ok", "12", "長絨棉", "四件套", "[", "]"]), max_size=25).map("".join)


@settings(max_examples=100, deadline=None)
@given(_TEXT)
def test_tokens_always_rebuild_the_text(text: str) -> None:
    tok = _DEFAULT_TOK
    assert "".join(tok.lcut(text)) == text


_DEFAULT_TOK = Tokenizer(words=[("爱买不买", None, None)])
