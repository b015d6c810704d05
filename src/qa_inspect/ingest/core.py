"""ingest_paths: files and folders -> canonical messages + rejects, with a per-file account.

The importer registry is filled here, in one place. Format detection is by extension plus a
look at the content; conversations without export ids are sessionised over all files at once
so a chat that spans two nightly exports stays one conversation.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qa_inspect import schema as S
from qa_inspect.config import resolve_rules_dir
from qa_inspect.errors import UsageError, UserError
from qa_inspect.ingest import frame as F
from qa_inspect.ingest.base import FileInfo, Importer
from qa_inspect.ingest.qianniu import import_qianniu, looks_like_qianniu
from qa_inspect.ingest.research import import_jddc, import_stc3, looks_like_jddc
from qa_inspect.ingest.table import import_table
from qa_inspect.registry import Registry

DATA_SUFFIXES = {".csv", ".tsv", ".txt", ".xlsx", ".xlsm", ".json", ".jsonl", ".ndjson"}
GENERIC_FORMATS = ("csv", "tsv", "xlsx", "json", "jsonl")
SNIFF_BYTES = 65536


def _build_registry() -> Registry[Importer]:
    reg: Registry[Importer] = Registry("import format")
    for fmt in GENERIC_FORMATS:
        reg.register(fmt, functools.partial(import_table, fmt=fmt))
    reg.register("qianniu", import_qianniu)
    reg.register("jddc", import_jddc)
    reg.register("stc3", import_stc3)
    return reg


IMPORTERS: Registry[Importer] = _build_registry()


@dataclass
class IngestResult:
    """Messages (schema.MESSAGE_COLUMNS, sorted by conversation_id, seq), rejects, per-file info."""

    messages: pd.DataFrame
    rejects: pd.DataFrame
    files: list[FileInfo] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        m = self.messages
        warnings = sorted({f"{Path(f.path).name}: {w}" for f in self.files for w in f.warnings})
        return {
            "files": len(self.files),
            "shops": sorted(m[S.SHOP_ID].dropna().unique().tolist()),
            "agents": int(m[S.AGENT_ID].dropna().nunique()),
            "customers": int(m[S.CUSTOMER_ID].dropna().nunique()),
            "conversations": int(m[S.CONVERSATION_ID].nunique()),
            "messages": len(m),
            "messages_by_role": {k: int(v) for k, v in m[S.ROLE].value_counts().sort_index().items()},
            "rejects": len(self.rejects),
            "rejects_by_reason": {k: int(v) for k, v in
                                  self.rejects[S.REJECT_REASON].value_counts().sort_index().items()},
            "per_file": [{"path": f.path, "format": f.format, "profile": f.profile, "encoding": f.encoding,
                          "rows": f.data_rows, "messages": f.messages, "rejects": f.rejects}
                         for f in self.files],
            "warnings": warnings,
        }

    def summary_text(self) -> str:
        s = self.summary()
        out = [f"files: {s['files']}", f"shops: {', '.join(s['shops']) or '-'}",
               f"agents: {s['agents']}", f"conversations: {s['conversations']}",
               f"messages: {s['messages']} ({', '.join(f'{k} {v}' for k, v in s['messages_by_role'].items())})",
               f"rejects: {s['rejects']}"]
        out += [f"  {reason}: {n}" for reason, n in s["rejects_by_reason"].items()]
        out.append("per file:")
        for f in s["per_file"]:
            how = f["format"] + (f"/{f['profile']}" if f["profile"] else "") + (
                f", {f['encoding']}" if f["encoding"] else "")
            out.append(f"  {f['path']} [{how}]: {f['rows']} rows -> {f['messages']} messages, "
                       f"{f['rejects']} rejects")
        if s["warnings"]:
            out.append("warnings:")
            out += [f"  {w}" for w in s["warnings"]]
        return "\n".join(out)


def collect_files(paths: list[Path]) -> list[Path]:
    """Files to import: given files as-is; folders walked recursively (no README*, hidden, non-data)."""
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                rel = f.relative_to(p).parts
                if (f.is_file() and not any(part.startswith(".") for part in rel)
                        and not f.name.upper().startswith("README") and f.suffix.lower() in DATA_SUFFIXES):
                    files.append(f)
        elif p.is_file():
            files.append(p)
        else:
            raise UserError(f"input not found: {p}")
    return files


def _sniff_text(path: Path) -> str:
    with open(path, "rb") as fh:
        head = fh.read(SNIFF_BYTES)
    for enc in ("utf-8-sig", "gb18030"):
        try:
            return head.decode(enc)
        except UnicodeDecodeError as exc:
            if exc.start > len(head) - 4:  # a multi-byte char cut by the sniff window
                return head[:exc.start].decode(enc, errors="replace")
    return head.decode("utf-8", errors="replace")


def detect_format(path: Path) -> str:
    """Extension first, then content: Qianniu magic line, JDDC shape, STC-3 JSON, delimiter."""
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        return "xlsx"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    head = _sniff_text(path)
    first = next((ln for ln in head.splitlines() if ln.strip()), "")
    if suffix == ".json":
        stripped = head.lstrip("\ufeff \r\n\t")
        if stripped.startswith("[") and '"turns"' in head and '"utterances"' in head:
            return "stc3"
        return "jsonl" if stripped.startswith("{") and "\n{" in stripped else "json"
    if looks_like_qianniu(first):
        return "qianniu"
    if looks_like_jddc(first):
        return "jddc"
    if suffix == ".csv":
        return "csv"
    if suffix == ".tsv":
        return "tsv"
    if first.lstrip().startswith("{"):
        return "jsonl"
    return "tsv" if first.count("\t") > first.count(",") else "csv"


def ingest_paths(paths: list[Path] | list[str] | Path | str, *, rules_dir: Path, fmt: str | None = None,
                 profile: str | None = None, encoding: str | None = None,
                 session_gap_minutes: float = 10.0, chunk_bytes: int | None = None) -> IngestResult:
    """Import every file under ``paths`` into one canonical message frame (see docs/schema.md).

    The same chunk functions as the streaming ingest (ingest/stream.py) with a single bucket, so
    there is one code path; ``chunk_bytes`` (default stream.CHUNK_BYTES) only changes memory.
    """
    from qa_inspect.ingest import stream  # stream builds on this module's registry and helpers

    if isinstance(paths, (str, Path)):
        paths = [paths]  # type: ignore[list-item]
    if session_gap_minutes <= 0:
        raise UsageError("--session-gap must be a positive number of minutes")
    messages, rejects, infos = stream.ingest_chunked(
        paths, rules_dir=rules_dir, fmt=fmt, profile=profile, encoding=encoding,
        session_gap_minutes=session_gap_minutes, chunk_bytes=chunk_bytes or stream.CHUNK_BYTES)
    return IngestResult(messages=messages, rejects=rejects, files=infos)


R_DUPLICATE = "duplicate row"
_PROVENANCE = {S.SOURCE_FILE, S.SOURCE_LINE, F.ORDER, F.FILE_ORDER, "_tz"}


def drop_duplicates(staged: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split staged messages (file order) into (kept, rejects of exact duplicates of an earlier row).

    An exact duplicate has every message value equal to an earlier row's (same shop, conversation
    or customer, time, role, agent, text, event, amount ...): overlapping nightly exports or an
    export tool writing a row twice. It is rejected as ``duplicate row`` with the original's
    file and line in ``raw``, so nothing is double-counted and nothing is lost. Rows without a
    time (JDDC, STC-3) are never duplicates: a repeated "好的" there is a genuine message.
    """
    keys = [c for c in staged.columns if c not in _PROVENANCE]
    timed = staged[S.TS].notna()
    if len(staged) < 2 or timed.sum() < 2:
        return staged, S.empty_rejects()
    d = staged[keys] if timed.all() else staged.loc[timed, keys]  # no row filter when every row is timed
    # Candidates first: rows sharing conversation, customer and time with another row (equal in
    # every key implies equal in these three, so no duplicate is missed); the exact comparison,
    # every key and the text included, then only runs on those few rows.
    cand = d[_same_time_and_party(d).to_numpy()]
    if cand.empty:
        return staged, S.empty_rejects()
    group = cand.groupby(keys, dropna=False, sort=False).ngroup()
    first = pd.Series(cand.index, index=cand.index).groupby(group.to_numpy()).transform("first")
    dup_idx = cand.index[group.duplicated(keep="first").to_numpy()]
    if not len(dup_idx):
        return staged, S.empty_rejects()
    orig = first.loc[dup_idx].to_numpy()
    dup = staged.loc[dup_idx]
    o_file = staged.loc[orig, S.SOURCE_FILE].astype(str).to_numpy()
    o_line = staged.loc[orig, S.SOURCE_LINE].astype("int64").to_numpy()
    where = [f"line {ln}" if f == df else f"{f} line {ln}"
             for f, ln, df in zip(o_file, o_line, dup[S.SOURCE_FILE].astype(str), strict=True)]
    raw = [f"duplicate of {w}: {t}"[:F.RAW_MAX] for w, t in zip(where, dup[S.TEXT].astype(str), strict=True)]
    rej = pd.DataFrame({S.REJECT_FILE: dup[S.SOURCE_FILE].astype(str).to_numpy(),
                        S.REJECT_LINE: dup[S.SOURCE_LINE].astype("int64").to_numpy(),
                        S.REJECT_FIELD: "(row)", S.REJECT_REASON: R_DUPLICATE, S.REJECT_RAW: raw})
    rej = rej.astype(S.empty_rejects().dtypes.to_dict())
    return staged.drop(index=dup_idx).reset_index(drop=True), rej


def _same_time_and_party(d: pd.DataFrame) -> pd.Series:
    """Rows whose (conversation_id, customer_id, ts) occurs more than once (NA equal to NA), from
    integer codes: factorizing two string columns is far cheaper than hashing every key column."""
    conv = pd.factorize(d[S.CONVERSATION_ID], use_na_sentinel=True)[0]
    cust = pd.factorize(d[S.CUSTOMER_ID], use_na_sentinel=True)[0]
    ts = pd.factorize(d[S.TS], use_na_sentinel=True)[0]
    return pd.DataFrame({"c": conv, "u": cust, "t": ts}, index=d.index).duplicated(keep=False)


def _assemble(df: pd.DataFrame, gap: float) -> pd.DataFrame:
    need = df[S.CONVERSATION_ID].isna()
    if need.any():
        df.loc[need, S.CONVERSATION_ID] = F.sessionise(df[need], gap)
    df = F.assign_seq(df)
    # The agent serving the chat on customer/bot/system rows: nearest human agent in the conversation.
    df[S.AGENT_ID] = fill_agents(df[S.AGENT_ID], df[S.CONVERSATION_ID])
    return F.finalize(df)


def fill_agents(agent_id: pd.Series, conversation_id: pd.Series) -> pd.Series:
    """Empty agent cells take the previous agent of the conversation, else the next one.

    Rows come sorted by conversation (assign_seq), so a conversation is one run of rows and the
    fill is a running max/min of row positions; ``_fill_agents_reference`` is the groupby form.
    """
    codes = pd.factorize(conversation_id)[0]  # codes in order of first appearance
    if len(codes) and (codes[0] < 0 or np.any(np.diff(codes) < 0)):  # NA id, or not one run each
        return _fill_agents_reference(agent_id, conversation_id)
    n = len(agent_id)
    values = agent_id.to_numpy(dtype=object, na_value=None)
    valid = (agent_id.notna() & (agent_id != "")).to_numpy(dtype=bool)
    pos = np.arange(n)
    start = np.maximum.accumulate(np.where(np.r_[True, codes[1:] != codes[:-1]], pos, 0))
    end = np.minimum.accumulate(np.where(np.r_[codes[1:] != codes[:-1], True], pos, n)[::-1])[::-1]
    prev = np.maximum.accumulate(np.where(valid, pos, -1))
    nxt = np.minimum.accumulate(np.where(valid, pos, n)[::-1])[::-1]
    out = np.full(n, None, dtype=object)
    use_next = (nxt <= end) & (nxt < n)
    out[use_next] = values[nxt[use_next]]
    use_prev = prev >= start
    out[use_prev] = values[prev[use_prev]]
    return pd.Series(out, index=agent_id.index, dtype=object)


def _fill_agents_reference(agent_id: pd.Series, conversation_id: pd.Series) -> pd.Series:
    agent = agent_id.astype(object).where(agent_id.notna() & (agent_id != ""), None)
    g = agent.groupby(conversation_id, sort=False)
    return agent.fillna(g.ffill()).fillna(g.bfill())


def ingest_to_dir(paths: list[Path], out_dir: Path | str, *, rules_dir: Path | str | None = None,
                  fmt: str | None = None, profile: str | None = None, encoding: str | None = None,
                  session_gap_minutes: float = 10.0) -> IngestResult:
    """What ``qa-inspect ingest`` does: resolve the rules folder, ingest, write the outputs."""
    result = ingest_paths(paths, rules_dir=resolve_rules_dir(rules_dir), fmt=fmt, profile=profile,
                          encoding=encoding, session_gap_minutes=session_gap_minutes)
    write_ingest(result, out_dir)
    return result


def write_ingest(result: IngestResult, out_dir: Path | str) -> dict[str, Path]:
    """messages.parquet, rejects.csv (UTF-8 with BOM so Excel shows Chinese), ingest_summary.json."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {out}: {exc}") from None
    paths = {"messages": out / "messages.parquet", "rejects": out / "rejects.csv",
             "summary": out / "ingest_summary.json"}
    result.messages.to_parquet(paths["messages"], index=False)
    result.rejects.to_csv(paths["rejects"], index=False, encoding="utf-8-sig")
    paths["summary"].write_text(json.dumps(result.summary(), ensure_ascii=False, indent=2), encoding="utf-8")
    return paths


__all__ = ["IMPORTERS", "IngestResult", "collect_files", "detect_format", "ingest_paths",
           "ingest_to_dir", "write_ingest"]
