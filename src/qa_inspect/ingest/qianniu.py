"""千牛 (Qianniu) TXT chat export: one buyer section per chat partner, no conversation ids.

Conversations are made later by sessionisation (same shop + buyer, silence > gap). A sender
is an agent when it starts with one of the shop's account prefixes (``店铺名:``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from qa_inspect import schema as S
from qa_inspect.config import Shop
from qa_inspect.errors import InputError
from qa_inspect.ingest import frame as F
from qa_inspect.ingest.base import FileImport, FileInfo, ImportContext
from qa_inspect.ingest.encoding import decode_bytes

MAGIC = "# 千牛聊天记录导出"
AUTO_REPLY_PREFIXES = ("【自动回复】",)
_HEADER_SHOP = re.compile(r"店铺[:：]\s*(\S+)")
_SECTION = re.compile(r"^=+\s*买家[:：]\s*(.*?)\s*=+\s*$")
# A strict message start, and a looser "looks like a timestamp" start so that a garbled time is
# rejected instead of being glued onto the previous message as a continuation line.
_MSG = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) (.*)$")
_TIMEISH = re.compile(r"^\d{4}[-/.]\d{1,2}[-/.]\d{1,2}[ T]\S*[:：]")


def looks_like_qianniu(first_line: str) -> bool:
    return first_line.lstrip("\ufeff").startswith(MAGIC)


def _shop_for(header: str, shops: dict[str, Shop], file: str) -> Shop:
    m = _HEADER_SHOP.search(header)
    if not m:
        raise InputError("Qianniu header names no shop (expected '店铺:NAME')", file=file, line=1)
    name = m.group(1)
    for shop in shops.values():
        if shop.name == name or shop.shop_id == name:
            return shop
    raise InputError(f"shop '{name}' is not in shops.yaml; add it (name, timezone, account_prefixes)",
                     file=file, line=1, field="店铺")


def import_qianniu(path: Path, ctx: ImportContext) -> FileImport:
    file = str(path)
    text, enc = decode_bytes(path.read_bytes(), file=file, encoding=ctx.encoding)
    lines = text.split("\n")
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    if not lines or not looks_like_qianniu(lines[0]):
        raise InputError(f"not a Qianniu export: first line should start with '{MAGIC}' "
                         "(wrong --format or wrong encoding?)", file=file, line=1)
    shop = _shop_for(lines[0], ctx.shops, file)
    prefixes = tuple(shop.account_prefixes) or (f"{shop.name}:",)
    rejects = F.Rejects(file)
    info = FileInfo(path=file, format="qianniu", encoding=enc)

    recs: list[list[object]] = []  # [line, ts_text, sender, role, buyer, text_lines]
    buyer: str | None = None
    current: list[object] | None = None
    # Continuation lines of a rejected message belong to that reject (one source record), not
    # to the previous good message and not to separate "unrecognised line" rejects.
    in_reject = False
    data_rows = 0

    def reject(no: int, field_name: str, reason: str, ln: str) -> None:
        nonlocal current, in_reject
        rejects.add(no, field_name, reason, ln)
        current, in_reject = None, True

    for no, ln in enumerate(lines[1:], start=2):
        sec = _SECTION.match(ln)
        if sec:
            buyer, current, in_reject = sec.group(1), None, False
            continue
        m = _MSG.match(ln)
        if m is None and _TIMEISH.match(ln):
            data_rows += 1
            reject(no, "time", F.R_BAD_TIME, ln)
            continue
        if m is None:
            if current is not None:
                current[5].append(ln)  # type: ignore[union-attr]
            elif ln.strip() and not in_reject:
                data_rows += 1  # a stray line that belongs to no message is a record of its own
                rejects.add(no, "(line)", F.R_UNRECOGNISED, ln)
            continue
        data_rows += 1
        ts_text, rest = m.group(1), m.group(2)
        if buyer is None:
            reject(no, "buyer", F.R_OUTSIDE, ln)
            continue
        if not buyer:
            reject(no, "buyer", F.R_NO_CUSTOMER, ln)
            continue
        sender, body = _split_sender(rest, buyer, prefixes)
        if sender is None:
            reject(no, "sender", F.R_UNKNOWN_SENDER, ln)
            continue
        role = "customer" if sender == buyer else "agent"
        current = [no, ts_text, sender, role, buyer, [body]]
        in_reject = False
        recs.append(current)
    info.data_rows = data_rows

    if not recs:
        return FileImport(S.empty_messages(), rejects.frame(), info)
    df = pd.DataFrame(recs, columns=["line", "ts_text", "sender", "role", "buyer", "parts"])
    df[S.TEXT] = df["parts"].map(lambda p: "\n".join(p).rstrip("\n "))
    tz = pd.Series(shop.timezone, index=df.index, dtype=object)
    df[S.TS] = F.parse_times(df["ts_text"], tz, "%Y-%m-%d %H:%M:%S")
    bad_ts = df[S.TS].isna()
    empty = df[S.TEXT].str.strip().eq("") & ~bad_ts
    raw = df["ts_text"] + " " + df["sender"] + ": " + df[S.TEXT]
    rejects.add_many(df.loc[bad_ts, "line"], "time", F.R_BAD_TIME, raw[bad_ts])
    rejects.add_many(df.loc[empty, "line"], "text", F.R_EMPTY_TEXT, raw[empty])
    df = df[~(bad_ts | empty)].reset_index(drop=True)

    auto = np.zeros(len(df), dtype=bool)
    for prefix in AUTO_REPLY_PREFIXES:
        auto |= df[S.TEXT].str.lstrip().str.startswith(prefix).to_numpy()
    role = df["role"].where(~(auto & df["role"].eq("agent").to_numpy()), "bot")
    agent = df["sender"].where(df["role"].eq("agent"), None)
    out = pd.DataFrame({
        S.PLATFORM: shop.platform, S.SHOP_ID: shop.shop_id, S.CONVERSATION_ID: pd.NA, S.TS: df[S.TS],
        S.ROLE: role, S.AGENT_ID: agent, S.CUSTOMER_ID: df["buyer"], S.TEXT: df[S.TEXT], S.SKU: None,
        S.IS_AUTO_REPLY: auto, S.EVENT: None, S.AMOUNT: np.nan, S.SOURCE_FILE: file,
        S.SOURCE_LINE: df["line"].astype("int64"), F.ORDER: np.arange(len(df)), "_tz": shop.timezone,
    })
    out[S.CONVERSATION_ID] = out[S.CONVERSATION_ID].astype("string")
    return FileImport(out, rejects.frame(), info)


def _split_sender(rest: str, buyer: str, prefixes: tuple[str, ...]) -> tuple[str | None, str]:
    """Split '<sender>: <text>'; agents are '店铺名:客服名', whose name itself contains a colon."""
    for sep in (": ", ":", "："):
        if rest.startswith(buyer + sep):
            return buyer, rest[len(buyer) + len(sep):]
    for p in prefixes:
        if rest.startswith(p):
            tail = rest[len(p):]
            for sep in (": ", "：", ":"):
                k = tail.find(sep)
                if k > 0:
                    return p + tail[:k], tail[k + len(sep):]
    return None, rest
