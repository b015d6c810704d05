"""Session-4 ingest fast paths against straightforward references: Arrow's CSV reading of chunk
bytes, the numpy newline bookkeeping and UTF-8 check of the planning scan, times read by fixed
positions, the positional time-zone step, seq order by lexsort, duplicate candidates from codes,
shop resolution by take."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qa_inspect import schema as S
from qa_inspect.config import load_shops
from qa_inspect.ingest import frame as F
from qa_inspect.ingest import stream as stream_mod
from qa_inspect.ingest.core import drop_duplicates
from qa_inspect.ingest.stream import _breaks, _scan, _Utf8Check
from qa_inspect.ingest.table import read_delimited, read_delimited_arrow

RULES = Path(__file__).resolve().parents[2] / "rules"
FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------ Arrow CSV reading

def _csv_bytes(rows: list[list[str]], newline: str, delim: str) -> bytes:
    buf = io.StringIO(newline="")
    csv.writer(buf, delimiter=delim, lineterminator=newline, quoting=csv.QUOTE_MINIMAL).writerows(rows)
    return buf.getvalue().encode("utf-8")


_CELL = st.lists(st.sampled_from(list('ab 多行,"\t\n') + ["\r\n", "é"]), max_size=6).map("".join)


@FAST
@given(rows=st.lists(st.lists(_CELL, min_size=3, max_size=3), min_size=1, max_size=8),
       newline=st.sampled_from(["\n", "\r\n"]), delim=st.sampled_from([",", "\t"]),
       blank=st.one_of(st.none(), st.integers(0, 8)), short=st.one_of(st.none(), st.integers(0, 8)))
def test_arrow_reading_equals_exact_reading(rows: list[list[str]], newline: str, delim: str,
                                            blank: int | None, short: int | None) -> None:
    """Quotes as an export writes them (what the planning scan lets through): whenever the Arrow
    reading answers, it is the csv-module reading of the header plus the normalised bytes."""
    if short is not None and short < len(rows):
        rows[short] = rows[short][:2]
    records = [_csv_bytes([r], newline, delim) for r in rows]
    if blank is not None:  # a blank line between two records (or first or last)
        records.insert(min(blank, len(records)), newline.encode())
    data = b"".join(records)
    header = ["h1", "h2", "h3"]
    got = read_delimited_arrow(Path("f.csv"), data, header, delim, "utf-8")
    text = delim.join(header) + "\n" + data.decode("utf-8").replace("\r\n", "\n")
    exact = read_delimited(Path("f.csv"), text, delim, "utf-8")
    if short is not None and short < len(rows) or blank is not None:
        assert got is None  # field count or blank line: the exact reader decides
    if got is None:
        return
    assert got.header == exact.header and got.data_rows == exact.data_rows
    assert len(exact.rejects.frame()) == 0
    pd.testing.assert_frame_equal(got.cells, exact.cells)


def test_arrow_reading_multiline_cells_and_lines() -> None:
    data = _csv_bytes([["a", "两\r\n行", "x"], ["b", "c", "三\r\n\r\n行"], ["d", "e,f", '"q"']], "\r\n", ",")
    got = read_delimited_arrow(Path("f.csv"), data, ["h1", "h2", "h3"], ",", "utf-8")
    assert got is not None
    assert got.cells["h2"].tolist() == ["两\n行", "c", "e,f"]
    assert got.cells["h3"].tolist() == ["x", "三\n\n行", '"q"']
    assert got.cells["_line"].tolist() == [2, 4, 7]
    assert str(got.cells["h1"].dtype) == "str"


def test_arrow_reading_refuses_what_it_cannot_prove() -> None:
    ok = _csv_bytes([["a", "b"]], "\n", ",")
    assert read_delimited_arrow(Path("f"), ok, ["x", "y"], ",", None) is not None
    assert read_delimited_arrow(Path("f"), ok, ["x"], ",", None) is None  # wrong field count
    assert read_delimited_arrow(Path("f"), b"a\n", ["x"], ",", None) is None  # one field: blank lines hide
    assert read_delimited_arrow(Path("f"), ok + b"\n", ["x", "y"], ",", None) is None  # trailing blank line
    assert read_delimited_arrow(Path("f"), ok[:-1], ["x", "y"], ",", None) is None  # no final newline
    assert read_delimited_arrow(Path("f"), ok, ["x", "x"], ",", None) is None  # duplicate header


# ------------------------------------------------------------------------------------ planning scan

@FAST
@given(body=st.lists(st.sampled_from([b"a", b"\xe4\xb8\xad", b",", b"\n", b"\r\n", b"\r", b'"x\r\ny"']),
                     max_size=40),
       block=st.integers(1, 9), chunk=st.integers(1, 30))
def test_scan_newline_bookkeeping_equals_byte_counts(tmp_path_factory: pytest.TempPathFactory, body: list[bytes],
                                                     block: int, chunk: int) -> None:
    """Tiny blocks put '\\r\\n' pairs across block ends: line counts, cut lines and the lone-'\\r'
    flag still equal counting the whole file's bytes."""
    data = b"".join(body)
    path = tmp_path_factory.mktemp("scan") / "f.csv"
    path.write_bytes(data)
    old = stream_mod.BLOCK_BYTES
    stream_mod.BLOCK_BYTES = block
    try:
        sc = _scan(path, "csv", None, chunk)
    finally:
        stream_mod.BLOCK_BYTES = old
    if sc is None:
        return
    assert sc.breaks == _breaks(data)
    assert sc.lone_cr == (data.count(b"\r") != data.count(b"\r\n"))
    for cut in sc.cuts:
        assert data[cut - 1:cut] == b"\n"
        assert sc.lines_at[cut] == 1 + _breaks(data, 0, cut)


_UTF8_PIECES = [b"a", b"\xe4\xb8\xad", b"\xf0\x9f\x98\x80", b"\xc3\xa9", b"\xed\xa0\x80", b"\xc0\x80", b"\xe0\x80\x80",
                b"\xf4\x90\x80\x80", b"\xff", b"\x80", b"\xe4\xb8", b"\xf0\x9f"]


@FAST
@given(pieces=st.lists(st.sampled_from(_UTF8_PIECES), max_size=12), cuts=st.lists(st.integers(0, 48), max_size=4))
def test_utf8_check_equals_strict_decoding_across_blocks(pieces: list[bytes], cuts: list[int]) -> None:
    data = b"".join(pieces)
    bounds = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    check = _Utf8Check()
    ok = True
    try:
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            check.decode(data[a:b])
        check.decode(b"", final=True)
    except UnicodeDecodeError:
        ok = False
    try:
        data.decode("utf-8")
        expected = True
    except UnicodeDecodeError:
        expected = False
    assert ok == expected


def test_utf8_check_carries_characters_cut_by_a_block_end() -> None:
    data = "中文😀é,ab".encode()
    for cut in range(len(data) + 1):
        check = _Utf8Check()
        check.decode(data[:cut])
        check.decode(data[cut:])
        check.decode(b"", final=True)  # no error: every split of valid text is valid
    with pytest.raises(UnicodeDecodeError):
        check = _Utf8Check()
        check.decode(data[:2])
        check.decode(b"", final=True)  # a character cut short at the end of the file


# -------------------------------------------------------------------------------------------- times

def _parse_times_reference(values: pd.Series, tz_per_row: pd.Series, fmt: str | None) -> pd.Series:
    """parse_times for string cells as it was: to_datetime on every cell, a groupby per zone."""
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    text = values.fillna("").str.strip()
    aware = text.str.contains(F._OFFSET, regex=True)
    form = "ISO8601" if fmt is None else fmt
    if aware.any():
        out[aware] = F._ns(pd.to_datetime(text[aware], utc=True, errors="coerce", format=form), aware=True)
    naive = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
    mask = ~aware & (text != "")
    if mask.any():
        naive[mask] = F._ns(pd.to_datetime(text[mask], errors="coerce", format=form), aware=False)
    local = naive.notna()
    for tz, idx in tz_per_row[local].groupby(tz_per_row[local]).groups.items():
        loc = naive[idx].dt.tz_localize(str(tz), ambiguous="NaT", nonexistent="NaT")
        out[idx] = loc.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    return out


_TIMES = ["2026-11-25 09:00:19", "2024-02-29 23:59:59", "2023-02-29 10:00:00", "1900-02-29 00:00:00",
          "2000-02-29 12:00:00", "2026-04-31 01:00:00", "2026-11-25 24:00:00", "2026-11-25 10:60:00",
          "2026-11-25 10:00:60", "1678-06-01 00:00:00", "1679-01-01 00:00:00", "2261-12-31 23:59:59",
          "2262-06-01 00:00:00", "9999-12-31 23:59:59", "0000-01-01 00:00:00", "２０２６-11-25 09:00:19",
          " 2026-11-25 09:00:19 ", "2026/11/25 09:00:19", "2026-11-25T09:00:19", "2026-1-25 09:00:19",
          "2026-11-25 09:00:19+08:00", "2026-11-25 09:00:1", "2026-11-25 09:00:190", "", "昨天",
          "2026-03-29 02:30:00", "2026-10-25 02:30:00", "2026-13-01 00:00:00", "2026-00-10 00:00:00",
          "2026-11-00 00:00:00"]


@FAST
@given(cells=st.lists(st.one_of(st.sampled_from(_TIMES), st.none()), min_size=1, max_size=25),
       zones=st.lists(st.sampled_from(["Asia/Shanghai", "Asia/Taipei", "Europe/Berlin", "UTC"]), min_size=1,
                      max_size=25),
       fmt=st.sampled_from(["%Y-%m-%d %H:%M:%S", None]))
def test_fixed_position_times_equal_to_datetime(cells: list[str | None], zones: list[str], fmt: str | None) -> None:
    values = pd.Series(cells, dtype="str")
    tz = pd.Series([zones[i % len(zones)] for i in range(len(cells))], dtype=object)
    got = F.parse_times(values, tz, fmt)
    pd.testing.assert_series_equal(got, _parse_times_reference(values, tz, fmt))


def test_fixed_position_times_take_the_common_layout() -> None:
    """Valid cells of the layout are read here (only the rest goes to to_datetime)."""
    text = pd.Series(["2026-11-25 09:00:19", "2000-02-29 23:59:59", "2023-02-29 10:00:00", "x",
                      "1900-02-28 00:00:00", "1900-02-29 00:00:00"], dtype="str")
    mask, stamps = F._fixed_times(text)
    assert mask.tolist() == [True, True, False, False, True, False]
    assert stamps.astype(str).tolist() == ["2026-11-25T09:00:19.000000000", "2000-02-29T23:59:59.000000000",
                                           "1900-02-28T00:00:00.000000000"]


# ------------------------------------------------------------------------------- seq and duplicates

_CONV = st.one_of(st.none(), st.sampled_from(["s:b", "s:a", "s:a2", "t:中", "s:A", ""]))
_TS = st.one_of(st.none(), st.sampled_from(["2026-11-25 09:00:00", "2026-11-25 09:00:01", "2026-11-24 23:00:00"]))


def _staged(rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    conv, ts, text, cust, fo = (list(c) for c in zip(*rows, strict=True))
    n = len(rows)
    return pd.DataFrame({
        S.PLATFORM: pd.Series(["tmall"] * n, dtype=object), S.SHOP_ID: pd.Series(["s"] * n, dtype="string"),
        S.CONVERSATION_ID: pd.Series(conv, dtype="string"),
        S.TS: pd.to_datetime(pd.Series(ts, dtype=object)).dt.tz_localize("UTC").astype("datetime64[ns, UTC]"),
        S.ROLE: pd.Series(["customer"] * n, dtype=object), S.AGENT_ID: pd.Series(["a1"] * n, dtype="str"),
        S.CUSTOMER_ID: pd.Series(cust, dtype="str"), S.TEXT: pd.Series(text, dtype="str"),
        S.SKU: pd.Series([""] * n, dtype="str"), S.IS_AUTO_REPLY: np.zeros(n, dtype=bool),
        S.EVENT: pd.Series([None] * n, dtype=object), S.AMOUNT: np.full(n, np.nan),
        S.SOURCE_FILE: pd.Series(["f.csv"] * n, dtype="str"), S.SOURCE_LINE: np.arange(2, n + 2, dtype="int64"),
        F.ORDER: np.arange(n, dtype="int64"), "_tz": pd.Series(["UTC"] * n, dtype=object),
        F.FILE_ORDER: np.asarray(fo, dtype="int64"),
    })


_ROWS = st.lists(st.tuples(_CONV, _TS, st.sampled_from(["好", "好的", ""]), st.sampled_from(["c1", "c2"]),
                           st.integers(0, 1)), min_size=1, max_size=30)


@FAST
@given(rows=_ROWS)
def test_seq_order_equals_stable_sort(rows: list[tuple[Any, ...]]) -> None:
    df = _staged(rows)
    order = F._seq_order(df)
    assert order is not None
    ref = df.sort_values(F.SEQ_KEYS, kind="stable", na_position="last")
    assert order.tolist() == ref.index.tolist()
    assert F._seq_order(df.astype({S.CONVERSATION_ID: object})) is None  # other dtypes: the sort decides


def _drop_duplicates_reference(staged: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every timed row compared with every earlier one on all message values, text included."""
    keys = [c for c in staged.columns if c not in {S.SOURCE_FILE, S.SOURCE_LINE, F.ORDER, F.FILE_ORDER, "_tz"}]
    seen: dict[tuple[Any, ...], int] = {}
    dup: list[int] = []
    orig: list[int] = []
    if staged[S.TS].notna().sum() < 2:
        return staged, pd.DataFrame({"dup": [], "orig": []}, dtype="int64")
    for i, row in enumerate(staged[keys].astype(object).itertuples(index=False)):
        if pd.isna(row[keys.index(S.TS)]):
            continue
        key = tuple(None if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and np.isnan(v))
                    else v for v in row)
        if key in seen:
            dup.append(i)
            orig.append(seen[key])
        else:
            seen[key] = i
    return staged.drop(index=dup).reset_index(drop=True), pd.DataFrame({"dup": dup, "orig": orig})


@FAST
@given(rows=_ROWS)
def test_duplicate_candidates_from_codes_miss_nothing(rows: list[tuple[Any, ...]]) -> None:
    df = _staged(rows)
    kept, rej = drop_duplicates(df)
    ref_kept, ref = _drop_duplicates_reference(df)
    pd.testing.assert_frame_equal(kept, ref_kept)
    assert rej[S.REJECT_LINE].tolist() == (ref["dup"] + 2).tolist()
    assert [r.split(":")[0] for r in rej[S.REJECT_RAW]] == [f"duplicate of line {o + 2}" for o in ref["orig"]]


# ------------------------------------------------------------------------------------------- shops

@FAST
@given(cells=st.lists(st.one_of(st.none(), st.sampled_from(["", "tmall_yuejia", "悦家家居旗舰店", "美研保養旗艦館", "x", " "])),
                      min_size=1, max_size=20), dtype=st.sampled_from(["str", "string", "object"]))
def test_resolve_shops_by_take_equals_map_then_astype(cells: list[str | None], dtype: str) -> None:
    shops = load_shops(RULES)
    values = pd.Series(cells, dtype=dtype)
    lookup: dict[str, str] = {}
    for sid, shop in shops.items():
        lookup[shop.name.strip()] = sid
        lookup[sid] = sid
    pd.testing.assert_series_equal(F.resolve_shops(values, shops), F.map_values(values, lookup).astype("string"))
