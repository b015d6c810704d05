"""The merchant page's score-distribution chart as PNG, drawn with Pillow.

Merchant pages are also mailed, and Gmail/Outlook do not render SVG, so this chart stays a PNG.
matplotlib drew it in ~0.25 s plus ~0.5 s to import; this draws the same chart (bars per
10-point bin, axes, ticks, labels, legend) in a few milliseconds. Output is deterministic for the
same input and font. Text is ASCII (see charts.py), drawn with DejaVu Sans when it is installed.
"""

from __future__ import annotations

import importlib.util
import io
import math
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

W, H = 600, 240
LEFT, RIGHT, TOP, BOTTOM = 62, 16, 12, 48
INK = (34, 34, 34)
GRID = (231, 231, 231)  # #b0b0b0 at 30 % on white
_FONT_NAME = "DejaVuSans.ttf"


def _font_path() -> str | None:
    """DejaVu Sans from matplotlib's data (found without importing it) or the system fonts."""
    spec = importlib.util.find_spec("matplotlib")
    places = [Path(p) / "mpl-data" / "fonts" / "ttf" for p in (spec.submodule_search_locations or [])] if spec else []
    places.append(Path("/usr/share/fonts/truetype/dejavu"))
    for place in places:
        if (place / _FONT_NAME).is_file():
            return str(place / _FONT_NAME)
    return None


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    path = _font_path()
    return ImageFont.truetype(path, size) if path else ImageFont.load_default(size=size)


def blend(hex_colour: str, alpha: float) -> tuple[int, int, int]:
    """``hex_colour`` at ``alpha`` over white, as one opaque RGB colour."""
    rgb = [int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)]
    r, g, b = (round(alpha * c + (1 - alpha) * 255) for c in rgb)
    return r, g, b


def nice_top(values: Sequence[float]) -> float:
    """The y-axis top: the largest value rounded up to 10 (at least 10, at most 100)."""
    top = max([*values, 0.0])
    return float(min(100, max(10, 10 * math.ceil(top / 10))))


def distribution_png(shares: Sequence[float], *, colour: str, label: str, alpha: float = 0.8) -> bytes:
    """Bars (60 % of each 10-point bin) of ``shares`` (% per bin, 10 bins), x 0-100, y 0 to
    :func:`nice_top`, grid on the x ticks, legend ``label`` top left."""
    img = Image.new("RGB", (W, H), (255, 255, 255))
    d = ImageDraw.Draw(img)
    small, tick = _font(11), _font(12)
    x0, x1, y0, y1 = LEFT, W - RIGHT, TOP, H - BOTTOM
    ymax = nice_top(shares)

    def px(v: float) -> float:
        return x0 + v / 100 * (x1 - x0)

    def py(v: float) -> float:
        return y1 - v / ymax * (y1 - y0)

    for v in range(0, 101, 20):
        d.line([(round(px(v)), y0), (round(px(v)), y1)], fill=GRID, width=1)
    fill = blend(colour, alpha)
    for i, s in enumerate(shares):
        if s > 0:  # a tiny share still gets a 1 px bar: it is not zero
            top = min(round(py(min(s, ymax))), y1 - 1)
            d.rectangle([round(px(10 * i + 2)), top, round(px(10 * i + 8)) - 1, y1 - 1], fill=fill)
    d.line([(x0, y0), (x0, y1)], fill=INK, width=1)
    d.line([(x0, y1), (x1, y1)], fill=INK, width=1)
    for v in range(0, 101, 20):
        x = round(px(v))
        d.line([(x, y1), (x, y1 + 4)], fill=INK, width=1)
        d.text((x, y1 + 6), str(v), font=tick, fill=INK, anchor="mt")
    step = 10 if ymax <= 50 else 20
    for v in range(0, int(ymax) + 1, step):
        y = round(py(v))
        d.line([(x0 - 4, y), (x0, y)], fill=INK, width=1)
        d.text((x0 - 7, y), str(v), font=tick, fill=INK, anchor="rm")
    d.text(((x0 + x1) / 2, H - 4), "Conversation score", font=tick, fill=INK, anchor="md")
    # the y label: drawn on its own strip and turned a quarter left
    text = "% of conversations"
    box = d.textbbox((0, 0), text, font=tick)
    strip = Image.new("RGB", (box[2] - box[0] + 2, box[3] - box[1] + 4), (255, 255, 255))
    ImageDraw.Draw(strip).text((1 - box[0], 2 - box[1]), text, font=tick, fill=INK)
    turned = strip.rotate(90, expand=True)
    img.paste(turned, (4, round((y0 + y1) / 2 - turned.height / 2)))
    # legend, top left inside the axes
    lw = 40 + d.textlength(label, font=small)
    lx, ly = x0 + 8, y0 + 6
    d.rectangle([lx, ly, round(lx + lw), ly + 20], fill=(255, 255, 255), outline=(204, 204, 204))
    d.rectangle([lx + 6, ly + 6, lx + 26, ly + 13], fill=fill)
    d.text((lx + 32, ly + 10), label, font=small, fill=INK, anchor="lm")
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()
