"""The streaming ingest's fast paths against straightforward per-row references: bucket keys
hashed per distinct value, amounts parsed on non-empty cells only, string columns converted per
distinct value, rejects rendered once per slice, CSV chunks read as bytes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qa_inspect import schema as S
from qa_inspect.ingest import frame as F
from qa_inspect.ingest.core import _fill_agents_reference, fill_agents
from qa_inspect.ingest.stream import (
    _bucket_reference,
    conversation_key_bucket,
    import_context,
    parse_chunk,
    plan_chunks,
)
from qa_inspect.ingest.table import read_delimited, read_delimited_fast

RULES = Path(__file__).resolve().parents[2] / "rules"
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_KEY = st.one_of(st.none(), st.sampled_from(["", "a", "b", "\x00NA", "\x1f", "店铺", "A:1", "1", "1.0"]),
                 st.text(max_size=4))


@FAST
@given(rows=st.lists(st.tuples(_KEY, _KEY, _KEY), min_size=1, max_size=40), n=st.integers(1, 9),
       dtype=st.sampled_from(["str", "string", "mixed"]))
def test_bucket_per_distinct_key_equals_per_row_hash(rows: list[tuple[Any, Any, Any]], n: int, dtype: str) -> None:
    conv, shop, cust = (list(c) for c in zip(*rows, strict=True))
    types = {"str": ("str", "str", "str"), "string": ("string", "string", "string"),
             "mixed": ("string", "string", "str")}[dtype]
    df = pd.DataFrame({S.CONVERSATION_ID: pd.Series(conv, dtype=types[0]),
                       S.SHOP_ID: pd.Series(shop, dtype=types[1]),
                       S.CUSTOMER_ID: pd.Series(cust, dtype=types[2])})
    np.testing.assert_array_equal(conversation_key_bucket(df, n), _bucket_reference(df, n))


def test_bucket_object_columns_take_the_reference_path() -> None:
    # 1 and 1.0 are one value to factorize but two keys ("1", "1.0"): never merged.
    df = pd.DataFrame({S.CONVERSATION_ID: pd.Series([None, None, None], dtype=object),
                       S.SHOP_ID: pd.Series(["s", "s", "s"], dtype=object),
                       S.CUSTOMER_ID: pd.Series([1, 1.0, None], dtype=object)})
    got = conversation_key_bucket(df, 1 << 30)
    np.testing.assert_array_equal(got, _bucket_reference(df, 1 << 30))
    assert got[0] != got[1]


def _amounts_reference(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """parse_amounts as one pass over the whole column (the code before the subset path)."""
    if F._is_str(values):
        obj = values
        numeric = pd.Series(False, index=values.index)
    else:
        obj = values.astype(object)
        numeric = obj.map(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                          and not (isinstance(v, float) and math.isnan(v))).astype(bool)
    text = F.to_text(obj)
    if text.str.contains(F._AMOUNT_JUNK, regex=True).any():
        text = text.str.replace(F._AMOUNT_JUNK, "", regex=True)
    out = pd.to_numeric(text.where(text != "", None), errors="coerce").astype("float64")
    if numeric.any():
        out[numeric] = obj[numeric].astype("float64")
    return out, out.isna() & (text != "") & ~numeric


_AMOUNT = st.one_of(st.sampled_from(["", " ", "12", "12.5", "¥12", "1,000", "NT$5", "元", "abc", "-3",
                                     "9007199254740993", "18446744073709551617", "1e400", "nan", " 7 "]),
                    st.text(alphabet="0123456789.,-¥e ", max_size=6))


@FAST
@given(cells=st.lists(_AMOUNT, min_size=1, max_size=30))
def test_amounts_on_filled_cells_equal_whole_column(cells: list[str]) -> None:
    values = pd.Series(cells, dtype="str", index=pd.RangeIndex(5, 5 + len(cells)))
    got, bad = F.parse_amounts(values)
    want, want_bad = _amounts_reference(values)
    pd.testing.assert_series_equal(got, want)
    np.testing.assert_array_equal(bad.to_numpy(), want_bad.to_numpy())


@FAST
@given(cells=st.lists(st.one_of(_AMOUNT, st.none(), st.integers(-5, 10**6), st.floats(allow_nan=True),
                                st.booleans()), min_size=1, max_size=30))
def test_amounts_of_object_cells_equal_whole_column(cells: list[Any]) -> None:
    values = pd.Series(cells, dtype=object)
    got, bad = F.parse_amounts(values)
    want, want_bad = _amounts_reference(values)
    pd.testing.assert_series_equal(got, want)
    np.testing.assert_array_equal(bad.to_numpy(), want_bad.to_numpy())


@FAST
@given(cells=st.lists(st.one_of(st.none(), st.just(float("nan")), st.sampled_from(["", "a", "客服", " b"]),
                                st.integers(0, 2), st.floats(0, 2)), min_size=1, max_size=30))
def test_string_columns_per_distinct_value_equal_astype(cells: list[Any]) -> None:
    values = pd.Series(cells, dtype=object)
    ref = values.astype("string")
    ref = ref.mask(ref.eq("").fillna(False))
    pd.testing.assert_series_equal(F._string_or_na(values), ref)


def test_rejects_rendered_once_equal_row_by_row(tmp_path: Path) -> None:
    head = "店铺,会话编号,客服账号,买家昵称,发送时间,发送方,消息内容,商品ID,消息类型,金额\n"
    rows = ["悦家家居旗舰店,C1,a1,b1,2026-11-25 10:00:00,客服,你好,,文本,",
            "无此店,C1,a1,b1,2026-11-25 10:00:01,客服,你好,,文本,",  # unknown shop
            "悦家家居旗舰店,C1,a1,b1,not a time,客服,你好,,文本,",  # bad time
            "悦家家居旗舰店,C1,a1,b1,2026-11-25 10:00:02,外星人,你好,,文本,",  # unknown role
            "悦家家居旗舰店,C1,a1,b1,2026-11-25 10:00:03,客服, ,,文本,",  # empty text
            "悦家家居旗舰店,C1,a1,b1,2026-11-25 10:00:04,客服,好,,文本,12元x",  # bad amount
            "悦家家居旗舰店,,a1,b1,2026-11-25 10:00:05,客服,好,,文本,",  # no conversation
            "悦家家居旗舰店,C1,a1,b1,,客服,好,,文本,"]  # no time
    path = tmp_path / "t.csv"
    path.write_text(head + "\n".join(rows) + "\n", encoding="utf-8")
    plan = plan_chunks([path], rules_dir=RULES)
    assert any(s.name == "悦家家居旗舰店" for s in import_context(RULES).shops.values())
    rej = parse_chunk(plan.chunks[0], plan.ictx).rejects
    assert rej[S.REJECT_LINE].tolist() == [3, 4, 5, 6, 7, 8, 9]
    assert rej[S.REJECT_REASON].tolist() == [F.R_UNKNOWN_SHOP, F.R_BAD_TIME, F.R_UNKNOWN_ROLE, F.R_EMPTY_TEXT,
                                             F.R_BAD_AMOUNT, F.R_NO_CONVERSATION, F.R_NO_TIME]
    # raw is each row rendered on its own: the row as written (cells stripped), comma-joined
    assert rej[S.REJECT_RAW].tolist() == [",".join(c.strip() for c in r.split(",")) for r in rows[1:]]


@FAST
@given(cells=st.lists(st.lists(st.sampled_from(["a", "", "多", '"q"', '"x,y"', '"两\n行"', '"\r\n"', "é"]),
                               min_size=3, max_size=3), min_size=1, max_size=6),
       crlf=st.booleans(), tail=st.sampled_from(["", "\n", "\n\n"]))
def test_bytes_reading_equals_text_reading(cells: list[list[str]], crlf: bool, tail: str) -> None:
    text = "h1,h2,h3\n" + "\n".join(",".join(r) for r in cells) + tail
    if crlf:
        text = text.replace("\n", "\r\n")
    norm = text.replace("\r\n", "\n").replace("\r", "\n")
    data = text.encode("utf-8").replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    fast = read_delimited_fast(Path("f.csv"), data, ",", "utf-8")
    exact = read_delimited(Path("f.csv"), norm, ",", "utf-8")
    if fast is not None:
        assert fast.header == exact.header and fast.data_rows == exact.data_rows
        pd.testing.assert_frame_equal(fast.cells, exact.cells)


@FAST
@given(rows=st.lists(st.tuples(st.one_of(st.none(), st.sampled_from(["c1", "c2", "c3"])),
                               st.one_of(st.none(), st.just(float("nan")), st.sampled_from(["", "a1", "a2"]))),
                     min_size=1, max_size=25),
       grouped=st.booleans())
def test_fill_agents_equals_groupby_fill(rows: list[tuple[Any, Any]], grouped: bool) -> None:
    if grouped:  # as assign_seq leaves them: one run of rows per conversation
        rows = sorted(rows, key=lambda r: (r[0] is None, r[0] or ""))
    conv = pd.Series([r[0] for r in rows], dtype="string")
    agent = pd.Series([r[1] for r in rows], dtype="str")
    got = fill_agents(agent, conv).astype("string")
    want = _fill_agents_reference(agent, conv).astype("string")
    pd.testing.assert_series_equal(got, want)
