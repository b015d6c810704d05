"""Hardening properties of every importer (csv, tsv, xlsx, json, jsonl, qianniu, jddc, stc3).

For any input an importer either returns or raises a UserError that names the file (and the line
when a row is at fault); it never leaks a traceback. Every input row ends up as exactly one
message or one reject with file, line, field and reason. "Input rows" are counted here from what
the test wrote, never from the importer:

- csv/tsv: data records written after the header (a record may span lines inside quotes);
- xlsx: non-blank sheet rows after the header; json: array elements; jsonl: non-blank lines;
- qianniu: lines starting with a timestamp, plus stray lines outside any message;
- jddc: non-blank lines; stc3: utterances.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import random
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import openpyxl
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

from qa_inspect import schema as S
from qa_inspect.errors import InputError, UserError
from qa_inspect.ingest import IngestResult, ingest_paths
from qa_inspect.ingest.table import _fast_delimited, read_delimited

RULES = Path(__file__).resolve().parents[2] / "rules"
FIX = Path(__file__).parent / "fixtures"
SUFFIX = {"csv": ".csv", "tsv": ".tsv", "xlsx": ".xlsx", "json": ".json", "jsonl": ".jsonl",
          "qianniu": ".txt", "jddc": ".txt", "stc3": ".json"}
ALL_FORMATS = tuple(SUFFIX)
# Examples per property: enough to hit every planted fault many times, small enough that the
# whole file stays well under 60 s on a shared 2-core machine.
FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROWS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Chat text: Chinese, ASCII punctuation that matters to the parsers (, " \t), and characters
# that break naive line splitting (\r, \n, U+2028, \x85, \x1c) or C strings (NUL).
CHAT = st.text(alphabet=st.sampled_from(list("好的亲在吗纯棉退款發貨ab1 ,\"'\t\n\r\x00\u2028\x85\x1c{}[]:")),
               min_size=1, max_size=12).filter(lambda t: t.strip() != "")


@contextmanager
def temp_file(fmt: str, data: bytes) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"in{SUFFIX[fmt]}"
        path.write_bytes(data)
        yield path


def run(path: Path, fmt: str | None, **kw: object) -> IngestResult | None:
    """Ingest one file; check the accounting and reject provenance, or that the error names it.

    Only UserError (incl. InputError) may escape; anything else (KeyError, BugError from a count
    mismatch, pandas errors ...) propagates and fails the test.
    """
    try:
        res = ingest_paths([path], rules_dir=RULES, fmt=fmt, **kw)  # type: ignore[arg-type]
    except UserError as exc:
        assert str(path) in str(exc), f"error does not name the file: {exc}"
        if isinstance(exc, InputError) and exc.line is not None:
            assert f"line {exc.line}" in str(exc)
        return None
    info = res.files[0]
    assert info.messages + info.rejects == info.data_rows
    assert (len(res.messages), len(res.rejects)) == (info.messages, info.rejects)
    rej = res.rejects
    assert (rej[S.REJECT_FILE] == str(path)).all()
    assert (rej[S.REJECT_LINE] >= 1).all()
    assert rej[S.REJECT_FIELD].fillna("").str.len().gt(0).all(), rej
    assert rej[S.REJECT_REASON].fillna("").str.len().gt(0).all()
    m = res.messages
    assert (m[S.SOURCE_FILE] == str(path)).all() and (m[S.SOURCE_LINE] >= 1).all()
    # seq is 0..n-1 per conversation, following ts, ties by source line.
    for _, g in m.groupby(S.CONVERSATION_ID, sort=False):
        g = g.sort_values(S.SEQ)
        assert g[S.SEQ].tolist() == list(range(len(g)))
        if g[S.TS].notna().all():
            key = list(zip(g[S.TS], g[S.SOURCE_LINE], strict=True))
            assert key == sorted(key)
    return res


# --- 1. random bytes, every importer --------------------------------------------------------

@FUZZ
@given(fmt=st.sampled_from(ALL_FORMATS), data=st.binary(max_size=600))
@example(fmt="json", data=b"[" * 5000)
@example(fmt="jsonl", data=b"[" * 5000 + b"\n")
@example(fmt="stc3", data=b"[" * 5000)
@example(fmt="stc3", data=b'[{"id": null, "turns": "abc"}]')
@example(fmt="stc3", data=b'[{"id": 1, "turns": [1, {"sender": "customer", "utterances": "hi"}]}]')
@example(fmt="xlsx", data=b"PK\x03\x04")
def test_random_bytes_never_crash(fmt: str, data: bytes) -> None:
    with temp_file(fmt, data) as path:
        run(path, fmt)


def _valid_samples() -> dict[str, bytes]:
    """A small valid file per importer (fixtures, plus generated XLSX / JDDC / STC-3)."""
    rows = [Row(conv="C1", customer="b1", agent="a1", sec=i, role="customer" if i % 2 else "agent",
                text=f"消息{i}") for i in range(4)]
    return {
        "csv": (FIX / "taobao_gbk.csv").read_bytes(),
        "tsv": write_delimited(rows, TAOBAO, "\t", "utf-8", ["\n"] * 4)[0],
        "xlsx": write_xlsx(rows, JD)[0],
        "json": write_json(rows, SHOPEE, array=True)[0],
        "jsonl": (FIX / "shopee.jsonl").read_bytes(),
        "qianniu": (FIX / "qianniu_night1.txt").read_bytes(),
        "jddc": "s1\tu1\t0\t0\t0\tnan\t在吗\ns1\tu1\t1\t0\t0\t123\t在的亲\n".encode(),
        "stc3": json.dumps([{"id": "d1", "turns": [{"sender": "customer", "utterances": ["你好", "在吗"]},
                                                    {"sender": "helpdesk", "utterances": ["您好"]}],
                             "annotations": []}], ensure_ascii=False).encode(),
    }


SAMPLES: dict[str, bytes] = {}


def samples() -> dict[str, bytes]:
    if not SAMPLES:
        SAMPLES.update(_valid_samples())
    return SAMPLES


# --- 2. truncated files, wrong encodings, NUL bytes, line endings ---------------------------

@FUZZ
@given(fmt=st.sampled_from(ALL_FORMATS), cut=st.floats(0, 1))
def test_truncated_files_never_crash(fmt: str, cut: float) -> None:
    data = samples()[fmt]
    with temp_file(fmt, data[:int(len(data) * cut)]) as path:
        run(path, fmt)


@FUZZ
@given(fmt=st.sampled_from(ALL_FORMATS), how=st.sampled_from(["gbk-as-utf8", "utf8-as-gbk", "nul",
                                                              "cr", "crlf", "mixed"]),
       seed=st.integers(0, 2**16),
       forced=st.sampled_from([None, "utf-8", "gbk", "gb18030", "big5", "utf-16", "idna", "punycode"]))
def test_mangled_bytes_never_crash(fmt: str, how: str, seed: int, forced: str | None) -> None:
    data = samples()[fmt]
    rnd = random.Random(seed)
    if how == "gbk-as-utf8":  # GBK bytes read as UTF-8 and written back: U+FFFD mojibake
        data = data.decode("gb18030", errors="replace").encode("gbk", errors="replace").decode(
            "utf-8", errors="replace").encode("utf-8")
    elif how == "utf8-as-gbk":
        data = data.decode("gbk", errors="replace").encode("utf-8")
    elif how == "nul":
        pos = sorted(rnd.sample(range(len(data) + 1), k=min(3, len(data) + 1)))
        for p in reversed(pos):
            data = data[:p] + b"\x00" + data[p:]
    else:
        lines = data.split(b"\n")
        ends = {"cr": [b"\r"], "crlf": [b"\r\n"], "mixed": [b"\r", b"\n", b"\r\n"]}[how]
        data = b"".join(ln.rstrip(b"\r") + rnd.choice(ends) for ln in lines)
    with temp_file(fmt, data) as path:
        if fmt == "xlsx":
            forced = None  # --encoding does not apply to workbooks
        run(path, fmt, encoding=forced)


def _end(end: bytes, following: list[bytes]) -> bytes:
    """A lone \r before an empty line's \n would be one \r\n break: use \r\n there instead."""
    return b"\r\n" if end == b"\r" and following == [b""] else end


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_line_endings_do_not_change_the_result(fmt: str) -> None:
    """\\n, \\r\\n, lone \\r and a mix give the same messages and rejects (old Mac / IM exports)."""
    if fmt == "xlsx":
        pytest.skip("a workbook has no line endings")
    base = samples()[fmt]
    results = []
    for ends in ([b"\n"], [b"\r\n"], [b"\r"], [b"\r\n", b"\r", b"\n"]):
        lines = base.replace(b"\r\n", b"\n").split(b"\n")
        data = b"".join(ln + _end(ends[i % len(ends)], lines[i + 1:i + 2]) for i, ln in enumerate(lines))
        with temp_file(fmt, data) as path:
            res = run(path, fmt)
            assert res is not None
            results.append((res.messages[[S.TEXT, S.ROLE, S.SOURCE_LINE]].to_dict("records"),
                            res.rejects[[S.REJECT_LINE, S.REJECT_REASON]].to_dict("records")))
    assert all(r == results[0] for r in results[1:])


# --- 3. structured exports with planted faults, counts checked row by row --------------------

BASE = dt.datetime(2026, 11, 25, 20, 0, 0)
FAULTS = ("none", "none", "none", "bad_role", "empty_text", "bad_time", "missing_time", "year_9999",
          "unknown_shop", "duplicate", "field_count", "bad_json")
REASON = {"bad_role": "unknown role", "empty_text": "empty text", "bad_time": "unparseable time",
          "missing_time": "missing time", "year_9999": "unparseable time", "unknown_shop": "unknown shop",
          "duplicate": "duplicate row", "field_count": "wrong number of fields", "bad_json": "invalid JSON"}


@dataclass
class Row:
    conv: str
    customer: str
    agent: str
    sec: int  # seconds after BASE: random, so rows come out of order
    role: str  # customer | agent | system | bot
    text: str
    fault: str = "none"


@dataclass(frozen=True)
class Layout:
    """One export layout: header names (in order) and the export's spelling of roles."""

    shop: str
    header: tuple[str, ...]  # shop, conv, agent, customer, time, role, text, (extra...)
    roles: dict[str, str]
    extra: tuple[str, ...] = ()


TAOBAO = Layout("悦家家居旗舰店", ("店铺", "会话编号", "客服账号", "买家昵称", "发送时间", "发送方", "消息内容"),
                {"customer": "买家", "agent": "客服", "system": "系统", "bot": "机器人"},
                ("商品ID", "消息类型", "金额"))
JD = Layout("极客数码京东旗舰店", ("店铺名称", "会话ID", "客服ERP", "顾客账号", "时间", "角色", "内容"),
            {"customer": "顾客", "agent": "客服", "system": "系统", "bot": "机器人"}, ("SKU", "订单金额"))
SHOPEE = Layout("tw_meiyan", ("shop", "conversation_id", "agent", "buyer", "sent_at", "sender_type", "message"),
                {"customer": "buyer", "agent": "agent", "system": "system", "bot": "bot"},
                ("item_id", "event", "amount"))


def _cells(r: Row, lay: Layout, iso: bool) -> list[object]:
    t = BASE + dt.timedelta(seconds=r.sec)
    ts: object = t.isoformat() + "+08:00" if iso else t.strftime("%Y-%m-%d %H:%M:%S")
    if r.fault == "bad_time":
        ts = "2026-13-45 99:00:00"
    elif r.fault == "missing_time":
        ts = ""
    elif r.fault == "year_9999":
        ts = "9999-12-31T23:59:59+08:00" if iso else "9999-12-31 23:59:59"
    extra: list[object] = {"商品ID": ["", "文本", ""], "SKU": ["", None], "item_id": ["", None, None]}[
        lay.extra[0]]
    return [("某某小店" if r.fault == "unknown_shop" else lay.shop), r.conv, r.agent, r.customer, ts,
            ("访客" if r.fault == "bad_role" else lay.roles[r.role]),
            ("" if r.fault == "empty_text" else r.text), *extra]


def _normalised(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def expected(rows: list[Row], lines: list[int], norm: bool) -> tuple[dict[int, str], set[int]]:
    """Reject reason per source line and the lines that become messages, from the plan alone."""
    rejects: dict[int, str] = {}
    kept: set[int] = set()
    seen: set[tuple[object, ...]] = set()
    for r, ln in zip(rows, lines, strict=True):
        if r.fault != "none" and r.fault != "duplicate":
            rejects[ln] = REASON[r.fault]
            continue
        key = (r.conv, r.customer, r.agent, r.sec, r.role, _normalised(r.text) if norm else r.text)
        if key in seen:  # planted duplicates and accidental identical rows alike
            rejects[ln] = REASON["duplicate"]
        else:
            seen.add(key)
            kept.add(ln)
    return rejects, kept


@st.composite
def plans(draw: st.DrawFn, faults: tuple[str, ...]) -> list[Row]:
    n = draw(st.integers(1, 12))
    rows: list[Row] = []
    for _ in range(n):
        fault = draw(st.sampled_from(faults))
        if fault == "duplicate" and any(r.fault == "none" for r in rows):
            src = draw(st.sampled_from([r for r in rows if r.fault == "none"]))
            rows.append(Row(src.conv, src.customer, src.agent, src.sec, src.role, src.text, "duplicate"))
            continue
        if fault == "duplicate":
            fault = "none"
        conv = draw(st.sampled_from(["C1", "C2"]))
        rows.append(Row(conv=conv, customer=f"buyer_{conv}", agent="agent_1",
                        sec=draw(st.integers(0, 600)), role=draw(st.sampled_from(["customer", "agent"])),
                        text=draw(CHAT), fault=fault))
    return rows


def write_delimited(rows: list[Row], lay: Layout, delim: str, encoding: str,
                    ends: list[str]) -> tuple[bytes, list[int]]:
    """CSV/TSV bytes plus each record's first physical line (\\r\\n, \\r, \\n each end a line)."""
    def record(cells: list[object], end: str) -> str:
        buf = io.StringIO()
        # "\r\n" as terminator so that cells holding either \r or \n get quoted.
        csv.writer(buf, delimiter=delim, lineterminator="\r\n").writerow(cells)
        return buf.getvalue()[:-2] + end

    out = [record([*lay.header, *lay.extra], "\n")]
    lines: list[int] = []
    line = 2
    for r, end in zip(rows, ends, strict=True):
        cells = _cells(r, lay, iso=False)
        if r.fault == "field_count":
            cells = cells[:5] if r.sec % 2 else [*cells, "extra"]
        rec = record(cells, end)
        out.append(rec)
        lines.append(line)
        line += _normalised(rec).count("\n")
    text = "".join(out)
    return text.encode(encoding, errors="strict"), lines


def write_xlsx(rows: list[Row], lay: Layout) -> tuple[bytes, list[int]]:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "聊天记录"
    ws.append([*lay.header, *lay.extra])
    for r in rows:
        cells = _cells(r, lay, iso=False)
        if r.fault == "none" and r.sec % 3 == 0:  # a real datetime cell, as JD exports have
            cells[4] = BASE + dt.timedelta(seconds=r.sec)
        ws.append([ILLEGAL_CHARACTERS_RE.sub("", c) if isinstance(c, str) else c for c in cells])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue(), list(range(2, len(rows) + 2))


def write_json(rows: list[Row], lay: Layout, array: bool) -> tuple[bytes, list[int]]:
    recs = []
    for r in rows:
        cells = _cells(r, lay, iso=True)
        recs.append(dict(zip([*lay.header, *lay.extra], cells, strict=True)))
    if array:
        return json.dumps(recs, ensure_ascii=False, indent=1).encode(), list(range(1, len(rows) + 1))
    lines = [json.dumps(rec, ensure_ascii=False) for rec in recs]
    lines = [ln[: len(ln) // 2] if r.fault == "bad_json" else ln for ln, r in zip(lines, rows, strict=True)]
    return ("\n".join(lines) + "\n").encode(), list(range(1, len(rows) + 1))


def _clean_xlsx(rows: list[Row]) -> list[Row]:
    for r in rows:
        r.text = ILLEGAL_CHARACTERS_RE.sub("", r.text).replace("\r", "")
        if not r.text.strip() and r.fault not in ("empty_text",):
            r.text = "好"
    return rows


def check_plan(res: IngestResult | None, rows: list[Row], lines: list[int], norm: bool = True) -> None:
    """norm: the format's line breaks are text (CSV, TSV), so \r\n / \r inside cells read as \n."""
    assert res is not None or all(r.fault not in ("none", "duplicate") for r in rows)
    want_rej, want_kept = expected(rows, lines, norm)
    if res is None:  # every row was rejected: ingest says so with a user error
        assert not want_kept
        return
    got_rej = dict(zip(res.rejects[S.REJECT_LINE], res.rejects[S.REJECT_REASON], strict=True))
    assert got_rej == want_rej
    assert set(res.messages[S.SOURCE_LINE]) == want_kept
    assert len(res.messages) + len(res.rejects) == len(rows)
    dups = res.rejects[res.rejects[S.REJECT_REASON] == "duplicate row"]
    assert dups[S.REJECT_RAW].str.match(r"duplicate of line \d+: ").all()


DELIM_FAULTS = tuple(f for f in FAULTS if f != "bad_json")


@ROWS
@given(rows=plans(DELIM_FAULTS), fmt=st.sampled_from(["csv", "tsv"]),
       encoding=st.sampled_from(["utf-8", "utf-8-sig", "gb18030"]), data=st.data())
def test_csv_tsv_rows_add_up(rows: list[Row], fmt: str, encoding: str, data: st.DataObject) -> None:
    ends = data.draw(st.lists(st.sampled_from(["\n", "\r\n", "\r"]), min_size=len(rows), max_size=len(rows)))
    raw, lines = write_delimited(rows, TAOBAO, "," if fmt == "csv" else "\t", encoding, ends)
    with temp_file(fmt, raw) as path:
        check_plan(run(path, fmt), rows, lines)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=plans(tuple(f for f in DELIM_FAULTS if f != "field_count")))
def test_xlsx_rows_add_up(rows: list[Row]) -> None:
    rows = _clean_xlsx(rows)
    raw, lines = write_xlsx(rows, JD)
    with temp_file("xlsx", raw) as path:
        check_plan(run(path, "xlsx"), rows, lines)


@ROWS
@given(rows=plans(tuple(f for f in FAULTS if f != "field_count")), array=st.booleans())
def test_json_jsonl_rows_add_up(rows: list[Row], array: bool) -> None:
    if array:
        rows = [r if r.fault != "bad_json" else Row(**{**r.__dict__, "fault": "none"}) for r in rows]
    raw, lines = write_json(rows, SHOPEE, array)
    fmt = "json" if array else "jsonl"
    with temp_file(fmt, raw) as path:
        check_plan(run(path, fmt), rows, lines, norm=False)


# --- Qianniu / JDDC / STC-3: their own shapes ----------------------------------------------

QN_SHOP = "悦家家居旗舰店"


@st.composite
def qianniu_files(draw: st.DrawFn) -> tuple[str, int, int]:
    """(text, input rows, expected messages) for a Qianniu export with planted faults."""
    out = [f"# 千牛聊天记录导出 店铺:{QN_SHOP} 导出时间:2026-11-26 08:00:00"]
    buyer: str | None = None
    for _ in range(draw(st.integers(1, 15))):
        kind = draw(st.sampled_from(["section", "msg", "msg", "msg", "stray", "bad_time", "unknown_sender",
                                     "empty", "blank"]))
        ts = (BASE + dt.timedelta(seconds=draw(st.integers(0, 300)))).strftime("%Y-%m-%d %H:%M:%S")
        body = draw(st.text(alphabet=st.sampled_from(list("好的亲在吗ab1 :：")), min_size=1, max_size=8))
        body = body.strip() or "好"
        if kind == "section":
            buyer = draw(st.sampled_from(["tb_甲", "tb_乙"]))
            out.append(f"===== 买家:{buyer} =====")
        elif kind == "blank":
            out.append("")
        elif kind == "stray":  # continues the message above, or is a record of its own
            out.append("这是多余的一行")
        elif kind == "bad_time":
            out.append(f"2026-11-25 2O:00:00 {buyer or 'x'}: {body}")
        elif kind == "unknown_sender":
            out.append(f"{ts} 路人甲: {body}")
        elif kind == "empty":
            out.append(f"{ts} {buyer or 'x'}: ")
        else:
            sender = f"{QN_SHOP}:小美" if draw(st.booleans()) else (buyer or "x")
            out.append(f"{ts} {sender}: {body}")
    # Counted independently of the importer: timestamp lines, plus non-blank lines that follow
    # no message line and are not sections. A message's text is its line plus continuation lines.
    rows, in_msg = 0, False
    current: list[str] | None = None
    good: list[tuple[str, str, str, list[str]]] = []
    section: str | None = None
    for ln in out[1:]:
        if ln.startswith("====="):
            in_msg, current, section = False, None, ln.split(":", 1)[1].strip(" =")
        elif ln.startswith("2026-"):
            rows, in_msg, current = rows + 1, True, None
            ts_text, rest = ln[:19], ln[20:]
            if ts_text[11:13] == "2O" or section is None or rest.startswith("路人甲"):
                continue
            sender, body = rest.split(": ", 1) if rest.startswith(section + ":") else rest.rsplit(": ", 1)
            if rest.startswith(QN_SHOP):
                sender, body = f"{QN_SHOP}:小美", rest[len(QN_SHOP) + len(":小美: "):]
            current = [body]
            good.append((section, ts_text, sender, current))
        elif current is not None:
            current.append(ln)
        elif ln.strip() and not in_msg:
            rows += 1
    keys = {(b, t, s, "\n".join(parts).rstrip("\n ")) for b, t, s, parts in good}
    msgs = sum(1 for k in keys if k[3].strip())
    return "\n".join(out) + "\n", rows, msgs


@ROWS
@given(spec=qianniu_files())
def test_qianniu_rows_add_up(spec: tuple[str, int, int]) -> None:
    text, rows, msgs = spec
    with temp_file("qianniu", text.encode()) as path:
        res = run(path, "qianniu")
        if res is None:
            assert msgs == 0
            return
        assert len(res.messages) + len(res.rejects) == rows
        assert len(res.messages) == msgs


@ROWS
@given(lines=st.lists(st.tuples(st.sampled_from(["s1", "s2", ""]), st.sampled_from(["0", "1", "2"]),
                                st.sampled_from(["", "好的", "好的", "a\x00b"]), st.booleans()),
                      min_size=1, max_size=15))
def test_jddc_rows_add_up(lines: list[tuple[str, str, str, bool]]) -> None:
    out, n_ok = [], 0
    for sid, who, text, short in lines:
        if short:
            out.append(f"{sid}\tu1\t{who}")
        else:
            out.append(f"{sid}\tu1\t{who}\t0\t0\tnan\t{text}")
            # repeats are kept: without times a repeated 好的 is a genuine message
            n_ok += bool(sid and who in "01" and text.strip())
    with temp_file("jddc", ("\n".join(out) + "\n").encode()) as path:
        res = run(path, "jddc")
        if res is not None:
            assert len(res.messages) + len(res.rejects) == len(lines)
            assert len(res.messages) == n_ok
        else:
            assert n_ok == 0


@ROWS
@given(dialogues=st.lists(st.fixed_dictionaries({
    "id": st.one_of(st.none(), st.sampled_from(["d1", "d2", 3])),
    "turns": st.lists(st.fixed_dictionaries({
        "sender": st.sampled_from(["customer", "helpdesk", "robot"]),
        "utterances": st.lists(st.sampled_from(["你好", "", " ", "谢谢"]), max_size=3)}), max_size=3),
}), min_size=1, max_size=4))
def test_stc3_rows_add_up(dialogues: list[dict[str, object]]) -> None:
    n_utt = sum(len(t["utterances"]) for d in dialogues for t in d["turns"])  # type: ignore[attr-defined]
    n_ok = sum(1 for d in dialogues for t in d["turns"] for u in t["utterances"]  # type: ignore[attr-defined]
               if d["id"] is not None and t["sender"] != "robot" and u.strip())
    with temp_file("stc3", json.dumps(dialogues, ensure_ascii=False).encode()) as path:
        res = run(path, "stc3")
        if res is not None:
            assert len(res.messages) + len(res.rejects) == n_utt
            assert len(res.messages) == n_ok
            assert "stc3:None" not in set(res.messages[S.CONVERSATION_ID])
        else:
            assert n_ok == 0


# --- CSV fast path (pandas) and exact path (csv module) agree -------------------------------

@FUZZ
@given(cells=st.lists(st.lists(st.sampled_from(["a", "", "b c", '"q"', "x,y", "多\n行", "\x00"]),
                               min_size=1, max_size=5), min_size=1, max_size=6))
@example(cells=[["a", "b", "c", ""], ["a", "b", "c", ""]])  # a trailing delimiter on every row
@example(cells=[["a", "b"]])  # a short row
@example(cells=[["", "", ""]])  # a row of bare delimiters is a record on both paths
def test_fast_and_exact_csv_paths_agree(cells: list[list[str]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["h1", "h2", "h3"])
    for row in cells:
        w.writerow(row)
    text = buf.getvalue()
    fast = _fast_delimited(Path("f.csv"), text, ",", "utf-8")
    if fast is None:
        return
    exact = read_delimited(Path("f.csv"), text.replace("\n", "\n\n", 1), ",", "utf-8")  # "\n\n" forces it
    # The blank line shifted every data line by one in the exact read.
    assert fast.data_rows == exact.data_rows
    assert fast.rejects.frame().empty
    assert len(exact.rejects.frame()) == 0, "fast path accepted rows the exact path rejects"
    ex = exact.cells.assign(_line=exact.cells["_line"] - 1).reset_index(drop=True)
    fa = fast.cells.reset_index(drop=True)
    assert fa.astype(object).to_dict("list") == ex.astype(object).to_dict("list")


# --- big inputs: one example each, not hypothesis-driven -------------------------------------

def test_one_megabyte_message_in_every_text_format() -> None:
    big = "长" * 350_000 + "," + "x" * 100  # ~1 MB in UTF-8, with a delimiter inside
    rows = [Row("C1", "b1", "a1", 0, "customer", big), Row("C1", "b1", "a1", 5, "agent", "好的")]
    files = {
        "csv": write_delimited(rows, TAOBAO, ",", "utf-8", ["\n", "\n"])[0],
        "tsv": write_delimited(rows, TAOBAO, "\t", "utf-8", ["\n", "\n"])[0],
        "jsonl": write_json(rows, SHOPEE, array=False)[0],
        "json": write_json(rows, SHOPEE, array=True)[0],
        "qianniu": (f"# 千牛聊天记录导出 店铺:{QN_SHOP}\n===== 买家:b1 =====\n"
                    f"2026-11-25 20:00:00 b1: {big}\n").encode(),
        "jddc": f"s1\tb1\t0\t0\t0\tnan\t{big}\n".encode(),
        "stc3": json.dumps([{"id": "d", "turns": [{"sender": "customer", "utterances": [big]}]}]).encode(),
    }
    for fmt, data in files.items():
        with temp_file(fmt, data) as path:
            res = run(path, fmt)
            assert res is not None, fmt
            assert res.messages[S.TEXT].str.len().max() == len(big), fmt


def test_one_megabyte_message_in_an_irregular_csv() -> None:
    """The exact (csv module) path: its default 128 KiB cell limit used to fail the whole file."""
    big = "长" * 350_000
    rows = [Row("C1", "b1", "a1", 0, "customer", big), Row("C1", "b1", "a1", 5, "agent", "好的", "field_count")]
    data = write_delimited(rows, TAOBAO, ",", "utf-8", ["\n", "\n"])[0]
    data = data.replace(b"\n", b"\n\n", 1)  # a blank line after the header: the exact path reads it
    with temp_file("csv", data) as path:
        res = run(path, "csv")
        assert res is not None and res.messages[S.TEXT].tolist() == [big]
        assert res.rejects[S.REJECT_REASON].tolist() == ["wrong number of fields"]
        assert res.rejects[S.REJECT_LINE].tolist() == [4]


def test_hundred_thousand_message_conversation_out_of_order() -> None:
    n = 100_000
    rnd = random.Random(7)
    secs = [rnd.randrange(0, 20_000) for _ in range(n)]
    body = "\n".join(f"悦家家居旗舰店,C1,a1,b1,{(BASE + dt.timedelta(seconds=s)):%Y-%m-%d %H:%M:%S},"
                     f"{'买家' if i % 2 else '客服'},m{i},,文本," for i, s in enumerate(secs))
    data = (",".join([*TAOBAO.header, *TAOBAO.extra]) + "\n" + body + "\n").encode()
    with temp_file("csv", data) as path:
        res = ingest_paths([path], rules_dir=RULES)
    m = res.messages
    assert len(m) == n and res.rejects.empty and m[S.CONVERSATION_ID].nunique() == 1
    m = m.sort_values(S.SEQ)
    assert m[S.SEQ].tolist() == list(range(n))
    want = sorted(range(n), key=lambda i: (secs[i], i))  # by time, ties by source order
    assert m[S.TEXT].tolist() == [f"m{i}" for i in want]


# --- empty, header-only, duplicates, XLSX merged cells and formulas -------------------------

HEADER_ONLY = {
    "csv": (",".join([*TAOBAO.header, *TAOBAO.extra]) + "\n").encode("gb18030"),
    "tsv": ("\t".join([*TAOBAO.header, *TAOBAO.extra]) + "\n").encode(),
    "json": b"[]", "jsonl": b"\n", "qianniu": f"# 千牛聊天记录导出 店铺:{QN_SHOP}\n".encode(),
    "jddc": b"\n", "stc3": b"[]",
}


@pytest.mark.parametrize("fmt", ALL_FORMATS)
@pytest.mark.parametrize("kind", ["empty", "header-only"])
def test_empty_and_header_only_files_are_user_errors_naming_the_file(fmt: str, kind: str) -> None:
    if fmt == "xlsx":
        data = write_xlsx([], JD)[0] if kind == "header-only" else b""
    else:
        data = b"" if kind == "empty" else HEADER_ONLY[fmt]
    with temp_file(fmt, data) as path, pytest.raises(UserError) as err:
        ingest_paths([path], rules_dir=RULES, fmt=fmt)
    assert str(path) in str(err.value)


def test_duplicates_across_overlapping_exports_are_rejected_once(tmp_path: Path) -> None:
    """Two nightly Qianniu exports that overlap: the repeated messages are counted once."""
    head = f"# 千牛聊天记录导出 店铺:{QN_SHOP}\n===== 买家:b1 =====\n"
    a = head + "2026-11-25 23:59:00 b1: 在吗\n2026-11-25 23:59:30 悦家家居旗舰店:小美: 在的\n"
    b = head + "2026-11-25 23:59:30 悦家家居旗舰店:小美: 在的\n2026-11-26 00:00:10 b1: 好\n"
    (tmp_path / "n1.txt").write_text(a, encoding="utf-8")
    (tmp_path / "n2.txt").write_text(b, encoding="utf-8")
    res = ingest_paths([tmp_path], rules_dir=RULES)
    assert res.messages[S.TEXT].tolist() == ["在吗", "在的", "好"]
    assert res.messages[S.CONVERSATION_ID].nunique() == 1
    r = res.rejects.iloc[0]
    assert (r[S.REJECT_FILE], r[S.REJECT_LINE], r[S.REJECT_REASON]) == (str(tmp_path / "n2.txt"), 3,
                                                                         "duplicate row")
    assert r[S.REJECT_RAW].startswith(f"duplicate of {tmp_path / 'n1.txt'} line 4")
    per_file = {Path(f.path).name: (f.data_rows, f.messages, f.rejects) for f in res.files}
    assert per_file == {"n1.txt": (2, 2, 0), "n2.txt": (2, 1, 1)}


def test_xlsx_merged_cells_and_formulas() -> None:
    """Merged 店铺名称/会话ID cells read as their top-left value; formulas without a cached value
    (openpyxl-written, never opened in Excel) are rejects naming the column."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "聊天记录"
    ws.append([*JD.header, *JD.extra])
    ws.append([JD.shop, "K1", "jike_a", "c1", "2026-11-25 20:00:00", "顾客", "在吗", None, None])
    ws.append([None, None, "jike_a", "c1", "2026-11-25 20:00:05", "客服", "在的", None, None])
    ws.append([None, None, "jike_a", "c1", "2026-11-25 20:00:09", "客服", '=CONCAT("a","b")', None, None])
    ws.append([None, None, "jike_a", "c1", "2026-11-25 20:00:12", "系统", "[下单]", "S1", "=100+199"])
    ws.merge_cells("A2:A5")
    ws.merge_cells("B2:B5")
    buf = io.BytesIO()
    wb.save(buf)
    with temp_file("xlsx", buf.getvalue()) as path:
        res = run(path, "xlsx")
    assert res is not None
    assert res.messages[S.SOURCE_LINE].tolist() == [2, 3]
    assert set(res.messages[S.CONVERSATION_ID]) == {"jd_jike:K1"}
    got = sorted(zip(res.rejects[S.REJECT_LINE], res.rejects[S.REJECT_FIELD], res.rejects[S.REJECT_REASON],
                     strict=True))
    assert got == [(4, "内容", "formula without a cached value"), (5, "订单金额", "formula without a cached value")]


def test_out_of_range_times_are_rejects_not_crashes() -> None:
    rows = [Row("C1", "b1", "a1", 0, "customer", "好", "year_9999"), Row("C1", "b1", "a1", 1, "agent", "好的")]
    with temp_file("csv", write_delimited(rows, TAOBAO, ",", "utf-8", ["\n", "\n"])[0]) as path:
        res = run(path, "csv")
    assert res is not None and res.rejects[S.REJECT_REASON].tolist() == ["unparseable time"]
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "聊天记录"
    ws.append([*JD.header, *JD.extra])
    ws.append([JD.shop, "K1", "a", "c1", 200000, "顾客", "serial day beyond 2262", None, None])
    ws.append([JD.shop, "K1", "a", "c1", dt.datetime(9999, 1, 1), "顾客", "year 9999 cell", None, None])
    ws.append([JD.shop, "K1", "a", "c1", 46351.5, "顾客", "serial 2026-11-25 12:00", None, None])
    buf = io.BytesIO()
    wb.save(buf)
    with temp_file("xlsx", buf.getvalue()) as path:
        res = run(path, "xlsx")
    assert res is not None
    assert res.rejects[S.REJECT_LINE].tolist() == [2, 3]
    assert res.messages[S.TS].tolist() == [pd.Timestamp("2026-11-25 04:00", tz="UTC")]


def test_bytes_transform_codecs_are_refused() -> None:
    with temp_file("csv", (FIX / "taobao_utf8bom.csv").read_bytes()) as path:
        for codec in ("rot13", "base64", "hex"):
            with pytest.raises(UserError, match="not a text encoding"):
                ingest_paths([path], rules_dir=RULES, encoding=codec)
