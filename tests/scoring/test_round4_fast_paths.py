"""Round-4 fast paths of the scoring stage against their plain definitions: rows used in place
when already sorted, dates formatted once per day, the pre-sale search in Arrow, the serving
agent by integer keys, per-dimension sums rank by rank."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qa_inspect import schema as S
from qa_inspect.scoring.conversations import (
    _top_agent,
    _ymd,
    presale_pattern,
    re2_literals,
    search_rows,
    sorted_rows,
)
from qa_inspect.scoring.scorecard import DEFAULT_PRESALE_WORDS, _sequential_sums


def _frame(cids: list[object], seqs: list[int]) -> pd.DataFrame:
    return pd.DataFrame({S.CONVERSATION_ID: pd.array(cids, dtype="string"), S.SEQ: seqs,
                         S.TEXT: pd.array([f"t{i}" for i in range(len(cids))], dtype="string")},
                        index=np.arange(len(cids)) * 7)


@pytest.mark.parametrize(("cids", "seqs"), [
    (["a", "a", "b", "c"], [0, 1, 0, 0]),      # sorted: used in place
    (["a", "b", "a", "c"], [0, 0, 1, 0]),      # id out of order
    (["a", "a", "b"], [1, 0, 0]),              # seq out of order
    (["a", "a", "b"], [1, 1, 0]),              # equal seqs: the stable sort keeps them
    (["b", None, "a", "a"], [0, 0, 1, 0]),     # missing id: sorted last by the sort
    (["ä", "a", "z", "Z"], [0, 0, 0, 0]),      # code point order
    (["x"], [0]),
])
def test_sorted_rows_is_the_stable_sort(cids: list[object], seqs: list[int]) -> None:
    m = _frame(cids, seqs)
    need = [S.CONVERSATION_ID, S.SEQ, S.TEXT]
    got, codes, ids = sorted_rows(m, need)
    want = m[need].sort_values([S.CONVERSATION_ID, S.SEQ], kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    if codes is not None:  # the codes handed back are the sorted factorisation of the result
        c2, i2 = pd.factorize(want[S.CONVERSATION_ID], sort=True)
        assert np.array_equal(codes, c2) and list(ids) == list(i2)


@pytest.mark.parametrize("tz", ["Asia/Shanghai", "America/New_York", "Europe/London", "Asia/Kathmandu"])
def test_ymd_is_strftime(tz: str) -> None:
    rng = np.random.default_rng(3)
    ns = rng.integers(-3 * 10**17, 2 * 10**18, size=400)  # 1960..2033, DST changes included
    utc = pd.Series(pd.to_datetime(ns, utc=True))
    edges = pd.Series(pd.to_datetime(["2026-03-08 06:59:59.999999999", "2026-03-08 07:00:00",
                                      "2026-11-01 05:59:59", "2026-11-01 06:00:00", "1969-12-31 23:59:59.5"],
                                     utc=True, format="ISO8601"))
    local = pd.concat([utc, edges], ignore_index=True).dt.tz_convert(tz)
    assert list(_ymd(local)) == list(local.dt.strftime("%Y-%m-%d"))
    coarse = local.dt.as_unit("s")
    assert list(_ymd(coarse)) == list(coarse.dt.strftime("%Y-%m-%d"))


def test_search_rows_arrow_matches_python_regex() -> None:
    words = list(DEFAULT_PRESALE_WORDS)
    pat = presale_pattern(words)
    assert pat is not None and re2_literals(words) is not None
    texts = ["这个多少钱呀", "多少 钱", None, "", "有没有货", "價格", "😀优惠券😀", "包\n邮", "尺码表", "x" * 300 + "下单"]
    col = pd.Series(texts, dtype="string")
    rows = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0])  # any order, repeats
    want = col.iloc[rows].fillna("").astype(str).str.contains(pat, regex=True).to_numpy(dtype=bool)
    assert np.array_equal(search_rows(col, rows, pat, re2_literals(words)), want)
    assert np.array_equal(search_rows(col.astype(object), rows, pat, None), want)
    # words with regex syntax have no RE2 form: Python's regex answers
    assert re2_literals(["a.b", "价格"]) is None and re2_literals([]) is None
    assert re2_literals(["价格", "价", ""]) == "价格|价"


def test_top_agent_matches_group_by() -> None:
    rng = np.random.default_rng(11)
    for _ in range(30):
        n = int(rng.integers(1, 60))
        c = np.sort(rng.integers(0, 8, size=n))
        agent = pd.Series(pd.array([f"a{k}" for k in rng.integers(0, 4, size=n)], dtype="string"))
        got = _top_agent(c, agent)
        ha = pd.DataFrame({"c": c, S.AGENT_ID: agent.array})
        want = (ha.groupby(["c", S.AGENT_ID]).size().rename("n").reset_index()
                .sort_values(["c", "n"], ascending=[True, False], kind="stable")
                .drop_duplicates("c").set_index("c")[S.AGENT_ID])
        assert list(got.index) == list(want.index) and list(got) == list(want)
        assert got.dtype == want.dtype
    assert len(_top_agent(np.zeros(0, dtype=np.int64), pd.Series(pd.array([], dtype="string")))) == 0


def test_sequential_sums_are_pythons_sum() -> None:
    rng = np.random.default_rng(5)
    values = rng.normal(0, 1e6, size=500) * rng.choice([1.0, 1e-9, -1.0], size=500)
    values[::17] = -0.0
    sizes = rng.integers(1, 40, size=30)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    starts = starts[starts < len(values)]
    ends = np.minimum(np.append(starts[1:], len(values)), len(values))
    got = _sequential_sums(values, starts, ends)
    vals = values.tolist()
    want = [sum(vals[a:b]) for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]
    assert got.tolist() == want  # bit for bit (float ==, no tolerance)
    assert got.tolist() != [float(np.sum(values[a:b])) for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]


def test_group_first_is_groupby_first() -> None:
    from qa_inspect.scoring.conversations import _group_first

    rng = np.random.default_rng(8)
    for _ in range(20):
        n_rows, n = int(rng.integers(0, 40)), 6
        codes = rng.integers(-1, n, size=n_rows)  # unsorted, -1 = no group
        vals = pd.Series(pd.array([None if rng.random() < 0.3 else f"v{k}" for k in range(n_rows)], dtype="string"))
        got = _group_first(vals, codes, n)
        keep = codes >= 0
        want = vals[keep].groupby(codes[keep], sort=True).first().reindex(pd.RangeIndex(n)).array
        assert got.dtype == want.dtype and list(got) == list(want)  # NA == NA via list equality of pd.NA


def test_grades_are_scorecard_grade() -> None:
    from pathlib import Path

    from qa_inspect.scoring.scorecard import _grades, load_scorecard

    card = load_scorecard(Path(__file__).resolve().parents[2] / "rules")
    mins = [b.min for b in card.grades]
    totals = np.array([np.nan, 0.0, 100.0, -1.0, *mins, *(m - 1e-9 for m in mins), *(m - 2e-9 for m in mins),
                       *np.linspace(0, 100, 51)])
    assert _grades(card, totals).tolist() == [card.grade(t) for t in totals.tolist()]
