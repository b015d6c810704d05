"""safe_path keeps hostile ids inside the folder and distinct; write_csv_safe is Excel-safe and atomic."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qa_inspect import safe_io
from qa_inspect.errors import BugError
from qa_inspect.safe_io import neutralise_formula, safe_component, safe_path, write_csv_safe

HOSTILE = ["../../x", "/etc/passwd", "con", "CON", "Con", "NUL", "nul.txt", "com1", "LPT9.html", "a/b", "a\\b",
           "a_b", "a\x00b", "a\x00c", "x" * 300, "x" * 301, "晨" * 100, "晨" * 101, ".", "..", "...", "",
           " ", "-rf", "a:b", "a*b", "a?b", "a|b", 'a"b', "<a>", "\u202egnp.exe", "agent01", "Agent01",
           "ａｇｅｎｔ", "agent", "e\u0301", "\u00e9", "tab\there", "x_0123456789", "x", "名字 有空格"]


def test_hostile_ids_become_distinct_names_inside_the_folder(tmp_path: Path) -> None:
    paths = [safe_path(tmp_path, ident, suffix=".html") for ident in HOSTILE]
    names = [p.name for p in paths]
    # distinct even on a case-insensitive file system (Windows, macOS)
    assert len({n.lower() for n in names}) == len(HOSTILE)
    for ident, p in zip(HOSTILE, paths, strict=True):
        assert p.parent == tmp_path, ident
        assert len(p.name.encode()) <= 130 and "\x00" not in p.name and "/" not in p.name and "\\" not in p.name
        stem = p.name.split(".")[0].lower()
        assert stem not in ("con", "nul", "com1", "lpt9", "prn", "aux", ""), ident
        assert not p.name.startswith(("-", ".", " ")), ident
        p.write_text(ident.replace("\x00", "?"), encoding="utf-8")  # really creatable
    assert len(list(tmp_path.iterdir())) == len(HOSTILE)
    assert not (tmp_path.parent / "x.html").exists()


def test_plain_ids_are_kept_and_changed_ones_get_a_hash() -> None:
    assert safe_component("agent-01_a.b") == "agent-01_a.b"
    assert safe_component("晨光小美") == "晨光小美"
    assert safe_component("../../x").startswith("x_") and len(safe_component("../../x")) == 12
    assert safe_component("a/b") != safe_component("a_b") != safe_component("a:b")
    assert safe_component("x" * 300) != safe_component("x" * 301)


def test_nested_parts_and_bad_suffix(tmp_path: Path) -> None:
    p = safe_path(tmp_path, "..", "../etc", "passwd", suffix=".csv")
    assert p.relative_to(tmp_path).parts[0] != ".." and len(p.relative_to(tmp_path).parts) == 3
    with pytest.raises(BugError):
        safe_path(tmp_path, "a", suffix="/../../x")
    with pytest.raises(BugError):
        safe_path(tmp_path)


def test_a_symlinked_folder_cannot_be_used_to_escape(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    os.symlink("/", tmp_path / "base" / "root_link")
    # the sanitised name never equals the link name... unless the id is exactly that name
    with pytest.raises(BugError):
        safe_path(tmp_path / "base", "root_link", "etc")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=80), min_size=2, max_size=6, unique=True))
def test_property_distinct_ids_never_collide(ids: list[str]) -> None:
    names = [safe_component(i) for i in ids]
    assert len({n.lower() for n in names}) == len(ids)
    for n in names:
        assert n and "/" not in n and "\\" not in n and "\x00" not in n and n not in (".", "..")
        assert len(n.encode("utf-8")) <= 120


# --- CSV -------------------------------------------------------------------------------------

def _read(path: Path) -> list[list[str]]:
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    return list(csv.reader(io.StringIO(raw[3:].decode("utf-8"), newline="")))


def test_formula_cells_are_neutralised_numbers_are_not(tmp_path: Path) -> None:
    df = pd.DataFrame({
        "text": ["=HYPERLINK(\"http://x\",\"点我\")", "+1+1", "-2", "@SUM(A1)", "\tx", "\rx", "正常", "a=b", None],
        "num": [-1.5, 2.0, -3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
        "int": [-1, 2, 3, 4, 5, 6, 7, 8, 9],
    })
    before = df.copy()
    out = write_csv_safe(df, tmp_path / "sub" / "x.csv")
    rows = _read(out)
    assert rows[0] == ["text", "num", "int"]
    texts = [r[0] for r in rows[1:]]
    assert texts == ["'=HYPERLINK(\"http://x\",\"点我\")", "'+1+1", "'-2", "'@SUM(A1)", "'\tx", "'\rx", "正常", "a=b", ""]
    assert [r[1] for r in rows[1:3]] == ["-1.5", "2.0"] and rows[1][2] == "-1"
    pd.testing.assert_frame_equal(df, before)  # input untouched


def test_formula_in_header_and_object_cells(tmp_path: Path) -> None:
    df = pd.DataFrame({"=cmd|' /C calc'!A0": [["=x"], 3, "-y"]})
    rows = _read(write_csv_safe(df, tmp_path / "h.csv"))
    assert rows[0] == ["'=cmd|' /C calc'!A0"] and rows[1] == ["['=x']"]
    assert rows[2] == ["3"] and rows[3] == ["'-y"]


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    write_csv_safe(pd.DataFrame({"a": ["old"]}), target)

    class Boom:
        def __str__(self) -> str:
            raise RuntimeError("crash while writing")

    with pytest.raises(RuntimeError):
        write_csv_safe(pd.DataFrame({"a": ["new", Boom()]}), target)
    assert _read(target) == [["a"], ["old"]]  # the last good file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_lone_sign_is_not_a_formula_but_signed_text_is(tmp_path: Path) -> None:
    import pandas as pd

    from qa_inspect.safe_io import write_csv_safe

    path = write_csv_safe(pd.DataFrame({"polarity": ["-", "+", "-1+1", "+cmd"]}), tmp_path / "p.csv")
    rows = path.read_text(encoding="utf-8-sig").splitlines()[1:]
    assert rows == ["-", "+", "'-1+1", "'+cmd"]
    assert path.stat().st_mode & 0o044, "CSV outputs must be readable like the other outputs"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(alphabet=st.sampled_from(list("=+-@\t\r'a中 1")), max_size=6)),
                max_size=40))
def test_arrow_neutraliser_matches_the_cell_by_cell_one(values: list[str | None]) -> None:
    """The vectorised path (CSV outputs of a million findings) must give exactly the per-cell values."""
    import pyarrow as pa

    from qa_inspect.safe_io import neutralise_arrow

    expected = [neutralise_formula(v) for v in values]
    assert neutralise_arrow(pa.array(values, type=pa.large_string())).to_pylist() == expected
    assert neutralise_arrow(pa.array(values, type=pa.string())).to_pylist() == expected
    s = pd.Series(values, dtype=object)
    got = safe_io._neutralise_series(s).tolist()
    assert [None if v is pd.NA else v for v in got] == [None if v is None else v for v in expected]


def test_mixed_object_columns_fall_back_to_cell_by_cell() -> None:
    s = pd.Series(["=1", 5, None, "-x", 2.5], dtype=object)
    assert safe_io._neutralise_series(s).tolist() == ["'=1", 5, None, "'-x", 2.5]


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
@pytest.mark.parametrize("fraction", [False, True])
@pytest.mark.parametrize("nat", ["none", "some", "all"])
def test_utc_datetimes_are_written_as_pandas_writes_them(tmp_path: Path, unit: str, fraction: bool, nat: str) -> None:
    """write_csv_safe formats UTC datetime columns in numpy; the bytes must be pandas' own: whole
    seconds unless some value has a fraction (then all at the unit's precision), NaT empty."""
    import numpy as np

    rng = np.random.default_rng(7)
    v = rng.integers(-2_000_000_000, 4_000_000_000, 300) * 10**9
    if fraction:
        v[::7] += rng.integers(1, 10**9, len(v[::7]))
    s = pd.Series(pd.to_datetime(v, unit="ns", utc=True)).astype(f"datetime64[{unit}, UTC]")
    if nat == "some":
        s[::5] = pd.NaT
    elif nat == "all":
        s[:] = pd.NaT
    df = pd.DataFrame({"at": s, "n": range(len(s)), "local": s.dt.tz_convert("Asia/Shanghai")})
    ours = write_csv_safe(df, tmp_path / "a.csv").read_bytes()
    with open(tmp_path / "b.csv", "w", encoding="utf-8-sig", newline="") as fh:
        df.to_csv(fh, index=False, lineterminator="\r\n")
    assert ours == (tmp_path / "b.csv").read_bytes()


@pytest.mark.parametrize("rows", [1, 7, 50])
def test_chunked_csv_is_byte_identical_to_one_piece(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    rows: int) -> None:
    """write_csv_safe writes big frames a chunk of rows at a time; the file must be the one-piece
    file: column-wide choices (a UTC column's precision, ints with a null as floats) stay whole."""
    import numpy as np

    rng = np.random.default_rng(3)
    n = 120
    at = pd.Series(pd.to_datetime(rng.integers(0, 2 * 10**9, n) * 10**9, utc=True))
    at[5] = at[5] + pd.Timedelta(milliseconds=250)  # one fraction: the whole column gets it
    at[9] = pd.NaT
    df = pd.DataFrame({
        "text": rng.choice(["好的", "=SUM(A1)", "-x", "+", "", None, "a,b", 'say "hi"'], n),
        "n": rng.integers(-5, 5, n), "maybe": pd.array([None if i % 11 == 0 else i for i in range(n)], "Int64"),
        "f": rng.normal(size=n), "flag": rng.random(n) > 0.5, "at": at,
        "whole_at": pd.Series(pd.to_datetime(rng.integers(0, 2 * 10**9, n) * 10**9, utc=True)),
        "s": pd.array(rng.choice(["x", "@y", None], n), dtype="string")})
    one = write_csv_safe(df, tmp_path / "one.csv").read_bytes()
    monkeypatch.setattr(safe_io, "CSV_CHUNK_ROWS", rows)
    assert write_csv_safe(df, tmp_path / "chunked.csv").read_bytes() == one
    local = df.assign(at=df["at"].dt.tz_convert("Asia/Shanghai"))  # column-wide format: one piece
    one_local = write_csv_safe(local, tmp_path / "l1.csv").read_bytes()
    monkeypatch.setattr(safe_io, "CSV_CHUNK_ROWS", 10**9)
    assert write_csv_safe(local, tmp_path / "l2.csv").read_bytes() == one_local
