"""Encoding detection: UTF-8 / BOM / GBK / GB18030 detected strictly; wrong forced encodings fail loudly."""

from __future__ import annotations

from pathlib import Path

import pytest

from qa_inspect import schema as S
from qa_inspect.errors import InputError, UserError
from qa_inspect.ingest import ingest_paths
from qa_inspect.ingest.encoding import decode_bytes

FIX = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize(("name", "encoding"), [
    ("taobao_gbk.csv", "gbk"),
    ("taobao_gb18030.csv", "gb18030"),
    ("taobao_utf8bom.csv", "utf-8-sig"),
])
def test_detected_encoding_and_text(name: str, encoding: str, rules_dir: Path) -> None:
    res = ingest_paths([FIX / name], rules_dir=rules_dir)
    assert res.files[0].encoding == encoding
    assert res.files[0].profile == "taobao_csv"
    texts = set(res.messages[S.TEXT])
    assert "在吗，这个四件套是纯棉的吗" in texts
    assert "亲，今天就发哦" in texts
    # The BOM must not leak into the first header (it would break the profile match) or the text.
    assert not any(t.startswith("\ufeff") for t in texts)


def test_gb18030_only_character_survives(rules_dir: Path) -> None:
    res = ingest_paths([FIX / "taobao_gb18030.csv"], rules_dir=rules_dir)
    assert "tb_吉祥𠮷" in set(res.messages[S.CUSTOMER_ID])


def test_forced_utf8_on_gbk_fails_with_file_and_line(rules_dir: Path) -> None:
    with pytest.raises(InputError) as ei:
        ingest_paths([FIX / "taobao_gbk.csv"], rules_dir=rules_dir, encoding="utf-8")
    assert ei.value.file and ei.value.file.endswith("taobao_gbk.csv")
    assert ei.value.line == 1  # the Chinese header is the first non-ASCII byte
    assert "taobao_gbk.csv" in str(ei.value)


@pytest.mark.parametrize("forced", ["gbk", "gb18030", "big5"])
def test_forced_legacy_codec_on_utf8_fails_instead_of_mojibake(forced: str, rules_dir: Path) -> None:
    for name in ("taobao_utf8bom.csv", "qianniu_night1.txt", "shopee.jsonl"):
        with pytest.raises(UserError) as ei:
            ingest_paths([FIX / name], rules_dir=rules_dir, encoding=forced)
        assert name in str(ei.value)


def test_mojibake_header_is_an_error_not_an_empty_import(tmp_path: Path, rules_dir: Path) -> None:
    # GBK bytes read as Big5 decode "successfully" into garbage: the header then matches no profile.
    src = (FIX / "taobao_gbk.csv").read_bytes()
    text, _ = decode_bytes(src, file="x", encoding="gbk")
    garbled = src.decode("big5", errors="replace").encode("big5", errors="replace")
    p = tmp_path / "garbled.csv"
    p.write_bytes(garbled)
    assert "店铺" in text
    with pytest.raises(InputError) as ei:
        ingest_paths([p], rules_dir=rules_dir)
    assert "matches no import profile" in str(ei.value)
    assert ei.value.line == 1


def test_auto_detection_order_and_invalid_bytes() -> None:
    assert decode_bytes("店铺".encode(), file="f")[1] == "utf-8"
    assert decode_bytes("店铺".encode("gbk"), file="f")[1] == "gbk"
    assert decode_bytes("𠮷".encode("gb18030"), file="f")[1] == "gb18030"
    assert decode_bytes(b"\xef\xbb\xbfab", file="f") == ("ab", "utf-8-sig")
    with pytest.raises(InputError) as ei:
        decode_bytes(b"ok\nok\n\xff\xff\xff", file="f")
    assert ei.value.line == 3
