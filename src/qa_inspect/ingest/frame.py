"""Shared helpers of the importers: rejects, text/time/amount coercion, sessions, seq.

Everything here is vectorised over whole columns so a million-row export stays in seconds.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from qa_inspect import schema as S
from qa_inspect.config import Shop

DEFAULT_TZ = "Asia/Shanghai"
ORDER = "_order"  # source order inside one file (0-based), used for stable seq
FILE_ORDER = "_file_order"
RAW_MAX = 300

# Canonical reject reasons (summary counts are per reason; details go to field/raw).
R_EMPTY_TEXT = "empty text"
R_BAD_TIME = "unparseable time"
R_NO_TIME = "missing time"
R_UNKNOWN_ROLE = "unknown role"
R_UNKNOWN_SENDER = "unknown sender"
R_UNKNOWN_SHOP = "unknown shop"
R_BAD_AMOUNT = "unparseable amount"
R_UNKNOWN_TYPE = "unknown message type"
R_FIELD_COUNT = "wrong number of fields"
R_BAD_JSON = "invalid JSON"
R_NO_CUSTOMER = "missing customer"
R_NO_CONVERSATION = "missing conversation id"
R_OUTSIDE = "message outside a buyer section"
R_UNRECOGNISED = "unrecognised line"
R_FORMULA = "formula without a cached value"


@dataclass
class Rejects:
    """Collects rejected rows of one file (schema.REJECT_COLUMNS)."""

    file: str
    records: list[dict[str, Any]] = field(default_factory=list)
    frames: list[pd.DataFrame] = field(default_factory=list)

    def add(self, line: int, field_name: str, reason: str, raw: str) -> None:
        self.records.append({S.REJECT_FILE: self.file, S.REJECT_LINE: int(line), S.REJECT_FIELD: field_name,
                             S.REJECT_REASON: reason, S.REJECT_RAW: str(raw)[:RAW_MAX]})

    def add_many(self, lines: pd.Series, field_name: str, reason: str, raw: pd.Series) -> None:
        if len(lines):
            self.frames.append(pd.DataFrame({
                S.REJECT_FILE: self.file, S.REJECT_LINE: lines.to_numpy(dtype="int64"),
                S.REJECT_FIELD: field_name, S.REJECT_REASON: reason,
                S.REJECT_RAW: raw.astype(str).str.slice(0, RAW_MAX).to_numpy()}))

    def frame(self) -> pd.DataFrame:
        parts = [f for f in self.frames if len(f)]
        if self.records:
            parts.append(pd.DataFrame.from_records(self.records))
        if not parts:
            return S.empty_rejects()
        out = pd.concat(parts, ignore_index=True)[list(S.REJECT_COLUMNS)]
        return out.astype(S.empty_rejects().dtypes.to_dict()).sort_values(S.REJECT_LINE, kind="stable",
                                                                          ignore_index=True)


def to_text(values: pd.Series) -> pd.Series:
    """Any cell values -> stripped str; None/NaN -> ''; integral floats (Excel) lose their '.0'."""
    def one(v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            if math.isnan(v):
                return ""
            return str(int(v)) if v.is_integer() else repr(v)
        return str(v)

    if values.dtype == object:
        values = values.map(one)
    return values.astype("str").str.strip()


def map_values(values: pd.Series, mapping: dict[str, Any]) -> pd.Series:
    """``values.map(mapping)`` (None when unmapped) done once per distinct value: exports have few
    distinct roles/shops/types, so this is O(rows) in numpy instead of a Python call per row."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    table = np.array([mapping.get(u) for u in uniques] + [None], dtype=object)
    return pd.Series(table[codes], index=values.index, dtype=object)


def raw_rows(df: pd.DataFrame, columns: list[str]) -> pd.Series:
    """A readable rendering of source rows for rejects.csv."""
    if not columns:
        return pd.Series([""] * len(df), index=df.index)
    out = to_text(df[columns[0]])
    for c in columns[1:]:
        out = out + "," + to_text(df[c])
    return out


_OFFSET = re.compile(r"(?:Z|[+-]\d{2}:?\d{2})$")


def _is_str(values: pd.Series) -> bool:
    """A pandas string column (CSV reads): no per-cell type sniffing needed."""
    return values.dtype != object and pd.api.types.is_string_dtype(values.dtype)


def _split_cells(values: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series, pd.Series]:
    """Object cells (XLSX/JSON) -> (cells, is-datetime mask, is-number mask, stripped text)."""
    obj = values.astype(object)
    is_dt = obj.map(lambda v: not isinstance(v, str) and (isinstance(v, (pd.Timestamp, np.datetime64))
                                                          or hasattr(v, "isoformat")))
    is_num = obj.map(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                     and not (isinstance(v, float) and math.isnan(v)))
    text = obj.where(~(is_dt | is_num), None).map(lambda v: "" if v is None else str(v).strip())
    return obj, is_dt.astype(bool), is_num.astype(bool), text


# Times a nanosecond timestamp can hold, with a day of slack for the UTC shift. pandas parses
# strings and datetime cells at microsecond resolution, so year 9999 parses fine and then blows
# up on the cast to ns; such cells are "unparseable time" rejects instead of a crash.
_TS_MIN = pd.Timestamp("1678-01-01")
_TS_MAX = pd.Timestamp("2262-04-01")
_EXCEL_MAX_DAYS = (_TS_MAX - pd.Timestamp("1899-12-30")).days


def _ns(parsed: pd.Series, aware: bool) -> pd.Series:
    """Cast parsed datetimes to ns resolution; values outside the ns range become NaT."""
    lo, hi = (_TS_MIN.tz_localize("UTC"), _TS_MAX.tz_localize("UTC")) if aware else (_TS_MIN, _TS_MAX)
    parsed = parsed.where((parsed >= lo) & (parsed <= hi))
    return parsed.astype("datetime64[ns, UTC]" if aware else "datetime64[ns]")


def parse_times(values: pd.Series, tz_per_row: pd.Series, fmt: str | None) -> pd.Series:
    """Cells -> datetime64[ns, UTC]. Naive values are local time of the row's zone; NaT = unparseable.

    Handles datetime cells (XLSX), strings in ``fmt`` (or ISO 8601 when None), strings with an
    explicit offset, and Excel serial day numbers.
    """
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    if not len(values):
        return out
    naive = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
    fixed = np.zeros(len(values), dtype=bool)
    if _is_str(values):
        obj = values
        no = pd.Series(False, index=values.index)
        is_dt, is_num = no, no
        text = values.fillna("").str.strip()
        if fmt in _FIXED_FORMATS and values.index.is_unique:
            fixed, stamps = _fixed_times(text)
            if fixed.any():
                naive[fixed] = stamps
    else:
        obj, is_dt, is_num, text = _split_cells(values)
    # Cells the fixed-layout reading took are neither aware nor left for to_datetime.
    rest = ~fixed
    aware_mask = pd.Series(False, index=values.index)
    if rest.any():
        aware_mask[rest] = (text[rest].str.contains(_OFFSET, regex=True) & ~(is_dt | is_num)[rest]).to_numpy(bool)
    if aware_mask.any():
        parsed = pd.to_datetime(text[aware_mask], utc=True, errors="coerce",
                                format="ISO8601" if fmt is None else fmt)
        out[aware_mask] = _ns(parsed, aware=True)
    str_mask = ~aware_mask & ~is_dt & ~is_num & (text != "") & rest
    if str_mask.any():
        naive[str_mask] = _ns(pd.to_datetime(text[str_mask], errors="coerce",
                                             format="ISO8601" if fmt is None else fmt), aware=False)
    if is_dt.any():
        naive[is_dt] = _ns(pd.to_datetime(obj[is_dt], errors="coerce"), aware=False)
    if is_num.any():
        days = pd.to_numeric(obj[is_num], errors="coerce")
        ok = (days > 0) & (days < _EXCEL_MAX_DAYS)  # Excel serial days that fit a ns timestamp
        naive[is_num & ok.reindex(values.index, fill_value=False)] = (
            pd.Timestamp("1899-12-30") + pd.to_timedelta(days[ok], unit="D")).astype("datetime64[ns]")
    local = naive.notna()
    if not values.index.is_unique:
        for tz, idx in tz_per_row[local].groupby(tz_per_row[local]).groups.items():
            loc = naive[idx].dt.tz_localize(str(tz), ambiguous="NaT", nonexistent="NaT")
            out[idx] = loc.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
        return out
    # By position, per zone: the same tz_localize/tz_convert as a groupby over the labels.
    local_np = local.to_numpy(dtype=bool)
    codes, zones = pd.factorize(tz_per_row.where(local), use_na_sentinel=True)
    stamps_ns = naive.to_numpy(dtype="datetime64[ns]")
    result = np.full(len(values), np.datetime64("NaT"), dtype="datetime64[ns]")
    for k, tz in enumerate(zones):
        pos = np.flatnonzero((codes == k) & local_np)
        loc = pd.DatetimeIndex(stamps_ns[pos]).tz_localize(str(tz), ambiguous="NaT", nonexistent="NaT")
        result[pos] = loc.tz_convert("UTC").tz_localize(None).to_numpy(dtype="datetime64[ns]")
    if local_np.any():
        out[local_np] = pd.DatetimeIndex(result[local_np]).tz_localize("UTC")
    return out


# Time formats whose cells are read by fixed positions when they have exactly this layout
# (``_fixed_times``); None is ISO 8601, which reads that layout the same way.
_FIXED_FORMATS = ("%Y-%m-%d %H:%M:%S", None)


def _fixed_times(text: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(mask, naive datetime64[ns] of the masked cells) for cells laid out exactly as
    'YYYY-MM-DD HH:MM:SS' (ASCII digits) with a valid calendar date and time in years 1679-2261
    (where nanoseconds are safe): the digits are read by position in numpy, no string parsing
    per cell. Every other cell (another layout, day 31 of a short month, hour 24, second 60 ...)
    is left to ``pd.to_datetime``, so each cell's value is the one that call gives."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(text)
    none = np.zeros(n, dtype=bool), np.empty(0, dtype="datetime64[ns]")
    arr = getattr(text.array, "_pa_array", None)
    if not isinstance(arr, pa.ChunkedArray):
        return none
    cand = np.asarray(pc.equal(pc.binary_length(arr), _FIXED_LEN).to_numpy(zero_copy_only=False), dtype=bool)
    if not cand.any():
        return none
    sub = arr.filter(pa.array(cand)).combine_chunks().cast(pa.large_binary())
    offsets = np.frombuffer(sub.buffers()[1], dtype=np.int64)[sub.offset:sub.offset + len(sub) + 1]
    cells = np.frombuffer(sub.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]].reshape(len(sub), _FIXED_LEN)
    digits = cells[:, _FIXED_DIGITS] - np.uint8(48)  # uint8: bytes below '0' wrap to >= 208
    layout = np.all(digits <= 9, axis=1) & np.all(cells[:, _FIXED_SEP_AT] == _FIXED_SEPS, axis=1)
    d = digits.T.astype(np.int64)
    y = d[0] * 1000 + d[1] * 100 + d[2] * 10 + d[3]
    mo, dd, hh, mi, ss = (d[4] * 10 + d[5], d[6] * 10 + d[7], d[8] * 10 + d[9], d[10] * 10 + d[11],
                          d[12] * 10 + d[13])
    leap = (y % 4 == 0) & ((y % 100 != 0) | (y % 400 == 0))
    dim = _DAYS_IN_MONTH[np.clip(mo, 0, 12)] + (leap & (mo == 2))
    ok = (layout & (y >= 1679) & (y <= 2261) & (mo >= 1) & (mo <= 12) & (dd >= 1) & (dd <= dim)
          & (hh <= 23) & (mi <= 59) & (ss <= 59))
    if not ok.all():
        y, mo, dd, hh, mi, ss = y[ok], mo[ok], dd[ok], hh[ok], mi[ok], ss[ok]
    days = ((y - 1970) * 12 + mo - 1).astype("datetime64[M]").astype("datetime64[D]") + (dd - 1).astype("timedelta64[D]")
    stamps = days.astype("datetime64[ns]") + (hh * 3600 + mi * 60 + ss).astype("timedelta64[s]")
    mask = np.zeros(n, dtype=bool)
    mask[np.flatnonzero(cand)[ok]] = True
    return mask, stamps.astype("datetime64[ns]")


_FIXED_LEN = 19
_FIXED_DIGITS = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
_FIXED_SEP_AT = [4, 7, 10, 13, 16]
_FIXED_SEPS = np.frombuffer(b"-- ::", dtype=np.uint8)
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


_AMOUNT_JUNK = re.compile(r"[,，\s¥￥$元]|NT\$|RMB|CNY|TWD", re.IGNORECASE)


def parse_amounts(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Return (amount float64 with NaN for empty, mask of non-empty cells that are not numbers)."""
    if _is_str(values):
        obj = values
        numeric = pd.Series(False, index=values.index)
    else:
        obj = values.astype(object)
        numeric = obj.map(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                          and not (isinstance(v, float) and math.isnan(v))).astype(bool)
    text = to_text(obj)
    # Amount cells are mostly empty: clean and parse only the others (each cell on its own, so
    # the values are those of the whole column).
    filled = np.asarray(text != "", dtype=bool)
    sub = text[filled]
    if sub.str.contains(_AMOUNT_JUNK, regex=True).any():
        sub = sub.str.replace(_AMOUNT_JUNK, "", regex=True)
    sub_out = pd.to_numeric(sub.where(sub != "", None), errors="coerce").astype("float64")
    out = pd.Series(np.nan, index=values.index, dtype="float64")
    out[filled] = sub_out.to_numpy()
    if numeric.any():
        out[numeric] = obj[numeric].astype("float64")
    bad_arr = np.zeros(len(values), dtype=bool)
    bad_arr[filled] = np.asarray(sub_out.isna() & (sub != ""), dtype=bool)
    bad = pd.Series(bad_arr & ~numeric.to_numpy(dtype=bool), index=values.index)
    return out, bad


def resolve_shops(values: pd.Series, shops: dict[str, Shop]) -> pd.Series:
    """Shop display name or shop_id -> shop_id; NA when unknown. ``map_values(...).astype("string")``
    built as a take from the few distinct results (no Python str per row)."""
    lookup: dict[str, str] = {}
    for sid, shop in shops.items():
        lookup[shop.name.strip()] = sid
        lookup[sid] = sid
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    table = pd.array([lookup.get(u) for u in uniques] + [None], dtype="string")
    return pd.Series(table.take(np.where(codes < 0, len(uniques), codes)), index=values.index)


def shop_timezones(shop_ids: pd.Series, shops: dict[str, Shop], fixed: str | None = None) -> pd.Series:
    if fixed and fixed != "shop":
        return pd.Series(fixed, index=shop_ids.index, dtype=object)
    tz = {sid: s.timezone for sid, s in shops.items()}
    return map_values(shop_ids, tz).fillna(DEFAULT_TZ)


def sessionise(df: pd.DataFrame, gap_minutes: float) -> pd.Series:
    """Conversation ids for rows without one: same shop + customer, a silence > gap starts anew.

    Deterministic: ``<shop_id>:<customer>:<local start YYYYmmddTHHMMSS>`` (UTC when the shop
    timezone is unknown) so re-importing the same export gives the same ids.
    """
    if df.empty:
        return pd.Series(dtype="string", index=df.index)
    keys = [S.SHOP_ID, S.CUSTOMER_ID, S.TS, FILE_ORDER, ORDER]
    d = df[[S.SHOP_ID, S.CUSTOMER_ID, S.TS, FILE_ORDER, ORDER, "_tz"]].sort_values(keys, kind="stable")
    same_party = (d[S.SHOP_ID].eq(d[S.SHOP_ID].shift()) & d[S.CUSTOMER_ID].eq(d[S.CUSTOMER_ID].shift()))
    gap = d[S.TS].diff() > pd.Timedelta(minutes=gap_minutes)
    new = ~same_party.fillna(False).astype(bool) | gap.fillna(False).astype(bool)
    group = new.cumsum()
    start = d.groupby(group)[S.TS].transform("min")
    local = pd.Series(index=d.index, dtype=object)
    for tz, idx in d.groupby("_tz").groups.items():
        local[idx] = start[idx].dt.tz_convert(str(tz)).dt.strftime("%Y%m%dT%H%M%S")
    ids = d[S.SHOP_ID].astype(str) + ":" + d[S.CUSTOMER_ID].astype(str) + ":" + local.astype(str)
    return ids.reindex(df.index).astype("string")


SEQ_KEYS = [S.CONVERSATION_ID, S.TS, FILE_ORDER, ORDER]


def assign_seq(df: pd.DataFrame) -> pd.DataFrame:
    """Sort by conversation then time (NaT keeps source order) and number messages 0.. per conversation."""
    order = _seq_order(df)
    if order is None:
        d = df.sort_values(SEQ_KEYS, kind="stable", na_position="last")
    else:
        d = df.take(order)
    # NaT timestamps: the sort above puts them last, but JDDC/STC-3 have no times at all, so
    # source order decides; mixed NaT inside a conversation cannot happen (NaT rows are rejected).
    d = d.reset_index(drop=True)
    d[S.SEQ] = d.groupby(S.CONVERSATION_ID, sort=False).cumcount().astype("int64")
    return d


def _seq_order(df: pd.DataFrame) -> np.ndarray | None:
    """The permutation of ``df.sort_values(SEQ_KEYS, kind="stable", na_position="last")`` as one
    numpy lexsort over integer keys: conversation ids as codes in sorted order (a pandas string
    column: code point order, as the sort compares them), times as integers, NA/NaT last.
    None for other dtypes (the sort itself decides)."""
    conv, ts = df[S.CONVERSATION_ID], df[S.TS]
    if not (_is_str(conv) and isinstance(ts.dtype, pd.DatetimeTZDtype) and ts.dtype.unit == "ns"
            and df[FILE_ORDER].dtype == np.int64 and df[ORDER].dtype == np.int64):
        return None
    codes, _ = pd.factorize(conv, sort=True, use_na_sentinel=True)
    codes = np.where(codes < 0, len(codes), codes)
    t = ts.array.asi8
    t = np.where(ts.isna().to_numpy(), np.iinfo(np.int64).max, t)
    return np.lexsort((df[ORDER].to_numpy(), df[FILE_ORDER].to_numpy(), t, codes))


# The contract dtypes (a constant: the empty frame is built once, not per bucket).
MESSAGE_DTYPES: dict[str, Any] = S.empty_messages().dtypes.to_dict()


def finalize(df: pd.DataFrame) -> pd.DataFrame:
    """Project to schema.MESSAGE_COLUMNS with the contract dtypes."""
    if df.empty:
        return S.empty_messages()
    out = df[list(S.MESSAGE_COLUMNS)].copy()
    for c in (S.PLATFORM, S.SHOP_ID, S.CONVERSATION_ID, S.ROLE, S.AGENT_ID, S.CUSTOMER_ID, S.SKU,
              S.EVENT, S.SOURCE_FILE):
        out[c] = _string_or_na(out[c])
    out[S.TEXT] = df[S.TEXT].astype("string")  # text kept as written, even ''
    todo = {c: t for c, t in MESSAGE_DTYPES.items() if out[c].dtype != t}  # usually none left
    return out.astype(todo) if todo else out


def _string_or_na(values: pd.Series) -> pd.Series:
    """``values.astype("string")`` with '' as NA. Object columns of str (roles, platforms,
    events, agents: few distinct values) are converted once per distinct value and taken."""
    if values.dtype == object:
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        if all(type(u) is str for u in uniques):  # factorize merges 1 and 1.0: only plain str here
            table = pd.array([u if u != "" else None for u in uniques] + [None], dtype="string")
            return pd.Series(table.take(np.where(codes < 0, len(uniques), codes)), index=values.index)
    col = values.astype("string")
    empty = col.eq("").fillna(False)
    return col.mask(empty) if empty.any() else col
