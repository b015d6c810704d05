"""Streaming ingest: plan byte-range chunks, parse them anywhere, spill rows to key buckets.

The night is never in memory at once. ``plan_chunks`` streams through each file once (strict
encoding check, quote scan, line count) and cuts CSV/TSV/JSONL files into byte ranges that end
at a record boundary; ``parse_chunk`` imports one range with the same importer code as a whole
file (the header row is put in front of the range), so rows, rejects and line numbers are the
ones a whole-file import gives. ``spill_chunk`` writes the staged rows into buckets by
conversation key; ``load_bucket`` then deduplicates, sessionises and numbers one bucket, which
holds every row those steps need together. ``ingest_paths`` is this same code with one bucket.

UTF-8 CSV/TSV chunks of a file with regular quotes and no lone '\\r' are read by Arrow's CSV parser
straight from the bytes (``table.read_delimited_arrow``); anything it cannot prove takes the
byte-rewriting reader, and that the csv module when irregular, so the rows are the same either way.

A file whose layout the byte scan cannot prove safe to cut (a quote inside an unquoted cell, a
multi-line or duplicated header, NUL bytes, an encoding that is not ASCII-transparent, or any
decoding problem) is one chunk read by its importer, exactly as before: never a guess.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from qa_inspect import schema as S
from qa_inspect.config import load_shops
from qa_inspect.errors import BugError, InputError, UsageError, UserError
from qa_inspect.ingest import frame as F
from qa_inspect.ingest.base import FileImport, FileInfo, ImportContext
from qa_inspect.ingest.core import IMPORTERS, _assemble, collect_files, detect_format, drop_duplicates
from qa_inspect.ingest.encoding import normalise_newlines
from qa_inspect.ingest.profiles import load_profiles
from qa_inspect.ingest.table import (
    LINE,
    RawTable,
    apply_profile_chunked,
    choose_profile,
    map_profile,
    read_delimited,
    read_delimited_arrow,
    read_delimited_fast,
    read_json_records,
)

CHUNK_BYTES = 32 << 20
BLOCK_BYTES = 8 << 20  # read size of the planning scan
HEAD_BYTES = 1 << 20  # the header row must end within this many bytes, else the file is one chunk
# Rows mapped per apply_profile call in a chunk: a whole 32 MB chunk (~200k rows) in one call
# (the per-call overhead of ~40 column operations is paid once), a bound for larger chunks.
PROFILE_ROWS = 262_144
CHUNKED_FORMATS = ("csv", "tsv", "jsonl")
# Codecs in which no multi-byte character contains 0x0A, 0x0D, 0x22, 0x2C or 0x09, so a byte scan
# sees the same newlines, quotes and delimiters as the decoded text, and a cut after '\n' never
# splits a character.
SAFE_CODECS = ("utf-8", "utf-8-sig", "gbk", "gb18030", "gb2312", "big5", "ascii")
_AUTO = ("utf-8", "gbk", "gb18030")  # encoding.AUTO_ENCODINGS, same order
_BOM = codecs.BOM_UTF8
_DELIM = {"csv": ",", "tsv": "\t"}


@dataclass(frozen=True)
class ChunkRef:
    """One unit of import work; small and picklable (it is sent to worker processes).

    ``start < 0``: the whole file through its importer. Otherwise the byte range
    ``[start, end)`` of data records, ``first_line`` being the physical line at ``start``.
    """

    index: int  # global chunk number in plan order (file order, then byte order)
    path: str
    file_order: int
    part: int  # chunk number within the file
    fmt: str
    start: int = -1
    end: int = -1
    first_line: int = 1
    codec: str | None = None  # codec for the byte range
    encoding: str | None = None  # encoding reported in the summary (utf-8-sig when a BOM)
    header: tuple[str, ...] = ()  # CSV/TSV: header cells; JSONL: keys of the whole file in order
    header_text: str = ""  # CSV/TSV: the header row as text (one physical line)
    profile: str | None = None
    lone_cr: bool = True  # a '\r' not followed by '\n' may be in the file (False: the scan proved none)

    @property
    def whole_file(self) -> bool:
        return self.start < 0


@dataclass
class IngestPlan:
    """Chunks in order, per-file info (format/profile/encoding known after planning) and an
    estimate of the number of records (newline count) to choose a bucket count from."""

    chunks: list[ChunkRef]
    files: list[FileInfo]
    records_estimate: int
    ictx: ImportContext


@dataclass
class ChunkImport:
    """Staged rows of one chunk (message columns minus seq, plus provenance) and its rejects."""

    index: int
    messages: pd.DataFrame
    rejects: pd.DataFrame
    data_rows: int
    info: FileInfo


@dataclass
class ChunkSummary:
    """What ``spill_chunk`` reports back: counts, rejects, warnings; rows went to disk."""

    index: int
    file_order: int
    data_rows: int
    messages: int
    rows_per_bucket: dict[int, int]
    rejects: pd.DataFrame
    info: FileInfo
    files: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------- context

def import_context(rules_dir: Path, *, profile: str | None = None, encoding: str | None = None) -> ImportContext:
    """The ImportContext of a run (shops + profiles); build once per worker process."""
    ctx = ImportContext(shops=load_shops(rules_dir), profiles=load_profiles(rules_dir), profile=profile,
                        encoding=encoding)
    if profile is not None and profile not in ctx.profiles:
        raise UsageError(f"unknown import profile '{profile}'; known: {', '.join(sorted(ctx.profiles))}")
    return ctx


# ------------------------------------------------------------------------------------------ scan

def _breaks(b: bytes, lo: int = 0, hi: int | None = None) -> int:
    """Line breaks in b[lo:hi]: \\n, \\r\\n and lone \\r each count once (encoding._line_of)."""
    hi = len(b) if hi is None else hi
    n_cr = b.count(b"\r", lo, hi)
    return b.count(b"\n", lo, hi) + (n_cr - b.count(b"\r\n", lo, hi) if n_cr else 0)


def _blocks(path: Path, skip: int) -> Iterator[tuple[int, bytes, int]]:
    """(offset, block, first byte of the next block or -1 at EOF), from byte ``skip`` on."""
    with open(path, "rb") as fh:
        fh.seek(skip)
        pos, cur = skip, fh.read(BLOCK_BYTES)
        while cur:
            nxt = fh.read(BLOCK_BYTES)
            yield pos, cur, (nxt[0] if nxt else -1)
            pos += len(cur)
            cur = nxt


def _utf8_valid(data: bytes) -> bool:
    """``data.decode("utf-8")`` would succeed (strict: no overlong forms, surrogates or code points
    above U+10FFFF), checked by Arrow's UTF-8 validation without building the text."""
    import pyarrow as pa

    if data.isascii():
        return True
    offsets = pa.py_buffer(np.array([0, len(data)], dtype=np.int64).tobytes())
    arr = pa.Array.from_buffers(pa.large_string(), 1, [None, offsets, pa.py_buffer(data)])
    try:
        arr.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _utf8_tail(block: bytes) -> int:
    """Start of a multi-byte sequence the block's end cuts short (len(block) when none)."""
    for k in range(1, min(3, len(block)) + 1):
        b = block[-k]
        if b < 0x80:
            break
        if b >= 0xC0:  # a lead byte: 2, 3 or 4 bytes long
            need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            return len(block) - k if need > k else len(block)
    return len(block)


class _Utf8Check:
    """Strict incremental UTF-8 check (what an incremental decoder's ok/fail is) without decoding:
    a sequence cut by a block's end is carried into the next block; one left at the end fails."""

    def __init__(self) -> None:
        self.carry = b""

    def decode(self, block: bytes, final: bool = False) -> None:
        data = self.carry + block if self.carry else block
        cut = len(data) if final else _utf8_tail(data)
        self.carry = data[cut:]
        if not _utf8_valid(data[:cut] if cut < len(data) else data):
            raise UnicodeDecodeError("utf-8", data, 0, max(cut, 1), "invalid UTF-8")


class _Decoders:
    """Strict incremental decoding of the whole file with several candidate codecs at once
    (UTF-8 is only validated: the text itself is not needed here)."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.dec = {n: _Utf8Check() if codecs.lookup(n).name == "utf-8" else
                    codecs.getincrementaldecoder(n)(errors="strict") for n in names}
        self.ok = dict.fromkeys(names, True)
        self.ascii = True

    def feed(self, block: bytes, final: bool = False) -> None:
        if self.ascii and not block.isascii():
            self.ascii = False
        for n, d in self.dec.items():
            if self.ok[n]:
                try:
                    d.decode(block, final)
                except (UnicodeError, ValueError):
                    self.ok[n] = False


def _plan_encoding(head: bytes, forced: str | None) -> tuple[tuple[str, ...], int] | None:
    """Candidate codecs to verify (in preference order) and bytes to skip (a BOM); None -> the
    importer decides (unknown/unsafe codec, or a case decode_bytes refuses)."""
    bom = head.startswith(_BOM)
    skip = len(_BOM) if bom else 0
    if forced:
        try:
            info = codecs.lookup(forced)
        except LookupError:
            return None
        if not getattr(info, "_is_text_encoding", True) or info.name not in SAFE_CODECS:
            return None
        if info.name in ("utf-8", "utf-8-sig"):
            return ("utf-8",), skip
        if bom:
            return None
        return ("utf-8", info.name), 0  # utf-8 only to refuse mojibake, as decode_bytes does
    if bom:
        return ("utf-8",), skip
    return _AUTO, 0


def _choose_codec(dec: _Decoders, cands: tuple[str, ...], forced: str | None, bom: bool) -> tuple[str, str] | None:
    """(codec, reported encoding) as encoding.decode_bytes would pick; None when it would fail."""
    if forced and cands[0] == "utf-8" and len(cands) == 2:
        if not dec.ascii and dec.ok["utf-8"]:
            return None  # valid UTF-8 under a forced legacy codec: decode_bytes raises
        return (cands[1], cands[1]) if dec.ok[cands[1]] else None
    if bom:
        return ("utf-8", "utf-8-sig") if dec.ok["utf-8"] else None
    for n in cands:
        if dec.ok[n]:
            return n, n
    return None


@dataclass
class _Scan:
    size: int
    skip: int  # BOM bytes
    cuts: list[int]  # record boundaries (byte offsets), increasing
    lines_at: dict[int, int]  # physical line number at each cut
    breaks: int  # line breaks in the file
    codec: str
    encoding: str
    lone_cr: bool  # some '\r' is not followed by '\n'


def _scan(path: Path, fmt: str, forced: str | None, chunk_bytes: int) -> _Scan | None:
    """One pass: strict decoding check, quote sanity (CSV), record-boundary cuts, line count."""
    with open(path, "rb") as fh:
        head = fh.read(len(_BOM))
    plan = _plan_encoding(head, forced)
    if plan is None:
        return None
    cands, skip = plan
    dec = _Decoders(cands)
    delim = ord(_DELIM[fmt]) if fmt in _DELIM else -1
    quoting = delim >= 0
    seps = np.array([delim, 10, 13, 34], dtype=np.uint8) if quoting else None
    nq = 0  # quotes seen before the current block
    prev_last = -1  # last byte of the previous block (-1: start of data)
    breaks = 0
    lone_cr = False
    cuts: list[int] = []
    lines_at: dict[int, int] = {}
    target = skip + chunk_bytes
    size = skip
    for base, block, nxt in _blocks(path, skip):
        size = base + len(block)
        dec.feed(block)
        q = np.empty(0, dtype=np.int64)
        arr = np.frombuffer(block, dtype=np.uint8)
        if quoting:
            if b"\x00" in block:
                return None
            q = np.flatnonzero(arr == 34)
            if len(q):
                k = nq + np.arange(len(q))
                prev = arr[np.maximum(q - 1, 0)].astype(np.int16)
                if q[0] == 0:
                    prev[0] = prev_last
                nx = arr[np.minimum(q + 1, len(arr) - 1)].astype(np.int16)
                if q[-1] == len(arr) - 1:
                    nx[-1] = nxt
                opener = (k % 2) == 0
                ok_prev = np.isin(prev, seps) | (prev < 0)
                ok_next = np.isin(nx, seps) | (nx < 0)
                if not (np.all(ok_prev[opener]) and np.all(ok_next[~opener])):
                    return None  # a quote csv would read literally: parity would mislead
        straddle = 1 if prev_last == 13 and block[:1] == b"\n" else 0
        # Newline bookkeeping in numpy (bytes.count of b"\r\n" is 3x slower than this whole step).
        lf = np.flatnonzero(arr == 10)
        cr = np.flatnonzero(arr == 13)
        n_cr = len(cr)
        n_crlf = int(np.count_nonzero(arr[cr[cr < len(arr) - 1] + 1] == 10)) if n_cr else 0
        # Every '\r' of the block starts a '\r\n' (a last '\r' may pair with the next block's
        # '\n'): then a range ending after a '\n' holds as many line breaks as '\n' bytes.
        block_lone = n_cr - n_crlf - (1 if block[-1] == 13 and nxt == 10 else 0) > 0
        lone_cr = lone_cr or block_lone
        pos = max(target - base, 0)
        last_local, last_line = 0, 1 + breaks - straddle
        while pos < len(block):
            n = block.find(b"\n", pos)
            if n < 0:
                break
            j = int(np.searchsorted(q, n)) if quoting else 0
            if quoting and (nq + j) % 2:  # inside a quoted cell: resume after the closing quote
                if j >= len(q):
                    break
                pos = int(q[j]) + 1
                continue
            cut = base + n + 1
            last_line += (_breaks(block, last_local, n + 1) if block_lone else
                          int(np.searchsorted(lf, n, side="right") - np.searchsorted(lf, last_local)))
            last_local = n + 1
            if cut < base + len(block) or nxt >= 0:
                cuts.append(cut)
                lines_at[cut] = last_line
            target = cut + chunk_bytes
            pos = max(target - base, n + 1)
        breaks += len(lf) + n_cr - n_crlf - straddle
        nq += len(q)
        prev_last = block[-1]
    dec.feed(b"", final=True)
    chosen = _choose_codec(dec, cands, forced, skip > 0)
    if chosen is None:
        return None
    if quoting and nq % 2:
        return None  # an unterminated quote: the importer reports it
    return _Scan(size=size, skip=skip, cuts=cuts, lines_at=lines_at, breaks=breaks, codec=chosen[0],
                 encoding=chosen[1], lone_cr=lone_cr)


def _read_range(path: str, start: int, end: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(start)
        return fh.read(end - start)


def _csv_header(path: Path, sc: _Scan, delim: str) -> tuple[list[str], str, int, int] | None:
    """(header cells, header text, data start byte, its line) as read_delimited finds the header;
    None when it is not one physical line within HEAD_BYTES or has duplicate names."""
    head = _read_range(str(path), sc.skip, min(sc.size, sc.skip + HEAD_BYTES))
    pos, inside, line = 0, False, 1
    while pos < len(head):
        n = pos
        while True:  # the next '\n' outside quotes (quotes were checked to be regular)
            nl = head.find(b"\n", n)
            if nl < 0:
                if sc.skip + len(head) < sc.size:
                    return None
                nl = len(head) - 1
            seg_q = head.count(b'"', n, nl + 1)
            inside ^= bool(seg_q % 2)
            n = nl + 1
            if not inside:
                break
            if n >= len(head):
                return None
        seg = head[pos:n]
        text = normalise_newlines(seg.decode(sc.codec))
        recs = list(csv.reader(io.StringIO(text, newline=""), delimiter=delim))
        nonblank = [r for r in recs if r and not all(not c.strip() for c in r)]
        if nonblank:
            body = text[:-1] if text.endswith("\n") else text
            if len(recs) != 1 or "\n" in body:
                return None
            header = [c.strip() for c in recs[0]]
            if len(set(header)) != len(header):
                return None
            return header, body, sc.skip + n, line + _breaks(seg)
        line += _breaks(seg)
        pos = n
    return None


def _jsonl_keys(path: Path, ranges: list[tuple[int, int]], codec: str) -> list[str]:
    """Union of the object keys of every JSONL record, in order of first appearance (the header
    read_json_records builds for the whole file)."""
    keys: dict[str, None] = {}
    for start, end in ranges:
        text = normalise_newlines(_read_range(str(path), start, end).decode(codec))
        for ln in text.split("\n"):
            if not ln.strip():
                continue
            try:
                obj = json.loads(ln)
            except (json.JSONDecodeError, RecursionError):
                continue
            if isinstance(obj, dict):
                for k in obj:
                    if k not in keys:
                        keys[k] = None
    return list(keys)


def _count_breaks(path: Path) -> int:
    n = 0
    for _, block, _ in _blocks(path, 0):
        n += block.count(b"\n")
    return n


def _plan_file(path: Path, file_order: int, first_index: int, *, fmt: str | None, ctx: ImportContext,
               chunk_bytes: int) -> tuple[FileInfo, list[ChunkRef], int]:
    """Chunks of one file; a file that cannot be cut safely is one whole-file chunk."""
    name = fmt or detect_format(path)
    file = str(path)
    whole = ChunkRef(index=first_index, path=file, file_order=file_order, part=0, fmt=name)
    info = FileInfo(path=file, format=name)
    if name not in CHUNKED_FORMATS:
        est = _count_breaks(path) if name != "xlsx" else max(1, path.stat().st_size // 40)
        return info, [whole], est
    sc = _scan(path, name, ctx.encoding, chunk_bytes)
    if sc is None:
        return info, [whole], _count_breaks(path)
    header: list[str]
    header_text = ""
    if name == "jsonl":
        start, line = sc.skip, 1
    else:
        found = _csv_header(path, sc, _DELIM[name])
        if found is None:
            return info, [whole], sc.breaks
        header, header_text, start, line = found
    bounds = [start] + [c for c in sc.cuts if start < c < sc.size] + [sc.size]
    ranges = list(zip(bounds[:-1], bounds[1:], strict=True)) or [(start, start)]
    lines = [line] + [sc.lines_at[c] for c in bounds[1:-1]]
    if name == "jsonl":
        header = _jsonl_keys(path, ranges, sc.codec)
        if not header:
            return info, [whole], sc.breaks
    table = RawTable(header, pd.DataFrame(), F.Rejects(file), 0, sc.encoding)
    prof_name, _ = choose_profile(table, name, ctx, file)
    info.profile, info.encoding = prof_name, sc.encoding
    refs = [ChunkRef(index=first_index + i, path=file, file_order=file_order, part=i, fmt=name, start=a, end=b,
                     first_line=ln, codec=sc.codec, encoding=sc.encoding, header=tuple(header),
                     header_text=header_text, profile=prof_name, lone_cr=sc.lone_cr)
            for i, ((a, b), ln) in enumerate(zip(ranges, lines, strict=True))]
    return info, refs, sc.breaks


def _check_args(paths: list[Path] | list[str] | Path | str, fmt: str | None) -> list[Path]:
    if isinstance(paths, (str, Path)):
        paths = [paths]  # type: ignore[list-item]
    if fmt is not None and fmt not in IMPORTERS:
        IMPORTERS.get(fmt)  # raises UserError listing the known formats
    files = collect_files([Path(p) for p in paths])
    if not files:
        raise UserError(f"no data files found in {', '.join(str(p) for p in paths)}")
    return files


def plan_chunks(paths: list[Path] | list[str] | Path | str, *, rules_dir: Path, fmt: str | None = None,
                profile: str | None = None, encoding: str | None = None,
                chunk_bytes: int = CHUNK_BYTES) -> IngestPlan:
    """Collect the files, detect format/encoding/profile by streaming (no file held whole) and cut
    CSV/TSV/JSONL files into chunks of about ``chunk_bytes`` at record boundaries."""
    if chunk_bytes < 1:
        raise UsageError("chunk_bytes must be positive")
    files = _check_args(paths, fmt)
    ictx = import_context(rules_dir, profile=profile, encoding=encoding)
    chunks: list[ChunkRef] = []
    infos: list[FileInfo] = []
    est = 0
    for i, path in enumerate(files):
        info, refs, n = _plan_file(path, i, len(chunks), fmt=fmt, ctx=ictx, chunk_bytes=chunk_bytes)
        infos.append(info)
        chunks.extend(refs)
        est += n
    return IngestPlan(chunks=chunks, files=infos, records_estimate=est, ictx=ictx)


# ----------------------------------------------------------------------------------------- parse

def _reraise_shifted(exc: InputError, shift: int) -> InputError:
    """The same InputError with its line moved from chunk-relative to the file's true line."""
    if exc.line is None:
        return exc
    where = [str(exc.file)] if exc.file else []
    where.append(f"line {exc.line}")
    prefix = ":".join(where) + (f" (field '{exc.field}')" if exc.field else "")
    msg = str(exc)
    bare = msg[len(prefix) + 2:] if msg.startswith(prefix + ": ") else msg
    return InputError(bare, file=exc.file, line=exc.line + shift, field=exc.field)


def parse_chunk(ref: ChunkRef, ictx: ImportContext) -> ChunkImport:
    """Staged rows and rejects of one chunk, as the importer produces them for the whole file:
    FILE_ORDER set, ORDER increasing in source order within the file, true source lines."""
    ci, keep = _parse_chunk(ref, ictx, masked=False)
    assert keep is None
    return ci


def _parse_chunk(ref: ChunkRef, ictx: ImportContext, *, masked: bool) -> tuple[ChunkImport, np.ndarray | None]:
    """``parse_chunk``; with ``masked``, a byte-range chunk mapped in one call may come back with
    its rejected rows still in ``messages`` and the mask of the kept rows (else the mask is None)."""
    keep: np.ndarray | None = None
    path = Path(ref.path)
    if ref.whole_file:
        imp: FileImport = IMPORTERS.get(ref.fmt)(path, ictx)
        msgs, rej, info = imp.messages, imp.rejects, imp.info
        data_rows = info.data_rows
    else:
        raw = _read_range(ref.path, ref.start, ref.end)
        file = ref.path
        fast: RawTable | None = None
        if ref.fmt != "jsonl" and (ref.codec or "utf-8") == "utf-8" and not ref.lone_cr:
            fast = read_delimited_arrow(path, raw, list(ref.header), _DELIM[ref.fmt], ref.encoding)
        if fast is None and ref.fmt != "jsonl" and (ref.codec or "utf-8") == "utf-8":
            # UTF-8 chunks go to the C parser as bytes: the same bytes as decoding, normalising
            # newlines and re-encoding would give (no UTF-8 character holds '\r' or '\n').
            data = ref.header_text.encode("utf-8") + b"\n" + _normalise_newlines_bytes(raw)
            fast = read_delimited_fast(path, data, _DELIM[ref.fmt], ref.encoding)
            del data
        if fast is not None:
            del raw
            shift = ref.first_line - 2
            table = fast
        elif ref.fmt == "jsonl":
            text = normalise_newlines(raw.decode(ref.codec or "utf-8"))
            del raw
            shift = ref.first_line - 1
            table = read_json_records(path, text, True, ref.encoding)
            del text
            table = _with_header(table, list(ref.header))
        else:
            text = normalise_newlines(raw.decode(ref.codec or "utf-8"))
            del raw
            shift = ref.first_line - 2  # the header row is line 1 of the text read
            text = ref.header_text + "\n" + text  # rebound: one copy of the chunk text, not two
            try:
                table = read_delimited(path, text, _DELIM[ref.fmt], ref.encoding)
            except InputError as exc:
                raise _reraise_shifted(exc, shift) from None
            del text
        if ref.fmt != "jsonl" and table.header != list(ref.header):
            raise BugError(f"{file}: chunk {ref.part} header {table.header} != planned {list(ref.header)}")
        assert ref.profile is not None
        if masked and len(table.cells) <= PROFILE_ROWS:
            msgs, keep = map_profile(table, ictx.profiles[ref.profile], ictx.shops, file)
            msgs = msgs.reset_index(drop=True)
        else:
            msgs = apply_profile_chunked(table, ictx.profiles[ref.profile], ictx.shops, file, chunk=PROFILE_ROWS)
        rej = table.rejects.frame()
        data_rows = table.data_rows
        if shift:
            msgs[S.SOURCE_LINE] = msgs[S.SOURCE_LINE] + shift
            rej[S.REJECT_LINE] = rej[S.REJECT_LINE] + shift
        if ref.part and len(msgs):
            # A chunk holds at most as many records as physical lines, so first_line + local order
            # stays below the next chunk's values: monotone in source order across the file.
            msgs[F.ORDER] = msgs[F.ORDER] + ref.first_line
        info = FileInfo(path=file, format=ref.fmt, profile=ref.profile, encoding=ref.encoding,
                        data_rows=data_rows)
    info.messages, info.rejects = len(msgs) if keep is None else int(keep.sum()), len(rej)
    if info.messages:
        msgs[F.FILE_ORDER] = ref.file_order
    return ChunkImport(index=ref.index, messages=msgs, rejects=rej, data_rows=data_rows, info=info), keep


def _normalise_newlines_bytes(b: bytes) -> bytes:
    """encoding.normalise_newlines on the bytes of an ASCII-transparent codec."""
    if b"\r" not in b:
        return b
    return b.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def _with_header(table: RawTable, header: list[str]) -> RawTable:
    """JSONL chunk cells laid out with the whole file's keys (absent key -> None cells)."""
    c = table.cells
    extra = [h for h in table.header if h not in header]
    if extra:
        raise BugError(f"JSONL keys {extra} were not seen when planning (file changed while reading?)")
    n = len(c)
    cols = {h: (c[h] if h in c.columns else pd.Series([None] * n, index=c.index, dtype=object)) for h in header}
    cols[LINE] = c[LINE] if LINE in c.columns else pd.Series(np.zeros(0, dtype="int64"))
    return RawTable(header, pd.DataFrame(cols, index=c.index), table.rejects, table.data_rows, table.encoding)


# --------------------------------------------------------------------------------------- buckets

def conversation_key_bucket(staged: pd.DataFrame, n_buckets: int) -> np.ndarray:
    """Stable bucket per row: by conversation id, else by (shop_id, customer_id), so every row
    that duplicate detection, sessionising, seq and agent filling compare lands together.

    The key text is built and hashed once per distinct value (a chunk has ~15x fewer
    conversations than rows); per row only integer codes are taken. The hash is elementwise,
    so this equals hashing every row's key (``_bucket_reference``)."""
    if n_buckets < 1:
        raise UsageError("n_buckets must be positive")
    if not len(staged):
        return np.zeros(0, dtype=np.int64)
    if not all(_is_string_column(staged[c]) for c in (S.CONVERSATION_ID, S.SHOP_ID, S.CUSTOMER_ID)):
        return _bucket_reference(staged, n_buckets)
    conv_code, conv_text = _key_codes(staged[S.CONVERSATION_ID])
    assert conv_code is not None
    conv_na = conv_code == len(conv_text) - 1
    h = _hash_text(conv_text)[conv_code]
    if conv_na.any():
        s_code, s_text = _key_codes(staged[S.SHOP_ID][conv_na])
        c_code, c_text = _key_codes(staged[S.CUSTOMER_ID][conv_na])
        assert s_code is not None and c_code is not None
        pair, inv = np.unique(s_code * np.int64(len(c_text)) + c_code, return_inverse=True)
        party = np.array(["\x1f" + s_text[p // len(c_text)] + "\x1f" + c_text[p % len(c_text)] for p in pair.tolist()],
                         dtype=object)
        h[conv_na] = _hash_text(party)[inv.reshape(-1)]
    return (h % np.uint64(n_buckets)).astype(np.int64)


def _hash_text(keys: np.ndarray) -> np.ndarray:
    return pd.util.hash_array(keys)  # fixed hash key: the same in every process and run


def _is_string_column(values: pd.Series) -> bool:
    return values.dtype != object and pd.api.types.is_string_dtype(values.dtype)


def _key_codes(values: pd.Series) -> tuple[np.ndarray | None, np.ndarray]:
    """(code per row, key text per code; the last code is NA) for a pandas string column, whose
    distinct values are distinct texts. (None, empty) for other dtypes: object cells such as 1
    and 1.0 factorize together but print differently, so those take the reference path."""
    if not _is_string_column(values):
        return None, np.empty(0, dtype=object)
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    text = np.empty(len(uniques) + 1, dtype=object)
    text[:-1] = np.asarray(uniques, dtype=object)  # str objects (a string column holds only str)
    text[-1] = "\x00NA"
    codes = np.asarray(codes, dtype=np.int64)
    codes[codes < 0] = len(text) - 1
    return codes, text


def _bucket_reference(staged: pd.DataFrame, n_buckets: int) -> np.ndarray:
    """The per-row definition of the bucket (and the path for object-dtype key columns)."""
    conv = _key_text(staged[S.CONVERSATION_ID])
    party = "\x1f" + _key_text(staged[S.SHOP_ID]) + "\x1f" + _key_text(staged[S.CUSTOMER_ID])
    key = conv.where(staged[S.CONVERSATION_ID].notna().to_numpy(), party).to_numpy(dtype=object)
    h = pd.util.hash_array(key)  # fixed hash key: the same in every process and run
    return (h % np.uint64(n_buckets)).astype(np.int64)


def _key_text(values: pd.Series) -> pd.Series:
    """Values as Python str, every kind of NA as one token: the bucket must not depend on a
    chunk's dtype (None in one chunk, NaN or pd.NA in another)."""
    obj = values.astype(object)
    return obj.where(obj.notna(), "\x00NA").map(str)


def _bucket_dir(spill_dir: Path, bucket: int) -> Path:
    return Path(spill_dir) / f"b{bucket:05d}"


def spill_chunk(ref: ChunkRef, ictx: ImportContext, spill_dir: Path | str, n_buckets: int) -> ChunkSummary:
    """Parse one chunk and write its staged rows to ``spill_dir/bNNNNN/cNNNNNN.pkl`` per non-empty
    bucket (pickle: every dtype and value comes back exactly). Safe in any process."""
    ci, keep = _parse_chunk(ref, ictx, masked=True)
    msgs = ci.messages
    # The bucket is a function of each row's own keys, so rejected rows still in ``msgs`` are
    # hashed along and then left out: the kept rows are taken in bucket order in one go.
    b = conversation_key_bucket(msgs, n_buckets)
    rows = np.arange(len(msgs)) if keep is None else np.flatnonzero(keep)
    b = b[rows] if keep is not None else b
    counts = np.bincount(b, minlength=n_buckets) if len(b) else np.zeros(n_buckets, dtype=np.int64)
    # One stable sort, then each bucket is a contiguous slice (one take per column, not per bucket).
    order = rows[np.argsort(b, kind="stable")]
    filtered = keep is not None and len(rows) < len(msgs)
    ordered = msgs.take(order) if filtered or len(np.flatnonzero(counts)) > 1 else msgs
    written: list[str] = []
    pos = 0
    for bucket in np.flatnonzero(counts):
        n = int(counts[bucket])
        part = ordered.iloc[pos:pos + n].reset_index(drop=True)
        pos += n
        d = _bucket_dir(Path(spill_dir), int(bucket))
        d.mkdir(parents=True, exist_ok=True)
        out = d / f"c{ref.index:06d}.pkl"
        tmp = out.with_name(out.name + f".{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            pickle.dump(part, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, out)
        written.append(str(out))
    per_bucket = {int(k): int(counts[k]) for k in np.flatnonzero(counts)}
    return ChunkSummary(index=ref.index, file_order=ref.file_order, data_rows=ci.data_rows, messages=len(rows),
                        rows_per_bucket=per_bucket, rejects=ci.rejects, info=ci.info, files=written)


def assemble(staged: pd.DataFrame, session_gap_minutes: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Staged rows of whole keys (file order) -> (messages sorted by conversation_id, seq;
    duplicate-row rejects). The same code for the whole night and for one bucket."""
    if session_gap_minutes <= 0:
        raise UsageError("--session-gap must be a positive number of minutes")
    if not len(staged):
        return S.empty_messages(), S.empty_rejects()
    kept, dups = drop_duplicates(staged.reset_index(drop=True))
    return _assemble(kept, session_gap_minutes), dups


def load_bucket(spill_dir: Path | str, bucket: int, session_gap_minutes: float, *,
                expected_rows: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read one bucket's chunk files in chunk order and assemble them. ``expected_rows`` (the
    sum of the chunk summaries' rows_per_bucket) turns a lost or stale spill file into a BugError."""
    d = _bucket_dir(Path(spill_dir), bucket)
    files = sorted(d.glob("c*.pkl"), key=lambda p: int(p.stem[1:])) if d.is_dir() else []
    parts = []
    for f in files:
        with open(f, "rb") as fh:
            parts.append(pickle.load(fh))
    if expected_rows is not None and sum(len(p) for p in parts) != expected_rows:
        raise BugError(f"spill bucket {bucket} in {spill_dir}: {sum(len(p) for p in parts)} rows on disk, "
                       f"{expected_rows} spilled")
    if not parts:
        return S.empty_messages(), S.empty_rejects()
    staged = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
    del parts
    return assemble(staged, session_gap_minutes)


# ------------------------------------------------------------------------------------ accounting

def _merge_file(planned: FileInfo, refs: list[ChunkRef],
                by_index: dict[int, ChunkImport] | dict[int, ChunkSummary]) -> FileInfo:
    info = replace(planned, warnings=[], data_rows=0, messages=0, rejects=0)
    for ref in refs:
        r = by_index.get(ref.index)
        if r is None:
            raise BugError(f"{planned.path}: no result for chunk {ref.part}")
        ci = r.info
        if ref.whole_file:
            info = replace(ci, warnings=list(ci.warnings), data_rows=0, messages=0, rejects=0)
        else:
            info.warnings += [w for w in ci.warnings if w not in info.warnings]
        info.data_rows += r.data_rows
        info.messages += len(r.messages) if isinstance(r, ChunkImport) else r.messages
        info.rejects += len(r.rejects)
    if info.messages + info.rejects != info.data_rows:
        raise BugError(f"{info.path}: {info.data_rows} source rows but {info.messages} messages + "
                       f"{info.rejects} rejects")
    if info.data_rows == 0:
        info.warnings.append("no data rows")
    return info


def merge_file_infos(plan: IngestPlan, results: list[ChunkImport] | list[ChunkSummary]) -> list[FileInfo]:
    """Per-file FileInfo from the chunk results (any order): sums, the accounting check
    (messages + rejects == source records, else BugError), the 'no data rows' warning."""
    by_index = {r.index: r for r in results}
    refs: dict[int, list[ChunkRef]] = {}
    for c in plan.chunks:
        refs.setdefault(c.file_order, []).append(c)
    return [_merge_file(f, refs.get(i, []), by_index) for i, f in enumerate(plan.files)]


def chunk_rejects(results: list[ChunkImport] | list[ChunkSummary]) -> pd.DataFrame:
    """The rejects of every chunk in plan order (what ingest_paths lists before duplicates)."""
    parts = [r.rejects for r in sorted(results, key=lambda r: r.index) if len(r.rejects)]
    return pd.concat(parts, ignore_index=True) if parts else S.empty_rejects()


def fold_duplicates(files: list[FileInfo], dups: pd.DataFrame) -> None:
    """Move duplicate rows found by ``assemble``/``load_bucket`` from messages to rejects in the
    per-file counts (in place)."""
    if not len(dups):
        return
    per_file = dups[S.REJECT_FILE].value_counts()
    for info in files:
        n = int(per_file.get(info.path, 0))
        info.messages, info.rejects = info.messages - n, info.rejects + n


def no_usable_messages(files: list[Path] | list[str], rejects: pd.DataFrame) -> UserError:
    """The error of a night in which every row was rejected (or there were none)."""
    from collections import Counter

    reasons = Counter(rejects[S.REJECT_REASON]) if len(rejects) else Counter()
    detail = "; ".join(f"{r}: {n}" for r, n in reasons.most_common())
    example = ""
    if len(rejects):
        r0 = rejects.iloc[0]
        example = f" First: {r0[S.REJECT_FILE]}:{r0[S.REJECT_LINE]} ({r0[S.REJECT_FIELD]}) {r0[S.REJECT_REASON]}."
    names = ", ".join(str(f) for f in files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
    return UserError(f"no usable messages in {len(files)} file(s) ({names})"
                     + (f"; every row was rejected ({detail}).{example}" if detail else " (empty input)."))


def ingest_chunked(paths: list[Path] | list[str] | Path | str, *, rules_dir: Path, fmt: str | None = None,
                   profile: str | None = None, encoding: str | None = None, session_gap_minutes: float = 10.0,
                   chunk_bytes: int = CHUNK_BYTES) -> tuple[pd.DataFrame, pd.DataFrame, list[FileInfo]]:
    """In-memory ingest over the chunk functions (one bucket): what ``ingest_paths`` returns.

    Files are planned and parsed one after the other, so the first bad file raises first.
    """
    if session_gap_minutes <= 0:
        raise UsageError("--session-gap must be a positive number of minutes")
    files = _check_args(paths, fmt)
    ictx = import_context(rules_dir, profile=profile, encoding=encoding)
    staged: list[pd.DataFrame] = []
    rejects: list[pd.DataFrame] = []
    infos: list[FileInfo] = []
    n_chunks = 0
    for i, path in enumerate(files):
        planned, refs, _ = _plan_file(path, i, n_chunks, fmt=fmt, ctx=ictx, chunk_bytes=chunk_bytes)
        n_chunks += len(refs)
        results: dict[int, ChunkImport] = {}
        for ref in refs:
            ci = parse_chunk(ref, ictx)
            if len(ci.messages):
                staged.append(ci.messages)
            if len(ci.rejects):
                rejects.append(ci.rejects)
            results[ref.index] = ci
        infos.append(_merge_file(planned, refs, results))
        del results
    if not staged:
        rej = pd.concat(rejects, ignore_index=True) if rejects else S.empty_rejects()
        raise no_usable_messages(files, rej)
    all_staged = staged[0] if len(staged) == 1 else pd.concat(staged, ignore_index=True)
    staged.clear()
    messages, dups = assemble(all_staged, session_gap_minutes)
    del all_staged
    if len(dups):
        rejects.append(dups)
        fold_duplicates(infos, dups)
    rej = pd.concat(rejects, ignore_index=True) if rejects else S.empty_rejects()
    return messages, rej.reset_index(drop=True), infos


__all__ = ["CHUNK_BYTES", "ChunkImport", "ChunkRef", "ChunkSummary", "IngestPlan", "assemble", "chunk_rejects",
           "conversation_key_bucket", "fold_duplicates", "import_context", "ingest_chunked", "load_bucket",
           "merge_file_infos", "no_usable_messages", "parse_chunk", "plan_chunks", "spill_chunk"]
