"""Reports from only the messages they show: byte-identical to rendering from every message."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import synthetic as syn
from hypothesis import given, settings
from hypothesis import strategies as st
from synthetic import bench_night
from test_data import _store

from qa_inspect import schema as S
from qa_inspect.reports import render as R
from qa_inspect.reports.data import ReportData, buyer_alias, buyers_of, load_report_data, needed_only

HIDDEN_BUYER = "隐身买家"  # a nickname only an UNSHOWN conversation's messages carry
REPO = Path(__file__).resolve().parents[2]


def _with_fillers(data: ReportData) -> ReportData:
    """Synthetic data plus middling conversations of agent A1 that no page shows (neither worst
    nor best, no findings), one of whose messages carries a buyer nickname that a SHOWN message
    (the coaching pack's first pick, a4) mentions."""
    conv, msgs = data.conversations, data.messages
    base_c = conv[conv[S.CONVERSATION_ID] == f"{syn.SHOP_A}:a2"].iloc[0]
    base_m = msgs[msgs[S.CONVERSATION_ID] == f"{syn.SHOP_A}:a2"]
    new_c, new_m = [], []
    for k, total in enumerate((60.0, 61.0, 62.0, 63.0, 64.0, 65.0)):
        cid = f"{syn.SHOP_A}:f{k}"
        new_c.append(base_c.to_dict() | {S.CONVERSATION_ID: cid, S.TOTAL: total, S.CUSTOMER_ID: f"buyer_f{k}",
                                         S.N_FINDINGS: 0, S.STARTED_AT: base_c[S.STARTED_AT] + timedelta(days=k)})
        for r in base_m.to_dict("records"):
            who = HIDDEN_BUYER if k == 3 and r[S.ROLE] == "customer" else f"buyer_f{k}"
            new_m.append(r | {S.CONVERSATION_ID: cid, S.CUSTOMER_ID: who, S.TEXT: f"{r[S.TEXT]} #{k}"})
    conv = pd.concat([conv, pd.DataFrame(new_c)], ignore_index=True).astype(conv.dtypes.to_dict())
    msgs = pd.concat([msgs, pd.DataFrame(new_m)], ignore_index=True).astype(msgs.dtypes.to_dict())
    a4 = (msgs[S.CONVERSATION_ID] == f"{syn.SHOP_A}:a4") & (msgs[S.SEQ] == 0)
    msgs.loc[a4, S.TEXT] = f"{HIDDEN_BUYER}问：怎么还没发货"
    return replace(data, conversations=conv, messages=msgs)


def _files(data: ReportData, out: Path) -> dict[str, bytes]:
    idx = R.render_reports(data, out)
    return {p.relative_to(idx.out_dir).as_posix(): p.read_bytes() for p in idx.all_files()}


@pytest.fixture(scope="module")
def filled() -> ReportData:
    return _with_fillers(syn.build_report_data())


@pytest.fixture(scope="module")
def full_files(filled: ReportData, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return _files(filled, tmp_path_factory.mktemp("full"))


def test_needed_conversations_are_the_shown_ones_and_ignore_messages(filled: ReportData) -> None:
    need = R.needed_conversations(filled)
    a = syn.SHOP_A
    # A1: worst 3 = a1, f0, f1; best 2 = a2, f5. Fillers f2..f4 are shown nowhere.
    assert {f"{a}:a1", f"{a}:f0", f"{a}:f1", f"{a}:a2", f"{a}:f5"} <= need
    assert not {f"{a}:f2", f"{a}:f3", f"{a}:f4"} & need
    assert need <= set(filled.conversations[S.CONVERSATION_ID])
    assert R.needed_conversations(replace(filled, messages=filled.messages.iloc[0:0])) == need


def test_needed_only_renders_byte_identical_pages(filled: ReportData, full_files: dict[str, bytes],
                                                  tmp_path: Path) -> None:
    small = needed_only(filled)
    assert len(small.messages) < len(filled.messages)
    assert _files(small, tmp_path / "needed") == full_files
    # the hidden buyer's alias comes from the buyers frame: shown text is aliased either way ...
    coaching = full_files["coaching.html"].decode()
    assert buyer_alias(HIDDEN_BUYER) in coaching and HIDDEN_BUYER not in coaching
    # ... and without it the restricted frame would leak the nickname (so the test can fail)
    leaky = _files(replace(small, buyers=None), tmp_path / "leaky")
    assert HIDDEN_BUYER in leaky["coaching.html"].decode()


def test_every_needed_conversation_is_shown_somewhere(filled: ReportData, full_files: dict[str, bytes],
                                                     tmp_path: Path) -> None:
    """Minimality: dropping a needed filler conversation's messages changes some page (only the
    fillers: each render costs ~1 s; the other conversations are all some agent's worst/best)."""
    small = needed_only(filled)
    need = sorted(c for c in R.needed_conversations(filled) if ":f" in c)
    assert len(need) == 3
    for k, cid in enumerate(need):
        m = small.messages
        fewer = replace(small, messages=m[m[S.CONVERSATION_ID] != cid])
        assert _files(fewer, tmp_path / f"n{k}") != full_files, cid


def test_report_data_from_store_loads_only_needed_messages(filled: ReportData, tmp_path: Path) -> None:
    db = tmp_path / "qa.duckdb"
    _store(db, filled, ["r1", "r2"])
    con = duckdb.connect(str(db), read_only=True)
    try:
        every = load_report_data(con, "r2", filled.shops, filled.generated_at, all_messages=True)
        need = load_report_data(con, "r2", filled.shops, filled.generated_at)
    finally:
        con.close()
    assert set(need.messages[S.CONVERSATION_ID]) == R.needed_conversations(every)
    assert len(need.messages) < len(every.messages)
    pd.testing.assert_frame_equal(
        need.messages, every.messages[every.messages[S.CONVERSATION_ID].isin(R.needed_conversations(every))]
        .reset_index(drop=True))
    assert set(need.buyers[S.CUSTOMER_ID]) == set(every.messages[S.CUSTOMER_ID])
    assert _files(need, tmp_path / "need") == _files(every, tmp_path / "every")


def test_bench_run_renders_identically_from_needed_messages(tmp_path: Path) -> None:
    data = bench_night(6, 3)
    small = needed_only(data)
    assert len(small.messages) < len(data.messages) / 2
    assert _files(small, tmp_path / "needed") == _files(data, tmp_path / "full")


def test_buyers_of_is_the_distinct_shop_buyers(filled: ReportData) -> None:
    b = buyers_of(filled.messages)
    assert len(b) == len(b.drop_duplicates())
    assert set(zip(b[S.SHOP_ID], b[S.CUSTOMER_ID], strict=True)) == set(
        zip(filled.messages[S.SHOP_ID], filled.messages[S.CUSTOMER_ID], strict=True))


def test_rule_table_in_chunks_is_the_same(filled: ReportData, monkeypatch: pytest.MonkeyPatch) -> None:
    f = pd.concat([filled.findings] * 3, ignore_index=True)
    whole = R._rule_table(f, None)
    monkeypatch.setattr(R, "_CHUNK", 2)
    assert R._rule_table(f, None) == whole
    assert sum(r["count"] for r in whole) == len(f)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c", "d", None]), max_size=25), st.integers(0, 2**32))
def test_selling_head_holds_every_agents_picks(owners: list[str | None], seed: int) -> None:
    """Reference: each agent's 3 picks taken from the whole list."""
    rows = [{S.AGENT_ID: o, "n": k} for k, o in enumerate(owners)]
    random.Random(seed).shuffle(rows)
    head = rows[:R._selling_head([r[S.AGENT_ID] for r in rows])]
    for agent in ("a", "b", "c", "d", "e"):
        assert R._selling_picks(head, agent) == R._selling_picks(rows, agent)


def test_row_conversion_of_big_frames_gives_the_same_pages(filled: ReportData, full_files: dict[str, bytes],
                                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(R, "_CONVERT_ROWS", 0)  # every frame "big": converted per conversation
    assert _files(filled, tmp_path / "rows") == full_files


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(alphabet="ab买家-1", min_size=1, max_size=4), st.text(alphabet="ab买家-1x", max_size=5),
                       max_size=8),
       st.text(alphabet="ab买家-1xy", max_size=30))
def test_buyer_masker_is_the_plain_replace_loop(aliases: dict[str, str], text: str) -> None:
    """The substring-lookup version replaces exactly what the name-by-name loop replaces, aliases that
    contain or complete other names included."""
    from qa_inspect.reports.render import buyer_masker

    names = sorted((n for n in aliases if len(n) >= 2), key=lambda n: (-len(n), n))
    expected = text
    for n in names:
        if n in expected:
            expected = expected.replace(n, aliases[n])
    assert buyer_masker(aliases, lambda t: t)(text) == expected
