"""Strict text decoding: detect UTF-8 / UTF-8-BOM / GBK / GB18030, never yield mojibake silently.

Chinese exports come out of Windows tools as GBK/GB18030 and out of web tools as UTF-8
(often with a BOM so Excel opens them). Decoding is strict and tried in a fixed order; a
forced ``--encoding`` that would produce mojibake fails with the file and line.
"""

from __future__ import annotations

import codecs

from qa_inspect.errors import InputError

# Order matters: UTF-8 first (GBK text is practically never valid UTF-8), then GBK (a subset of
# GB18030, so the name reported is the narrowest that works), then GB18030.
AUTO_ENCODINGS: tuple[str, ...] = ("utf-8", "gbk", "gb18030")


def _line_of(data: bytes, offset: int) -> int:
    """1-based line of a byte offset; \r\n, \r and \n each end a line (see normalise_newlines)."""
    return data.count(b"\n", 0, offset) + data.count(b"\r", 0, offset) - data.count(b"\r\n", 0, offset) + 1


def normalise_newlines(text: str) -> str:
    """\r\n and lone \r (old Mac tools, some IM exports) -> \n, so every importer counts lines alike.

    Only these three are line breaks: str.splitlines() would also split on U+2028, \x1c, \x85 ...
    which occur inside chat messages and JSON strings.
    """
    if "\r" not in text:
        return text
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _canonical(name: str, file: str) -> str:
    try:
        info = codecs.lookup(name)
    except LookupError:
        raise InputError(f"unknown encoding '{name}' (try utf-8, gbk, gb18030, big5)", file=file) from None
    if not getattr(info, "_is_text_encoding", True):  # rot13, base64, hex ... are bytes transforms
        raise InputError(f"'{name}' is not a text encoding (try utf-8, gbk, gb18030, big5)", file=file)
    return info.name


def _decode_bytes(data: bytes, *, file: str, encoding: str | None = None) -> tuple[str, str]:
    """Strict decoding (see decode_bytes), newlines untouched."""
    if encoding:
        enc = _canonical(encoding, file)
        has_bom = data.startswith(codecs.BOM_UTF8)
        if enc in ("utf-8", "utf-8-sig"):
            enc = "utf-8-sig" if has_bom else "utf-8"
        else:
            if has_bom:
                raise InputError(f"file starts with a UTF-8 byte-order mark but --encoding {encoding} "
                                 "was forced; decoding would give mojibake", file=file, line=1)
            if not data.isascii() and _is_utf8(data):
                first = _first_non_ascii_line(data)
                raise InputError(f"file is valid UTF-8 but --encoding {encoding} was forced; decoding "
                                 "it that way would give mojibake (drop --encoding or use utf-8)",
                                 file=file, line=first)
        try:
            return data.decode(enc, errors="strict"), enc
        except UnicodeDecodeError as exc:
            raise InputError(f"cannot decode as {encoding}: {exc.reason} (byte 0x{data[exc.start]:02x} "
                             f"at offset {exc.start})", file=file, line=_line_of(data, exc.start)) from None
        except (UnicodeError, ValueError) as exc:  # idna, punycode ... fail without a position
            raise InputError(f"cannot decode as {encoding}: {exc}", file=file) from None
    if data.startswith(codecs.BOM_UTF8):
        try:
            return data[len(codecs.BOM_UTF8):].decode("utf-8"), "utf-8-sig"
        except UnicodeDecodeError as exc:
            raise InputError(f"has a UTF-8 byte-order mark but is not valid UTF-8: {exc.reason}",
                             file=file, line=_line_of(data, exc.start + 3)) from None
    furthest: tuple[int, str] | None = None
    for enc in AUTO_ENCODINGS:
        try:
            return data.decode(enc, errors="strict"), enc
        except UnicodeDecodeError as exc:
            if furthest is None or exc.start > furthest[0]:
                furthest = (exc.start, enc)
    assert furthest is not None
    raise InputError(f"not valid UTF-8, GBK or GB18030 text (pass --encoding if you know it; "
                     f"{furthest[1]} failed at offset {furthest[0]})", file=file,
                     line=_line_of(data, furthest[0]))


def decode_bytes(data: bytes, *, file: str, encoding: str | None = None) -> tuple[str, str]:
    """Return ``(text, encoding_used)`` with \r\n / \r normalised to \n; a BOM is stripped and
    reported as ``utf-8-sig``.

    With ``encoding`` forced, a decode error raises InputError at the offending line; so does
    forcing a legacy codec on bytes that are valid UTF-8 (GBK/GB18030 would "decode" them into
    mojibake without any error).
    """
    text, enc = _decode_bytes(data, file=file, encoding=encoding)
    return normalise_newlines(text), enc


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _first_non_ascii_line(data: bytes) -> int:
    for i, b in enumerate(data):
        if b >= 0x80:
            return _line_of(data, i)
    return 1
