"""Streaming ingest: chunks cut at record boundaries import exactly like the whole file, and
buckets by conversation key reassemble exactly what ingest_paths returns."""

from __future__ import annotations

import codecs
import csv
import io
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qa_inspect import schema as S
from qa_inspect.errors import BugError, InputError
from qa_inspect.ingest import IMPORTERS, ingest_paths
from qa_inspect.ingest import frame as F
from qa_inspect.ingest.stream import (
    ChunkRef,
    assemble,
    chunk_rejects,
    conversation_key_bucket,
    fold_duplicates,
    import_context,
    load_bucket,
    merge_file_infos,
    parse_chunk,
    plan_chunks,
    spill_chunk,
)

FIX = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "rules"
HEADER = ["店铺", "会话编号", "客服账号", "买家昵称", "发送时间", "发送方", "消息内容", "商品ID", "消息类型", "金额"]


def _whole(path: Path, fmt: str, rules: Path = RULES) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """The reference: today's importer over the whole file."""
    imp = IMPORTERS.get(fmt)(path, import_context(rules))
    return imp.messages, imp.rejects, imp.info.data_rows


def _chunked(path: Path, chunk_bytes: int, rules: Path = RULES,
             encoding: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame, int, list[ChunkRef]]:
    plan = plan_chunks([path], rules_dir=rules, chunk_bytes=chunk_bytes, encoding=encoding)
    parts = [parse_chunk(ref, plan.ictx) for ref in plan.chunks]
    msgs = [p.messages for p in parts if len(p.messages)]
    staged = pd.concat(msgs, ignore_index=True) if msgs else S.empty_messages()
    return staged, chunk_rejects(parts), sum(p.data_rows for p in parts), plan.chunks


def _same_import(path: Path, fmt: str, chunk_bytes: int, rules: Path = RULES
                 ) -> tuple[list[ChunkRef], pd.DataFrame]:
    ref_m, ref_r, ref_n = _whole(path, fmt, rules)
    got_m, got_r, got_n, chunks = _chunked(path, chunk_bytes, rules)
    assert got_n == ref_n
    pd.testing.assert_frame_equal(got_r, ref_r)
    if len(ref_m):
        order = got_m[F.ORDER].to_numpy()
        assert (np.diff(order) > 0).all(), "ORDER must increase in source order"
        assert (got_m[F.FILE_ORDER] == 0).all()
        cols = [c for c in ref_m.columns if c != F.ORDER]
        pd.testing.assert_frame_equal(got_m[cols], ref_m[cols])
    else:
        assert not len(got_m)
    return chunks, got_r


def _csv_text(rows: list[list[str]], newline: str = "\n") -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator=newline)
    w.writerow(HEADER)
    w.writerows(rows)
    return buf.getvalue()


def _row(i: int, text: str, when: str = "2026-11-25 10:00:00", role: str = "买家") -> list[str]:
    return ["悦家家居旗舰店", f"C{i % 3}", "yj_a", f"buyer{i % 3}", when, role, text, "SKU1", "文本", ""]


@pytest.mark.parametrize("name", ["taobao_gb18030.csv", "taobao_gbk.csv", "taobao_utf8bom.csv", "shopee.jsonl"])
def test_fixture_chunks_equal_whole_file(name: str) -> None:
    fmt = "jsonl" if name.endswith(".jsonl") else "csv"
    for chunk_bytes in (1, 1 << 20):
        chunks, _ = _same_import(FIX / name, fmt, chunk_bytes)
        assert not any(c.whole_file for c in chunks)
        assert len(chunks) > 5 if chunk_bytes == 1 else len(chunks) == 1  # every record its own chunk


def test_sample_logs_csv_and_jsonl_in_small_chunks(sample_logs_dir: Path) -> None:
    for name, fmt in (("tmall_yuejia_2026-11-25.csv", "csv"), ("tw_meiyan_2026-11-23.jsonl", "jsonl")):
        path = sample_logs_dir / name
        if not path.exists():
            pytest.skip("sample_logs/ not generated yet")
        chunks, _ = _same_import(path, fmt, 20_000)
        assert len(chunks) > 3 and not any(c.whole_file for c in chunks)


def test_quoted_newlines_crlf_and_true_reject_lines(tmp_path: Path) -> None:
    rows = [_row(0, "第一行\n第二行, 还有\"引号\""), _row(1, "ok"), _row(2, "时间坏了", when="昨天"),
            _row(3, "多\n行\n消息"), _row(4, "角色坏了", role="路人"), _row(5, "")]
    for newline, enc in (("\r\n", "gb18030"), ("\n", "utf-8-sig"), ("\r\n", "utf-8")):
        path = tmp_path / f"x_{enc}_{len(newline)}.csv"
        path.write_bytes(_csv_text(rows, newline).encode(enc))
        chunks, rej = _same_import(path, "csv", 1)
        assert len(chunks) == len(rows)
        # physical lines: header 1; row0 2-3; row1 4; row2 5; row3 6-8; row4 9; row5 10
        assert rej[S.REJECT_LINE].tolist() == [5, 9, 10]
        assert [c.first_line for c in chunks] == [2, 4, 5, 6, 9, 10]


def test_blank_lines_field_counts_and_bare_delimiters(tmp_path: Path) -> None:
    text = ("\n,,,\n" + _csv_text([_row(0, "a"), _row(1, "b")]) + "\n\n"
            + ",".join(_row(2, "c")[:5]) + "\n" + ",,,,,,,,,\n" + _csv_text([_row(3, "d")]).split("\n", 1)[1])
    path = tmp_path / "gaps.csv"
    path.write_text(text, encoding="utf-8")
    _, rej = _same_import(path, "csv", 1)
    assert rej[S.REJECT_LINE].tolist() == [8, 9]


def test_irregular_quotes_fall_back_to_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "odd.csv"
    path.write_text(_csv_text([_row(0, "x")]) + ",".join(_row(1, 'say 5"7 "\n')).replace("\n", "") + "\n"
                    + ",".join(_row(2, "y")) + "\n", encoding="utf-8")
    chunks, _ = _same_import(path, "csv", 1)
    assert len(chunks) == 1 and chunks[0].whole_file


def test_forced_encoding_mojibake_fails_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "utf8.csv"
    path.write_text(_csv_text([_row(0, "abc"), _row(1, "中文")]), encoding="utf-8")
    plan = plan_chunks([path], rules_dir=RULES, chunk_bytes=1, encoding="gbk")
    assert len(plan.chunks) == 1 and plan.chunks[0].whole_file
    with pytest.raises(InputError) as exc:
        parse_chunk(plan.chunks[0], plan.ictx)
    assert exc.value.file == str(path) and exc.value.line == 1  # the header is the first non-ASCII line
    mixed = tmp_path / "mixed.csv"  # UTF-8, but the second data row was pasted in from a GBK tool
    mixed.write_bytes(_csv_text([_row(0, "abc")]).encode("utf-8") + ",".join(_row(1, "中文")).encode("gbk"))
    with pytest.raises(InputError, match=r"mixed\.csv:line 3: cannot decode as utf-8"):
        ingest_paths([mixed], rules_dir=RULES, encoding="utf-8", chunk_bytes=1)


_CELL = st.text(alphabet=st.sampled_from(list('ab中文 ,"\n\r\t')), max_size=8)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(_CELL, min_size=1, max_size=8), bad=st.lists(st.integers(0, 7), max_size=3),
       newline=st.sampled_from(["\n", "\r\n"]), enc=st.sampled_from(["utf-8", "utf-8-sig", "gb18030"]),
       chunk_bytes=st.integers(1, 120))
def test_property_random_csv(tmp_path: Path, texts: list[str], bad: list[int], newline: str, enc: str,
                             chunk_bytes: int) -> None:
    rows = [_row(i, t) for i, t in enumerate(texts)]
    for b in bad:  # short rows and bad times give rejects
        if b < len(rows):
            rows[b] = rows[b][:4] if b % 2 else _row(b, rows[b][6], when="25/11")
    path = tmp_path / "p.csv"
    path.write_bytes(_csv_text(rows, newline).encode(enc))
    _same_import(path, "csv", chunk_bytes)


# ------------------------------------------------------------------------------------- buckets

def _sessionised_rules(tmp_path: Path) -> Path:
    """A rules folder whose CSV profile has no conversation column: rows are sessionised."""
    rules = tmp_path / "rules"
    (rules / "import_profiles").mkdir(parents=True)
    shutil.copy(RULES / "shops.yaml", rules / "shops.yaml")
    prof = (RULES / "import_profiles" / "taobao_csv.yaml").read_text(encoding="utf-8")
    (rules / "import_profiles" / "nocid.yaml").write_text(prof.replace("  conversation_id: 会话编号\n", ""),
                                                          encoding="utf-8")
    return rules


def _spill_all(paths: list[Path], rules: Path, spill: Path, n: int, chunk_bytes: int
               ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list]:
    plan = plan_chunks(paths, rules_dir=rules, chunk_bytes=chunk_bytes)
    sums = [spill_chunk(ref, plan.ictx, spill, n) for ref in plan.chunks]
    got, dups = [], []
    for b in range(n):
        m, d = load_bucket(spill, b, 10.0, expected_rows=sum(x.rows_per_bucket.get(b, 0) for x in sums))
        got.append(m)
        dups.append(d)
    files = merge_file_infos(plan, sums)
    all_dups = pd.concat(dups, ignore_index=True)
    fold_duplicates(files, all_dups)
    msgs = pd.concat(got, ignore_index=True).sort_values([S.CONVERSATION_ID, S.SEQ], kind="stable")
    return msgs.reset_index(drop=True), all_dups, chunk_rejects(sums), files


def _sorted_rejects(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values([S.REJECT_FILE, S.REJECT_LINE], kind="stable").reset_index(drop=True)


@pytest.mark.parametrize("n_buckets", [1, 3, 17])
def test_buckets_reassemble_ingest_paths(tmp_path: Path, n_buckets: int) -> None:
    ref = ingest_paths([FIX], rules_dir=RULES)
    assert (ref.rejects[S.REJECT_REASON] == "duplicate row").sum() > 0
    msgs, dups, file_rej, files = _spill_all([FIX], RULES, tmp_path / "spill", n_buckets, 200)
    pd.testing.assert_frame_equal(msgs, ref.messages)
    is_dup = ref.rejects[S.REJECT_REASON] == "duplicate row"
    pd.testing.assert_frame_equal(_sorted_rejects(dups), _sorted_rejects(ref.rejects[is_dup]))
    pd.testing.assert_frame_equal(file_rej, ref.rejects[~is_dup].reset_index(drop=True))
    assert files == ref.files


def test_customer_without_ids_across_two_files_is_one_conversation(tmp_path: Path) -> None:
    rules = _sessionised_rules(tmp_path)
    a, b = tmp_path / "night1.csv", tmp_path / "night2.csv"
    late = [_row(i, f"晚{i}", when=f"2026-11-25 23:5{i}:00") for i in range(6)]
    early = [_row(i, f"早{i}", when=f"2026-11-26 00:0{i}:00") for i in range(6)]
    a.write_text(_csv_text(late + [_row(0, "晚0", when="2026-11-25 23:50:00")]), encoding="utf-8")  # a dup
    b.write_text(_csv_text(early), encoding="utf-8")
    ref = ingest_paths([a, b], rules_dir=rules)
    msgs, dups, _, files = _spill_all([a, b], rules, tmp_path / "spill", 17, 40)
    pd.testing.assert_frame_equal(msgs, ref.messages)
    assert len(dups) == 1 and files == ref.files
    for buyer, grp in msgs.groupby(S.CUSTOMER_ID):
        assert grp[S.CONVERSATION_ID].nunique() == 1, buyer
        assert grp[S.SOURCE_FILE].nunique() == 2
    hits = list((tmp_path / "spill").glob("b*/c*.pkl"))
    assert len({p.parent.name for p in hits}) <= 3  # three buyers -> at most three buckets
    hits[0].unlink()  # a lost spill file is an error, not a smaller night
    with pytest.raises(BugError, match="rows on disk"):
        load_bucket(tmp_path / "spill", int(hits[0].parent.name[1:]), 10.0, expected_rows=len(msgs))


def test_bucket_is_stable_across_dtypes_and_keeps_keys_together() -> None:
    df = pd.DataFrame({S.CONVERSATION_ID: pd.Series(["s:1", None, "s:2", None], dtype=object),
                       S.SHOP_ID: ["s", "s", "s", "s"], S.CUSTOMER_ID: ["u", "v", "u", "v"]})
    b = conversation_key_bucket(df, 7)
    assert ((b >= 0) & (b < 7)).all()
    assert b[1] == b[3]
    as_string = df.astype({S.CONVERSATION_ID: "string", S.CUSTOMER_ID: "string"})
    assert (conversation_key_bucket(as_string, 7) == b).all()
    one = conversation_key_bucket(df.iloc[[2]], 7)
    assert one[0] == b[2]


def test_chunk_ref_is_small_and_assemble_handles_empty() -> None:
    plan = plan_chunks([FIX / "taobao_gbk.csv"], rules_dir=RULES, chunk_bytes=1)
    blob = pickle.dumps(plan.chunks[0])
    assert len(blob) < 2000 and pickle.loads(blob) == plan.chunks[0]
    m, d = assemble(S.empty_messages(), 10.0)
    assert m.empty and d.empty and list(m.columns) == list(S.MESSAGE_COLUMNS)


def test_plan_estimates_records() -> None:
    plan = plan_chunks([FIX], rules_dir=RULES, chunk_bytes=1 << 20)
    total = sum(f.read_bytes().count(b"\n") for f in FIX.iterdir() if f.suffix != ".xlsx")
    assert plan.records_estimate == pytest.approx(total, abs=len(list(FIX.iterdir())))
    assert codecs.lookup(plan.chunks[0].encoding or "utf-8")
