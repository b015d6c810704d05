"""Output files that are safe to create from hostile ids and safe to open in a spreadsheet.

Agent ids, shop ids and run ids come from exported chats and config; they may contain ``../``,
absolute paths, NUL bytes, Windows device names or hundreds of bytes. :func:`safe_path` turns
each id into one file-name component inside ``base_dir`` and keeps distinct ids distinct (a hash
of the original is appended whenever sanitising changed anything, or the name could collide on a
case-insensitive file system). :func:`write_csv_safe` writes CSV for Excel/WPS users: UTF-8 with
BOM (so Chinese shows correctly), formula injection neutralised, and atomically (a crash never
leaves a half-written file where the last good one was).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import numbers
import os
import re
import tempfile
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qa_inspect.errors import BugError

MAX_NAME_BYTES = 120  # well below the 255-byte limit of common file systems, leaves room for suffixes
_HASH_LEN = 10
_HASHED = re.compile(rf"_[0-9a-f]{{{_HASH_LEN}}}$")
_SUFFIX = re.compile(r"^(\.[A-Za-z0-9]{1,10})*$")
_WINDOWS_RESERVED = frozenset({"con", "prn", "aux", "nul", "conin$", "conout$",
                               *(f"com{i}" for i in "0123456789¹²³"),
                               *(f"lpt{i}" for i in "0123456789¹²³")})
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_LEN]


def _truncate_utf8(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore")


def safe_component(ident: object) -> str:
    """One safe file-name component for ``ident`` (no separators, no dots-only, no device names).

    Keeps letters and digits of any script plus ``_ . -``; anything else becomes ``_``. If the
    result differs from the input, or the input has upper-case letters (``Con`` vs ``con`` on
    Windows/macOS) or already ends like a hashed name, ``_<sha256[:10]>`` of the original is
    appended, so two distinct ids never map to the same name.
    """
    raw = str(ident)
    norm = unicodedata.normalize("NFC", raw)
    clean = "".join(ch if (ch.isalnum() and ch.isprintable()) or ch in "_.-" else "_" for ch in norm)
    clean = re.sub(r"[._\-]*_[._\-]*", "_", clean).strip("._ -")
    if clean.split(".")[0].lower() in _WINDOWS_RESERVED:
        clean = "_" + clean  # CON.txt is as reserved as CON
    clean = _truncate_utf8(clean, MAX_NAME_BYTES - _HASH_LEN - 1)
    if clean == raw and raw.lower() == raw and not _HASHED.search(raw) and clean:
        return clean
    return f"{clean or 'id'}_{_digest(raw)}"


def safe_path(base_dir: Path | str, *parts: object, suffix: str = "") -> Path:
    """``base_dir/<safe part>/.../<safe last part><suffix>``, guaranteed to lie inside ``base_dir``.

    Each part is one component (``a/b`` does NOT create a sub-folder). ``suffix`` such as
    ``.html`` is appended to the last component as given (it must be ``.ext`` pieces).
    """
    if not parts:
        raise BugError("safe_path needs at least one name part")
    if not _SUFFIX.match(suffix):
        raise BugError(f"safe_path: suffix {suffix!r} is not of the form .ext")
    base = Path(base_dir)
    names = [safe_component(p) for p in parts]
    names[-1] += suffix
    path = base.joinpath(*names)
    root = os.path.realpath(base)
    if os.path.commonpath([root, os.path.realpath(path)]) != root:
        raise BugError(f"output path for {parts!r} escapes {base}")
    return path


# --- CSV -------------------------------------------------------------------------------------

def neutralise_formula(value: Any) -> Any:
    """``'`` before text a spreadsheet would run as a formula; numbers, dates, NA unchanged."""
    if value is None or isinstance(value, (numbers.Number, _dt.date, _dt.datetime, _dt.timedelta)):
        return value
    if not isinstance(value, str):
        try:
            if pd.isna(value):
                return value
        except (TypeError, ValueError):
            pass
        value = str(value)
    if value in ("+", "-"):  # a lone sign (finding polarity) is not a formula in any spreadsheet
        return value
    return "'" + value if value.startswith(FORMULA_PREFIXES) else value


FORMULA_RE = "^[=+\\-@\t\r]"


def neutralise_arrow(arr: Any) -> Any:
    """:func:`neutralise_formula` over a whole Arrow string column in C++ (the per-cell Python
    call cost 3.4 s per 100k findings); nulls stay null, other column types are returned as is."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        return arr
    risky = pc.and_(pc.match_substring_regex(arr, FORMULA_RE),
                    pc.invert(pc.is_in(arr, value_set=pa.array(["+", "-"], type=arr.type))))
    return pc.if_else(risky, pc.binary_join_element_wise(pa.scalar("'", arr.type), arr, pa.scalar("", arr.type)),
                      arr)


def _is_plain_column(s: pd.Series) -> bool:
    return bool(pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)
                or pd.api.types.is_datetime64_any_dtype(s) or pd.api.types.is_timedelta64_dtype(s))


def _neutralise_series(s: pd.Series) -> pd.Series:
    """Text columns in C++ (neutralise_arrow); columns holding anything but text cell by cell."""
    import pyarrow as pa

    try:
        arr = pa.array(s, type=pa.large_string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return s.astype(object).map(neutralise_formula)
    # Arrow-backed, not object: to_csv formats a few thousand rows at a time, while a column of
    # Python strings for every row cost ~60 MB per 345k conversations at once
    return pd.Series(pd.arrays.ArrowStringArray(neutralise_arrow(arr)), index=s.index)


def _utc_datetime_text(s: pd.Series, whole: bool | None = None) -> pd.Series | None:
    """A UTC datetime column as the text ``to_csv`` writes for it, built in numpy (pandas formats
    tz-aware values one Timestamp at a time: half the CPU of conversations.csv). pandas' rule: whole
    seconds when no value has a fraction, else every value with the unit's full precision; NaT as
    empty. None for anything else (other zones format per value offset: left to pandas).
    ``whole``: that column-wide decision, made by the caller over the whole column (chunks)."""
    if not _is_utc(s):
        return None
    if whole is None:
        whole = _whole_seconds(s)
    if whole:  # the usual case, in Arrow strings (see _neutralise_series on memory)
        import pyarrow as pa
        import pyarrow.compute as pc

        secs = pa.array(s, from_pandas=True).cast(pa.timestamp("s", tz="UTC"))
        text_arrow = pc.strftime(secs, format="%Y-%m-%d %H:%M:%S+00:00").cast(pa.large_string())
        return pd.Series(pd.arrays.ArrowStringArray(text_arrow), index=s.index)
    naive = s.dt.tz_localize(None).to_numpy()
    text = np.char.add(np.char.replace(np.datetime_as_string(naive, unit=s.dtype.unit), "T", " "), "+00:00")
    out = pd.Series(text.astype(object), index=s.index, dtype=object)
    out[np.isnat(naive)] = ""
    return out


def _is_utc(s: pd.Series) -> bool:
    return isinstance(s.dtype, pd.DatetimeTZDtype) and str(s.dtype.tz) == "UTC"


def _whole_seconds(s: pd.Series) -> bool:
    """True when no value of a UTC datetime column has a fraction of a second (NaT ignored)."""
    naive = s.dt.tz_localize(None).to_numpy()
    ticks = naive.view("int64")[~np.isnat(naive)]
    per_second = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[s.dtype.unit]
    return bool(((ticks % per_second) == 0).all())


CSV_CHUNK_ROWS = 50_000  # rows prepared and written at a time by write_csv_safe


def _column_wide_format(s: pd.Series) -> bool:
    """Columns whose text pandas decides over the whole column (datetime precision, dates-only):
    a frame with one is written in one piece. UTC datetimes are formatted here, with the decision
    taken over the whole column."""
    dt = pd.api.types.is_datetime64_any_dtype(s) or pd.api.types.is_timedelta64_dtype(s)
    return dt and not _is_utc(s)


def _prepared(df: pd.DataFrame, whole: dict[str, bool]) -> pd.DataFrame:
    """The formula-safe copy of (a slice of) the frame that to_csv writes."""
    out = df.copy()
    for col in out.columns:
        if not _is_plain_column(out[col]):
            out[col] = _neutralise_series(out[col])
        elif (text := _utc_datetime_text(out[col], whole.get(col))) is not None:
            out[col] = text
    out.columns = [neutralise_formula(c) if isinstance(c, str) else c for c in out.columns]
    return out


def write_csv_safe(df: pd.DataFrame, path: Path | str, *, index: bool = False) -> Path:
    """Write ``df`` as UTF-8-with-BOM CSV, formula-safe, atomically (temp file + ``os.replace``).

    Text cells (and header names) starting with ``= + - @``, TAB or CR get a leading apostrophe
    so Excel/WPS/LibreOffice show them as text; numeric, boolean and date columns are written
    unchanged. The input frame is not modified.
    """
    path = Path(path)
    # Chunks of rows: a formula-safe copy of a whole 345k-conversation frame cost +150 MB at once.
    # Every cell's text depends on its own value only, except where _column_wide_format says.
    chunked = (not index and df.columns.is_unique and len(df) > CSV_CHUNK_ROWS
               and not any(_column_wide_format(df[c]) for c in df.columns))
    whole = {c: _whole_seconds(df[c]) for c in df.columns if _is_utc(df[c])} if df.columns.is_unique else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8-sig", newline="") as fh:
            if chunked:
                for k, start in enumerate(range(0, len(df), CSV_CHUNK_ROWS)):
                    _prepared(df.iloc[start:start + CSV_CHUNK_ROWS], whole).to_csv(
                        fh, index=False, header=k == 0, lineterminator="\r\n")
            else:
                out = _prepared(df, whole)
                if index and out.index.dtype == object:
                    out.index = out.index.map(neutralise_formula)
                out.to_csv(fh, index=index, lineterminator="\r\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs are shared like other files
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def _umask() -> int:
    """The process umask without changing it (os.umask sets it, racing other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022
