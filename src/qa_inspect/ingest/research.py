"""Importers for the public research sets: JDDC (JD.com chats) and NTCIR-14 STC-3 (Weibo).

Neither set has timestamps or agent ids; the importers leave ts NaT / agent_id NA and say so
in the per-file warnings rather than inventing values.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from qa_inspect import schema as S
from qa_inspect.errors import InputError
from qa_inspect.ingest import frame as F
from qa_inspect.ingest.base import FileImport, FileInfo, ImportContext
from qa_inspect.ingest.encoding import decode_bytes

JDDC_SHOP = "jddc"
STC3_SHOP = "stc3"
JDDC_FIELDS = ("session_id", "user_id", "waiter_send", "is_transfer", "is_repeat", "sku", "content")
NO_TIME = "no timestamps in this format: ts is NaT (response-time checks cannot run)"
NO_AGENT = "no agent ids in this format: agent_id is empty (per-agent reports impossible)"


def looks_like_jddc(first_line: str) -> bool:
    parts = first_line.rstrip("\r").split("\t")
    return len(parts) >= 7 and parts[2] in ("0", "1") and parts[3] in ("0", "1") and parts[4] in ("0", "1")


def import_jddc(path: Path, ctx: ImportContext) -> FileImport:
    """JDDC TSV without header: session_id, user_id, waiter_send (0 buyer/1 agent), ..., sku, content."""
    file = str(path)
    text, enc = decode_bytes(path.read_bytes(), file=file, encoding=ctx.encoding)
    rejects = F.Rejects(file)
    rows: list[list[str]] = []
    lines: list[int] = []
    data_rows = 0
    for no, ln in enumerate(text.split("\n"), start=1):
        ln = ln.rstrip("\r")
        if not ln.strip():
            continue
        data_rows += 1
        parts = ln.split("\t", 6)
        if len(parts) != 7:
            rejects.add(no, "(line)", F.R_FIELD_COUNT, f"expected 7 tab-separated fields, got {len(parts)}: "
                        + ln)
            continue
        rows.append(parts)
        lines.append(no)
    info = FileInfo(path=file, format="jddc", encoding=enc, data_rows=data_rows,
                    warnings=[NO_TIME, NO_AGENT])
    df = pd.DataFrame(rows, columns=list(JDDC_FIELDS), dtype=object)
    df["line"] = np.asarray(lines, dtype="int64")
    role = df["waiter_send"].str.strip().map({"0": "customer", "1": "agent"})
    bad_role = role.isna()
    empty = df["content"].str.strip().eq("") & ~bad_role
    no_session = df["session_id"].str.strip().eq("") & ~bad_role & ~empty
    raw = df[list(JDDC_FIELDS)].agg("\t".join, axis=1) if len(df) else pd.Series(dtype=str)
    rejects.add_many(df.loc[bad_role, "line"], "waiter_send", F.R_UNKNOWN_ROLE, raw[bad_role])
    rejects.add_many(df.loc[empty, "line"], "content", F.R_EMPTY_TEXT, raw[empty])
    rejects.add_many(df.loc[no_session, "line"], "session_id", F.R_NO_CONVERSATION, raw[no_session])
    keep = ~(bad_role | empty | no_session)
    df, role = df[keep].reset_index(drop=True), role[keep].reset_index(drop=True)
    sku = df["sku"].str.strip()
    out = pd.DataFrame({
        S.PLATFORM: "jd", S.SHOP_ID: JDDC_SHOP,
        S.CONVERSATION_ID: (JDDC_SHOP + ":" + df["session_id"].str.strip()).astype("string"),
        S.TS: pd.Series(pd.NaT, index=df.index, dtype="datetime64[ns, UTC]"), S.ROLE: role,
        S.AGENT_ID: None, S.CUSTOMER_ID: df["user_id"].str.strip(), S.TEXT: df["content"],
        S.SKU: sku.where(~sku.isin(["nan", "", "None"]), None), S.IS_AUTO_REPLY: False, S.EVENT: None,
        S.AMOUNT: np.nan, S.SOURCE_FILE: file, S.SOURCE_LINE: df["line"], F.ORDER: np.arange(len(df)),
        "_tz": F.DEFAULT_TZ,
    })
    return FileImport(out, rejects.frame(), info)


def _load_stc3(path: Path, encoding: str | None) -> tuple[list[dict], str]:
    file = str(path)
    text, enc = decode_bytes(path.read_bytes(), file=file, encoding=encoding)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON: {exc.msg}", file=file, line=exc.lineno) from None
    except RecursionError:
        raise InputError("invalid JSON: nested too deeply", file=file) from None
    if not isinstance(data, list) or not all(isinstance(d, dict) and "turns" in d for d in data):
        raise InputError("expected an STC-3 JSON array of {id, turns, annotations}", file=file, line=1)
    return data, enc


def looks_like_stc3(data: object) -> bool:
    return (isinstance(data, list) and bool(data) and isinstance(data[0], dict)
            and "turns" in data[0] and "id" in data[0])


def import_stc3(path: Path, ctx: ImportContext) -> FileImport:
    """One message per utterance; source_line is the dialogue's 1-based position in the array."""
    file = str(path)
    data, enc = _load_stc3(path, ctx.encoding)
    rejects = F.Rejects(file)
    recs: list[tuple[str, int, str, str]] = []
    n_utt = 0
    roles = {"customer": "customer", "helpdesk": "agent"}
    for i, dlg in enumerate(data, start=1):
        raw_id = dlg.get("id")
        did = "" if raw_id is None or isinstance(raw_id, (dict, list)) else str(raw_id).strip()
        turns = dlg.get("turns")
        if not isinstance(turns, list):  # a string would otherwise be iterated character by character
            n_utt += 1
            rejects.add(i, "turns", F.R_BAD_JSON, f"dialogue {did or i}: turns is not a list")
            continue
        for t_no, turn in enumerate(turns):
            utts = turn.get("utterances") if isinstance(turn, dict) else None
            if not isinstance(utts, list):
                n_utt += 1
                rejects.add(i, "turns", F.R_BAD_JSON, f"dialogue {did or i} turn {t_no}: not an object "
                            "with an utterances list")
                continue
            sender = str(turn.get("sender", ""))
            for u_no, utt in enumerate(utts):
                n_utt += 1
                where = f"dialogue {did or i} turn {t_no} utterance {u_no}"
                utt = "" if utt is None or isinstance(utt, (dict, list)) else str(utt)
                if not did:
                    rejects.add(i, "id", F.R_NO_CONVERSATION, where)
                elif sender not in roles:
                    rejects.add(i, "sender", F.R_UNKNOWN_ROLE, f"{where}: sender '{sender}'")
                elif not utt.strip():
                    rejects.add(i, "utterances", F.R_EMPTY_TEXT, where)
                else:
                    recs.append((did, i, roles[sender], utt))
    info = FileInfo(path=file, format="stc3", encoding=enc, data_rows=n_utt, warnings=[
        NO_TIME, NO_AGENT, "source_line is the dialogue's position in the JSON array"])
    df = pd.DataFrame(recs, columns=["id", "line", "role", "text"])
    out = pd.DataFrame({
        S.PLATFORM: "weibo", S.SHOP_ID: STC3_SHOP,
        S.CONVERSATION_ID: (STC3_SHOP + ":" + df["id"]).astype("string"),
        S.TS: pd.Series(pd.NaT, index=df.index, dtype="datetime64[ns, UTC]"), S.ROLE: df["role"],
        S.AGENT_ID: None, S.CUSTOMER_ID: None, S.TEXT: df["text"], S.SKU: None, S.IS_AUTO_REPLY: False,
        S.EVENT: None, S.AMOUNT: np.nan, S.SOURCE_FILE: file, S.SOURCE_LINE: df["line"].astype("int64"),
        F.ORDER: np.arange(len(df)), "_tz": F.DEFAULT_TZ,
    })
    return FileImport(out, rejects.frame(), info)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float, str)) and not isinstance(v, bool) and _floatable(v)


def _floatable(v: object) -> bool:
    try:
        float(v)  # type: ignore[arg-type]
    except ValueError:
        return False
    return True


def stc3_labels(path: Path | str, *, encoding: str | None = None) -> pd.DataFrame:
    """Per dialogue the mean over annotators of S (satisfaction), A (accomplished), E (efficiency).

    conversation_id is namespaced like the messages (``stc3:<id>``) so the frames join directly.
    """
    data, _ = _load_stc3(Path(path), encoding)
    rows = []
    for dlg in data:
        anns = dlg.get("annotations")
        qs = [a.get("quality") for a in anns if isinstance(a, dict)] if isinstance(anns, list) else []
        qs = [q for q in qs if isinstance(q, dict)]
        row: dict[str, object] = {S.CONVERSATION_ID: f"{STC3_SHOP}:{dlg.get('id')}"}
        for k in ("S", "A", "E"):
            vals = [float(q[k]) for q in qs if _is_number(q.get(k))]
            row[k] = float(np.mean(vals)) if vals else np.nan
        rows.append(row)
    out = pd.DataFrame(rows, columns=[S.CONVERSATION_ID, "S", "A", "E"])
    out[S.CONVERSATION_ID] = out[S.CONVERSATION_ID].astype("string")
    return out
