"""Generic profile importer for CSV / TSV / XLSX / JSON / JSONL exports.

Reading turns a file into a table of raw cells with 1-based source lines; applying a
profile maps the export's headers, role and message-type values onto the canonical schema.
"""

from __future__ import annotations

import csv
import io
import json
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qa_inspect import schema as S
from qa_inspect.config import Shop
from qa_inspect.errors import InputError, UsageError
from qa_inspect.ingest import frame as F
from qa_inspect.ingest.base import FileImport, FileInfo, ImportContext
from qa_inspect.ingest.encoding import decode_bytes
from qa_inspect.ingest.profiles import ImportProfile

LINE = "_line"
# One chat message may be a pasted document; the csv module's default 128 KiB cell limit would
# fail the whole file. Cells are bounded by the file size anyway.
csv.field_size_limit(2**31 - 1)


class RawTable:
    """Cells as read (object dtype), the header, source lines and structural rejects."""

    def __init__(self, header: list[str], cells: pd.DataFrame, rejects: F.Rejects, data_rows: int,
                 encoding: str | None) -> None:
        self.header, self.cells, self.rejects = header, cells, rejects
        self.data_rows, self.encoding = data_rows, encoding


def _sniff_delimiter(text: str) -> str:
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    return "\t" if first.count("\t") > first.count(",") else ","


def _fast_delimited(path: Path, text: str | bytes, delim: str, encoding: str | None) -> RawTable | None:
    """pandas' C parser for well-formed files; None (-> exact slow path) when anything is irregular.

    Text is checked as its UTF-8 bytes: every check below looks for ASCII bytes only, which
    UTF-8 never uses inside a multi-byte character, so bytes and text agree.
    Source lines are exact: the header is line 1, there are no blank lines, and a record starts
    one line after the previous record's start plus the newlines inside its quoted cells.
    """
    if isinstance(text, str):
        try:
            text = text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: the csv module reads it
            return None
    if not text or text[:1] in (b"\r", b"\n") or (b"\r" in text and b"\n\r\n" in text):
        return None
    # Newline positions in one vectorised pass: their count, and a blank line ('\n\n') as two
    # adjacent ones (a substring search is slow with a newline every ~100 bytes).
    nl = np.flatnonzero(np.frombuffer(text, dtype=np.uint8) == 10)
    if len(nl) > 1 and bool(np.any(np.diff(nl) == 1)):
        return None
    try:
        # Bytes, not StringIO: pandas re-encodes a text buffer chunk by chunk, which is 10x slower.
        # index_col=False: otherwise pandas silently turns the first column into the index when
        # every data row has one field more than the header (a trailing delimiter).
        # pandas warns (ParserWarning) when it drops fields: then the slow path rejects the rows.
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            cells = pd.read_csv(io.BytesIO(text), encoding="utf-8", sep=delim, dtype=str,
                                keep_default_na=False, na_filter=True, na_values=[], skip_blank_lines=False,
                                engine="c", index_col=False)
    except (pd.errors.ParserError, pd.errors.ParserWarning, ValueError):
        return None
    header = [str(h).strip() for h in cells.columns]
    if len(set(header)) != len(header) or any(h.startswith("Unnamed: ") or h == "" for h in header):
        return None
    cells.columns = header
    if not _field_counts_ok(text, delim, len(header), len(cells), newlines=len(nl)):
        return None
    extra = pd.Series(0, index=cells.index, dtype="int64")
    # The text ends with one '\n' and has no blank line, so the header and each record end with
    # their own '\n': newlines beyond those are inside cells. None beyond -> no column to search.
    in_cells = len(nl) != len(cells) + 1
    for h in header if in_cells else []:
        col = cells[h]
        if col.str.contains("\n", regex=False).any():
            extra = extra + col.str.count("\n").astype("int64")
    lines = 2 + np.arange(len(cells), dtype="int64") + (extra.cumsum() - extra).to_numpy()
    cells[LINE] = lines
    return RawTable(header, cells, F.Rejects(str(path)), len(cells), encoding)


_QUOTED = re.compile(rb'"(?:[^"]|"")*"')


def _field_counts_ok(text: bytes, delim: str, n_fields: int, n_records: int, newlines: int | None = None) -> bool:
    """True when every record has exactly the header's field count.

    pandas pads a short row with '' (indistinguishable from empty trailing cells). Long rows make
    it raise or warn (-> slow path) already, so with none of those, "no short row" is "the raw
    text, quoted sections removed, has one line per record and the full delimiter count".
    Any disagreement with pandas' reading -> slow path, which reports the row.
    """
    sep = delim.encode("utf-8")
    newlines, delims = text.count(b"\n") if newlines is None else newlines, text.count(sep)
    last = (-1, -1)
    if b'"' in text:  # counts inside quoted sections do not count; no copy of the whole text
        for m in _QUOTED.finditer(text):
            q = m.group()
            newlines -= q.count(b"\n")
            delims -= q.count(sep)
            last = m.span()
    # the text with quoted sections removed ends with a newline (as _QUOTED.sub would show)
    ends_nl = text[:last[0]].endswith(b"\n") if last[1] == len(text) else text.endswith(b"\n")
    lines = newlines + (0 if ends_nl else 1)
    return lines == n_records + 1 and delims == (n_records + 1) * (n_fields - 1)


def read_delimited_fast(path: Path, data: bytes, delim: str, encoding: str | None) -> RawTable | None:
    """The C-parser reading of UTF-8 bytes with '\\n' newlines, or None when anything is irregular
    (then ``read_delimited`` on the decoded text gives the exact reading). The streaming ingest
    calls this on a chunk's bytes: no decode and re-encode of text that is already UTF-8."""
    one_nl = data.endswith(b"\n") and not data.endswith((b"\n\n", b"\n\r\n", b"\r\r\n"))
    return _fast_delimited(path, data if one_nl else data.rstrip(b"\r\n") + b"\n", delim, encoding)


_ARROW_BLOCK = 8 << 20  # Arrow CSV block size: a 32 MB chunk arrives as a few column chunks


def read_delimited_arrow(path: Path, data: bytes, header: list[str], delim: str,
                         encoding: str | None) -> RawTable | None:
    """The data records of a UTF-8 chunk whose header row is known, read by Arrow's CSV parser
    straight from the bytes (no newline rewrite, no header copy, no Python str per cell), laid out
    as ``read_delimited_fast`` lays out the header row plus these bytes. None when anything is
    irregular (the caller then takes the byte-rewriting path, which decides exactly).

    Only for bytes in which the planning scan proved every quote to open at a field start or close
    at a field end and found no lone '\\r': CSV is then unambiguous, '\\r\\n' ends a record as '\\n'
    does and, inside a quoted cell, becomes '\\n' as ``normalise_newlines`` makes it. Arrow refuses a
    record with too few or too many fields, but reads a blank line as a record of empty cells: the
    delimiters that are not inside cells must be exactly n_fields - 1 per record (hence at least
    two fields)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    n_fields = len(header)
    if (n_fields < 2 or not data.endswith(b"\n") or data[:1] in (b"\r", b"\n")
            or len(set(header)) != n_fields or any(h == "" or h.startswith("Unnamed: ") for h in header)):
        return None
    names = [f"f{i}" for i in range(n_fields)]  # Arrow's names; the header text is not parsed again
    try:
        tb = pacsv.read_csv(
            pa.py_buffer(data),
            read_options=pacsv.ReadOptions(use_threads=False, column_names=names, block_size=_ARROW_BLOCK),
            parse_options=pacsv.ParseOptions(delimiter=delim, quote_char='"', double_quote=True, escape_char=False,
                                             newlines_in_values=True, ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()), null_values=[],
                                                 strings_can_be_null=False, quoted_strings_can_be_null=False))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    n = tb.num_rows
    in_cells = sum(pc.sum(pc.count_substring(col, delim)).as_py() or 0 for col in tb.columns)
    if n == 0 or data.count(delim.encode("utf-8")) - in_cells != n * (n_fields - 1):
        return None  # a blank line
    newlines = data.count(b"\n")
    dtype = pd.StringDtype("pyarrow", na_value=np.nan)  # what read_csv(dtype=str) gives
    string_array = dtype.construct_array_type()
    cols = {h: pd.Series(string_array(tb.column(i).cast(pa.large_string()), dtype=dtype))
            for i, h in enumerate(header)}
    del tb
    extra = np.zeros(n, dtype="int64")
    if newlines != n:  # newlines beyond the record ends are inside quoted cells
        for h, col in cols.items():
            if col.str.contains("\n", regex=False).any():
                if col.str.contains("\r", regex=False).any():  # only as '\r\n' (no lone '\r')
                    col = cols[h] = col.str.replace("\r\n", "\n", regex=False)
                extra = extra + col.str.count("\n").to_numpy(dtype="int64")
    cells = pd.DataFrame(cols)
    cells.columns = header
    cells[LINE] = 2 + np.arange(n, dtype="int64") + (np.cumsum(extra) - extra)
    return RawTable(list(header), cells, F.Rejects(str(path)), n, encoding)


def read_delimited(path: Path, text: str, delimiter: str | None, encoding: str | None) -> RawTable:
    """CSV/TSV; quoted multi-line cells keep their true starting line (csv module when irregular)."""
    file = str(path)
    delim = delimiter or _sniff_delimiter(text)
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: the csv module reads it
        fast = None
    else:
        fast = read_delimited_fast(path, data, delim, encoding)
        del data
    if fast is not None:
        return fast
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim)
    rejects = F.Rejects(file)
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    prev = 0
    data_rows = 0
    try:
        for rec in reader:
            start = prev + 1
            prev = reader.line_num
            # A blank line is no record; a line of bare delimiters (",,,,") is an exported empty
            # row: a record (rejected later), as the fast path counts it.
            if not rec or (header is None and all(not c.strip() for c in rec)):
                continue
            if header is None:
                header = [c.strip() for c in rec]
                continue
            data_rows += 1
            if len(rec) != len(header):
                rejects.add(start, "(row)", F.R_FIELD_COUNT,
                            f"expected {len(header)}, got {len(rec)}: " + delim.join(rec))
                continue
            rows.append(rec)
            lines.append(start)
    except csv.Error as exc:
        raise InputError(f"malformed {'TSV' if delim == chr(9) else 'CSV'}: {exc}", file=file,
                         line=reader.line_num) from None
    if header is None:
        return RawTable([], pd.DataFrame(), rejects, 0, encoding)
    arr = np.array(rows, dtype=object).reshape(len(rows), len(header))
    cells = pd.DataFrame({h: arr[:, i] for i, h in enumerate(header)})
    cells[LINE] = np.asarray(lines, dtype="int64")
    return RawTable(header, cells, rejects, data_rows, encoding)


_MERGE = re.compile(r'<(?:\w+:)?mergeCell\s+ref="([A-Za-z]+[0-9]+):([A-Za-z]+[0-9]+)"')


def _merged_ranges(path: Path, ws: Any) -> list[tuple[int, int, int, int]]:
    """(min_col, min_row, max_col, max_row) of the sheet's merged ranges.

    Read-only worksheets do not expose merged cells, so the <mergeCell> elements are scanned in
    the sheet XML (streamed in chunks: they follow the possibly huge <sheetData>).
    """
    import zipfile

    from openpyxl.utils.cell import range_boundaries

    member = getattr(ws, "_worksheet_path", None)
    if not member:
        return []
    found: set[str] = set()
    with zipfile.ZipFile(path) as zf, zf.open(member.lstrip("/")) as fh:
        tail = ""
        while chunk := fh.read(1 << 20):
            buf = tail + chunk.decode("utf-8", errors="replace")
            found.update(f"{a}:{b}" for a, b in _MERGE.findall(buf))
            tail = buf[-200:]
    out = []
    for ref in sorted(found):
        lo_c, lo_r, hi_c, hi_r = range_boundaries(ref.upper())
        if None not in (lo_c, lo_r, hi_c, hi_r):
            out.append((int(lo_c), int(lo_r), int(hi_c), int(hi_r)))  # type: ignore[arg-type]
    return out


def _formula_cells(path: Path, sheet_name: str, lines: set[int]) -> dict[int, list[int]]:
    """Sheet row -> 0-based columns holding a formula, for the given rows (second, formula pass)."""
    import openpyxl

    wb = openpyxl.load_workbook(path, read_only=True, data_only=False)
    try:
        out: dict[int, list[int]] = {}
        for i, rec in enumerate(wb[sheet_name].iter_rows(values_only=True), start=1):
            if i in lines:
                cols = [j for j, v in enumerate(rec) if isinstance(v, str) and v.startswith("=")]
                if cols:
                    out[i] = cols
        return out
    finally:
        wb.close()


def read_xlsx(path: Path, sheet: str | None) -> RawTable:
    """Rows of one sheet. Merged ranges read as their top-left value in every cell (what the user
    sees); a formula with no cached value (a workbook written by a tool, never opened in Excel)
    is a reject naming the cell's column, not a silently empty cell."""
    import openpyxl  # imported lazily: only XLSX inputs pay for it

    file = str(path)
    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # noqa: BLE001 - openpyxl raises many types for broken files
        raise InputError(f"cannot open as XLSX: {exc}", file=file) from None
    try:
        if sheet is not None:
            if sheet not in wb.sheetnames:
                raise InputError(f"no sheet '{sheet}' (sheets: {', '.join(wb.sheetnames)})", file=file)
            ws = wb[sheet]
        else:
            ws = wb[wb.sheetnames[0]]
        sheet_name = ws.title
        try:
            merged = _merged_ranges(path, ws)
            grid = [list(rec) for rec in ws.iter_rows(values_only=True)]
        except Exception as exc:  # noqa: BLE001 - a corrupt sheet part fails lazily, while iterating
            raise InputError(f"cannot read sheet '{sheet_name}' as XLSX: {exc}", file=file) from None
    finally:
        wb.close()
    for lo_c, lo_r, hi_c, hi_r in merged:
        if lo_r > len(grid):
            continue
        anchor_row = grid[lo_r - 1]
        value = anchor_row[lo_c - 1] if lo_c - 1 < len(anchor_row) else None
        for r in range(lo_r, min(hi_r, len(grid)) + 1):
            row = grid[r - 1]
            for c in range(lo_c, hi_c + 1):
                if c - 1 < len(row) and (r, c) != (lo_r, lo_c):
                    row[c - 1] = value
    header: list[str] | None = None
    rows: list[tuple[Any, ...]] = []
    lines: list[int] = []
    for i, rec_list in enumerate(grid, start=1):
        if all(v is None or (isinstance(v, str) and not v.strip()) for v in rec_list):
            continue
        if header is None:
            header = ["" if v is None else str(v).strip() for v in rec_list]
            continue
        rec = tuple(rec_list[:len(header)]) + (None,) * (len(header) - len(rec_list))
        rows.append(rec)
        lines.append(i)
    rejects = F.Rejects(file)
    if header is None:
        return RawTable([], pd.DataFrame(), rejects, 0, None)
    data_rows = len(rows)
    with_none = {ln for ln, r in zip(lines, rows, strict=True) if any(v is None for v in r)}
    if with_none:
        try:
            formulas = _formula_cells(path, sheet_name, with_none)
        except Exception:  # noqa: BLE001 - the values pass worked; the formula pass is best effort
            formulas = {}
        keep = []
        for k, (ln, r) in enumerate(zip(lines, rows, strict=True)):
            cols = [j for j in formulas.get(ln, []) if j < len(header) and r[j] is None]
            if cols:
                rejects.add(ln, header[cols[0]], F.R_FORMULA,
                            ",".join("" if v is None else str(v) for v in r))
            else:
                keep.append(k)
        rows, lines = [rows[k] for k in keep], [lines[k] for k in keep]
    cells = pd.DataFrame({h: pd.Series([r[j] for r in rows], dtype=object) for j, h in enumerate(header)})
    cells[LINE] = np.asarray(lines, dtype="int64")
    return RawTable(header, cells, rejects, data_rows, None)


def read_json_records(path: Path, text: str, jsonl: bool, encoding: str | None) -> RawTable:
    """JSON (array of objects; line = record number) or JSONL (line = physical line)."""
    file = str(path)
    rejects = F.Rejects(file)
    recs: list[dict[str, Any]] = []
    lines: list[int] = []
    data_rows = 0
    if jsonl:
        for i, ln in enumerate(text.split("\n"), start=1):  # not splitlines(): U+2028 is valid in JSON
            if not ln.strip():
                continue
            data_rows += 1
            try:
                obj = json.loads(ln)
            except json.JSONDecodeError as exc:
                rejects.add(i, "(line)", F.R_BAD_JSON, f"{exc.msg}: {ln}")
                continue
            except RecursionError:
                rejects.add(i, "(line)", F.R_BAD_JSON, f"nested too deeply: {ln}")
                continue
            if not isinstance(obj, dict):
                rejects.add(i, "(line)", F.R_BAD_JSON, f"not an object: {ln}")
                continue
            recs.append(obj)
            lines.append(i)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"invalid JSON: {exc.msg}", file=file, line=exc.lineno) from None
        except RecursionError:
            raise InputError("invalid JSON: nested too deeply", file=file) from None
        if isinstance(data, dict):
            data = next((v for v in data.values() if isinstance(v, list)), [data])
        if not isinstance(data, list):
            raise InputError("expected a JSON array of message objects", file=file, line=1)
        for i, obj in enumerate(data, start=1):
            data_rows += 1
            if not isinstance(obj, dict):
                rejects.add(i, "(record)", F.R_BAD_JSON, f"record {i} is not an object")
                continue
            recs.append(obj)
            lines.append(i)
    header: list[str] = []
    for r in recs:
        for k in r:
            if k not in header:
                header.append(k)
    cells = pd.DataFrame({h: pd.Series([r.get(h) for r in recs], dtype=object) for h in header})
    cells[LINE] = np.asarray(lines, dtype="int64")
    return RawTable(header, cells, rejects, data_rows, encoding)


def read_table(path: Path, fmt: str, ctx: ImportContext, sheet: str | None = None) -> RawTable:
    if fmt == "xlsx":
        return read_xlsx(path, sheet)
    text, enc = decode_bytes(path.read_bytes(), file=str(path), encoding=ctx.encoding)  # bytes freed at once
    if fmt in ("json", "jsonl"):
        return read_json_records(path, text, fmt == "jsonl", enc)
    delim = {"csv": ",", "tsv": "\t"}.get(fmt)
    return read_delimited(path, text, delim, enc)


_OPTIONAL = ("agent_id", "sku", "message_type", "amount")


def _needed(prof: ImportProfile, fmt: str) -> set[str]:
    """Headers a file must have for ``prof``: JSON omits null keys, so its optional fields may be absent."""
    mapped = prof.columns.mapped()
    if fmt in ("json", "jsonl"):
        return {h for k, h in mapped.items() if k not in _OPTIONAL}
    return set(mapped.values())


def choose_profile(table: RawTable, fmt: str, ctx: ImportContext, file: str) -> tuple[str, ImportProfile]:
    """``--profile`` if given, else the profile whose mapped headers all appear in the file."""
    if ctx.profile:
        if ctx.profile not in ctx.profiles:
            known = ", ".join(sorted(ctx.profiles)) or "(none)"
            raise UsageError(f"unknown import profile '{ctx.profile}'; known: {known}")
        prof = ctx.profiles[ctx.profile]
        missing = sorted(_needed(prof, fmt) - set(table.header))
        if missing:
            raise InputError(f"profile '{ctx.profile}' expects columns {missing} that the header row lacks "
                             f"(header: {table.header}); wrong profile or wrong encoding?", file=file, line=1)
        return ctx.profile, prof
    family = {"csv": {"csv", "tsv"}, "tsv": {"csv", "tsv"}, "xlsx": {"xlsx"}, "json": {"json", "jsonl"},
              "jsonl": {"json", "jsonl"}}[fmt]
    header = set(table.header)
    matches = [(len(p.columns.mapped()), name, p) for name, p in ctx.profiles.items()
               if p.format in family and _needed(p, fmt) <= header]
    if not matches:
        raise InputError(
            f"the header row matches no import profile (header: {table.header[:12]}). A wrong encoding "
            "gives garbled headers; otherwise pass --profile NAME or add rules/import_profiles/NAME.yaml",
            file=file, line=1)
    matches.sort(key=lambda m: (-m[0], m[1]))
    if len(matches) > 1 and matches[0][0] == matches[1][0]:
        raise UsageError(f"{file}: header matches several import profiles "
                         f"({', '.join(m[1] for m in matches)}); pass --profile NAME")
    return matches[0][1], matches[0][2]


def apply_profile(table: RawTable, prof: ImportProfile, shops: dict[str, Shop], file: str) -> pd.DataFrame:
    """Map raw cells to staged message columns; rows that cannot be used go to table.rejects."""
    out, keep = map_profile(table, prof, shops, file)
    return out[keep].reset_index(drop=True)


def map_profile(table: RawTable, prof: ImportProfile, shops: dict[str, Shop],
                file: str) -> tuple[pd.DataFrame, np.ndarray]:
    """``apply_profile`` before the rejected rows leave: every row mapped (index of the cells) and
    the mask of rows kept; the rejects are recorded. The streaming spill takes the kept rows in
    bucket order with one take instead of a filter and then a reorder."""
    cols = prof.columns
    c = table.cells
    for h in cols.mapped().values():
        if h not in c.columns:  # optional JSON key absent from every record
            c[h] = pd.Series([None] * len(c), index=c.index, dtype=object)
    n = len(c)
    idx = c.index

    def cell(name: str | None) -> pd.Series:
        if name is None:
            return pd.Series([""] * n, index=idx, dtype=object)
        return F.to_text(c[name])

    if cols.shop is not None:
        shop_id = F.resolve_shops(cell(cols.shop), shops)
    else:
        shop_id = pd.Series([prof.shop_id] * n, index=idx, dtype="string")
    shop_bad = shop_id.isna().to_numpy()

    role_raw = cell(cols.role)
    role = F.map_values(role_raw, prof.roles)
    role_bad = role.isna().to_numpy()

    # Text is kept as written (not stripped): evidence offsets point into it.
    text = c[cols.text]
    if text.dtype == object:
        text = text.map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
    text = text.fillna("").astype("str")

    kind = pd.Series(["text"] * n, index=idx, dtype=object)
    type_bad = np.zeros(n, dtype=bool)
    if cols.message_type is not None:
        mt = cell(cols.message_type)
        mapped = F.map_values(mt, prof.message_types)
        type_bad = (mapped.isna() & (mt != "")).to_numpy()
        kind = mapped.where(mapped.notna(), "text")
    event = kind.where(kind.isin(list(S.EVENTS)), None)
    for prefix, ev in prof.event_text_prefixes.items():
        hit = text.str.startswith(prefix) & event.isna()
        event = event.where(~hit, ev)

    tz = F.shop_timezones(shop_id, shops, prof.timezone)
    ts_cells = c[cols.ts]
    ts = F.parse_times(ts_cells, tz, prof.time_format)
    ts_empty = F.to_text(ts_cells).eq("").to_numpy()
    ts_bad = ts.isna().to_numpy()

    if cols.amount is not None:
        amount, amount_bad_s = F.parse_amounts(c[cols.amount])
        amount_bad = amount_bad_s.to_numpy()
    else:
        amount = pd.Series(np.nan, index=idx, dtype="float64")
        amount_bad = np.zeros(n, dtype=bool)

    text_empty = (text.str.strip().eq("") & event.isna()).to_numpy()
    customer = cell(cols.customer_id)
    conv_raw = cell(cols.conversation_id) if cols.conversation_id else None
    customer_bad = np.zeros(n, dtype=bool)
    conv_bad = np.zeros(n, dtype=bool)
    if conv_raw is None:
        customer_bad = customer.eq("").to_numpy()
    else:
        conv_bad = conv_raw.eq("").to_numpy()

    checks = [
        (shop_bad, cols.shop or "shop_id", F.R_UNKNOWN_SHOP),
        (role_bad, cols.role, F.R_UNKNOWN_ROLE),
        (type_bad, cols.message_type or "", F.R_UNKNOWN_TYPE),
        (ts_bad & ts_empty, cols.ts, F.R_NO_TIME),
        (ts_bad & ~ts_empty, cols.ts, F.R_BAD_TIME),
        (amount_bad, cols.amount or "", F.R_BAD_AMOUNT),
        (text_empty, cols.text, F.R_EMPTY_TEXT),
        (customer_bad, cols.customer_id, F.R_NO_CUSTOMER),
        (conv_bad, cols.conversation_id or "", F.R_NO_CONVERSATION),
    ]
    rejected = np.zeros(n, dtype=bool)
    raw_cols = [h for h in table.header if h in c.columns]
    hits: list[tuple[np.ndarray, str, str]] = []
    for mask, field_name, reason in checks:
        m = mask & ~rejected
        if m.any():
            hits.append((np.flatnonzero(m), field_name, reason))
            rejected |= m
    if hits:
        # The few rejected rows are taken and rendered once (rendering is per cell), then split.
        where = np.flatnonzero(rejected)
        rows = c.iloc[where]
        lines, raw = rows[LINE], F.raw_rows(rows, raw_cols)
        for pos, field_name, reason in hits:
            sel = np.searchsorted(where, pos)
            table.rejects.add_many(lines.iloc[sel], field_name, reason, raw.iloc[sel])
    keep = ~rejected

    auto = np.zeros(n, dtype=bool)
    for prefix in prof.auto_reply_prefixes:
        auto |= text.str.lstrip().str.startswith(prefix).to_numpy()
    auto |= kind.eq("auto_reply").to_numpy()
    role = role.where(~(auto & role.eq("agent").to_numpy()), "bot")
    auto |= role.eq("bot").to_numpy()

    platform = F.map_values(shop_id, {sid: s.platform for sid, s in shops.items()})
    if prof.platform:
        platform = platform.fillna(prof.platform)
    platform = platform.fillna("other")

    conv = pd.Series(pd.NA, index=idx, dtype="string")
    if conv_raw is not None:
        conv = (shop_id.astype(str) + ":" + conv_raw).astype("string")
    agent = cell(cols.agent_id).replace("", None)

    out = pd.DataFrame({
        S.PLATFORM: platform, S.SHOP_ID: shop_id, S.CONVERSATION_ID: conv, S.TS: ts, S.ROLE: role,
        S.AGENT_ID: agent, S.CUSTOMER_ID: customer.replace("", None), S.TEXT: text,
        S.SKU: cell(cols.sku).replace("", None), S.IS_AUTO_REPLY: auto, S.EVENT: event, S.AMOUNT: amount,
        S.SOURCE_FILE: file, S.SOURCE_LINE: c[LINE].to_numpy(), F.ORDER: np.arange(n), "_tz": tz,
    })
    return out, keep


def import_table(path: Path, ctx: ImportContext, fmt: str) -> FileImport:
    """The generic importer: read, pick the profile, map; reports per-file accounting."""
    file = str(path)
    sheet = None
    if fmt == "xlsx" and ctx.profile and ctx.profile in ctx.profiles:
        sheet = ctx.profiles[ctx.profile].sheet
    elif fmt == "xlsx":
        sheet = _xlsx_sheet(path, ctx)
    table = read_table(path, fmt, ctx, sheet)
    info = FileInfo(path=file, format=fmt, encoding=table.encoding, data_rows=table.data_rows)
    if not table.header:
        info.warnings.append("empty file (no header row)")
        return FileImport(S.empty_messages(), table.rejects.frame(), info)
    name, prof = choose_profile(table, fmt, ctx, file)
    info.profile = name
    staged = apply_profile_chunked(table, prof, ctx.shops, file)
    return FileImport(staged, table.rejects.frame(), info)


PROFILE_CHUNK = 50_000  # rows mapped at a time: the per-cell Python objects of mapping stay bounded


def apply_profile_chunked(table: RawTable, prof: ImportProfile, shops: dict[str, Shop], file: str,
                          chunk: int = PROFILE_CHUNK) -> pd.DataFrame:
    """apply_profile over row slices of a large table: every check and mapping there is per row
    (time formats are fixed, not inferred from the column), so the result is the same as one call,
    while the transient per-cell objects are those of one slice, not of the whole export."""
    c = table.cells
    if len(c) <= chunk:
        return apply_profile(table, prof, shops, file)
    for h in prof.columns.mapped().values():
        if h not in c.columns:
            c[h] = pd.Series([None] * len(c), index=c.index, dtype=object)
    out: list[pd.DataFrame] = []
    for start in range(0, len(c), chunk):
        part = RawTable(table.header, c.iloc[start:start + chunk], table.rejects, 0, table.encoding)
        staged = apply_profile(part, prof, shops, file)
        staged[F.ORDER] = staged[F.ORDER] + start
        out.append(staged)
    return pd.concat(out, ignore_index=True)


def _xlsx_sheet(path: Path, ctx: ImportContext) -> str | None:
    """Without --profile: the first xlsx profile's sheet that the workbook has, else the first sheet."""
    import openpyxl

    try:
        wb = openpyxl.load_workbook(path, read_only=True)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot open as XLSX: {exc}", file=str(path)) from None
    try:
        names = set(wb.sheetnames)
    finally:
        wb.close()
    for _, p in sorted(ctx.profiles.items()):
        if p.format == "xlsx" and p.sheet in names:
            return p.sheet
    return None
