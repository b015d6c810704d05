"""Normalisation keeps offsets: norm_text has the length of text, so evidence maps back."""

from __future__ import annotations

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from qa_inspect import schema
from qa_inspect.text.normalize import PROTECTED_RE, fold_width, normalize, normalize_text, to_simplified


def test_traditional_to_simplified_char_for_char() -> None:
    src = "這個產品還沒發貨嗎？請問臺灣倉庫"
    out = to_simplified(src)
    assert out == "这个产品还没发货吗？请问台湾仓库"
    assert len(out) == len(src)


def test_full_width_folds_and_lowercases_but_keeps_chinese_punctuation() -> None:
    src = "ＡＢＣ　１２３？！（好）。、「引号」《书名》"
    out = fold_width(src)
    assert out == "abc 123?!(好)。、「引号」《书名》"


def test_placeholders_stickers_and_emoji_survive_normalisation() -> None:
    src = "[订单x]已發貨[微笑]👍🏻[數字x]"
    out = normalize_text(src)
    assert out.startswith("[订单x]已发货[微笑]👍🏻")
    assert [m.group(0) for m in PROTECTED_RE.finditer(out)][:3] == ["[订单x]", "[微笑]", "👍🏻"]


def test_missing_text_becomes_empty() -> None:
    assert normalize_text(None) == ""
    assert normalize_text(float("nan")) == ""


def test_normalize_frame_adds_column_keeps_rows_and_text() -> None:
    df = pd.DataFrame({schema.TEXT: ["親，這款有貨", None, "親，這款有貨", "ＯＫ"], "x": [1, 2, 3, 4]})
    out = normalize(df)
    assert list(out[schema.TEXT].iloc[[0, 3]]) == ["親，這款有貨", "ＯＫ"]  # display text untouched
    assert list(out[schema.NORM_TEXT]) == ["亲,这款有货", "", "亲,这款有货", "ok"]
    assert len(out) == len(df) and list(out["x"]) == [1, 2, 3, 4]
    assert schema.NORM_TEXT not in df.columns  # input not mutated


_ALPHABET = st.sampled_from(list("這個產品還沒發貨嗎說話乾燥裡麵髮型著作後台於是瞭解ＡＢｃ１２？！　，。abc 12[]訂單x😀👍🏻"))


@settings(max_examples=200, deadline=None)
@given(st.lists(_ALPHABET, max_size=40).map("".join))
def test_norm_text_always_same_length(text: str) -> None:
    assert len(normalize_text(text)) == len(text)


class _PhraseConverter:
    """Stands in for an OpenCC phrase rule that changes length (rare in t2s, possible in configs)."""

    def convert(self, text: str) -> str:
        if len(text) > 1:
            return text.replace("記憶體", "内存")  # 3 chars -> 2 chars
        return {"記": "记", "憶": "忆", "體": "体"}.get(text, text)


def test_length_changing_conversion_falls_back_to_char_by_char(monkeypatch) -> None:
    import qa_inspect.text.normalize as norm

    monkeypatch.setattr(norm, "_converter", lambda config: _PhraseConverter())
    out = norm.to_simplified("記憶體不足")
    assert out == "记忆体不足" and len(out) == 5
