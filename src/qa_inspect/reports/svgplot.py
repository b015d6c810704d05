"""A tiny SVG plotter for the report charts: axes, ticks, grid, bars, lines, legend.

Writing the few dozen elements a chart has is ~100x faster than drawing it with matplotlib and
gives deterministic text. Rules that keep the markup inert and CSP-clean: every piece of text
goes through :func:`esc`, coordinates are formatted numbers, and only presentation attributes
are used (a ``style`` attribute or element would need 'unsafe-inline' in the page's CSP).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from html import escape

_INK = "#222222"
_GRID = "#b0b0b0"
# characters XML 1.0 forbids (an SVG copied out of the page must still parse)
_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def esc(text: str) -> str:
    """Text for an SVG element or attribute: markup escaped, XML-illegal characters dropped."""
    return escape(_BAD.sub("", str(text)), quote=True)


def fmt(v: float, digits: int = 1) -> str:
    s = f"{v:.{digits}f}"
    return "0" if digits == 0 and s == "-0" else ("0.0" if s == "-0.0" else s)


class Plot:
    """One chart: a ``width`` x ``height`` px canvas with a plot area inside the margins mapping
    ``xlim``/``ylim`` (``(bottom, top)``; pass them reversed to invert an axis)."""

    def __init__(self, width: int, height: int, *, left: int, right: int, top: int, bottom: int,
                 xlim: tuple[float, float], ylim: tuple[float, float]) -> None:
        self.w, self.h = width, height
        self.x0, self.x1 = left, width - right
        self.y0, self.y1 = top, height - bottom  # pixel rows of the top and bottom of the plot area
        self.xlim, self.ylim = xlim, ylim
        self.parts: list[str] = []

    def x(self, v: float) -> float:
        a, b = self.xlim
        return self.x0 + (v - a) / (b - a) * (self.x1 - self.x0)

    def y(self, v: float) -> float:
        bottom, top = self.ylim
        return self.y0 + (top - v) / (top - bottom) * (self.y1 - self.y0)

    def _clip_x(self, v: float) -> float:
        return min(max(v, self.x0), self.x1)

    def _clip_y(self, v: float) -> float:
        return min(max(v, self.y0), self.y1)

    def xgrid(self, values: Sequence[float]) -> None:
        for v in values:
            px = fmt(self.x(v))
            self.parts.append(f'<line x1="{px}" y1="{self.y0}" x2="{px}" y2="{self.y1}" stroke="{_GRID}" '
                              'stroke-opacity="0.3" stroke-width="0.8"/>')

    def hbar(self, center: float, height: float, value: float, color: str, opacity: float = 1.0) -> None:
        """A bar from x=0 to ``value`` (nothing when it is not positive)."""
        if not value > 0:
            return
        ya, yb = self.y(center - height / 2), self.y(center + height / 2)
        x0, x1 = self._clip_x(self.x(0.0)), self._clip_x(self.x(value))
        self._rect(x0, min(ya, yb), x1 - x0, abs(yb - ya), color, opacity)

    def vbar(self, center: float, width: float, value: float, color: str, opacity: float = 1.0) -> None:
        """A bar from y=0 up to ``value`` (nothing when it is not positive; clipped at the top)."""
        if not value > 0:
            return
        xa, xb = self.x(center - width / 2), self.x(center + width / 2)
        top, base = self._clip_y(self.y(value)), self._clip_y(self.y(0.0))
        self._rect(min(xa, xb), top, abs(xb - xa), base - top, color, opacity)

    def _rect(self, x: float, y: float, w: float, h: float, color: str, opacity: float) -> None:
        op = "" if opacity == 1.0 else f' fill-opacity="{fmt(opacity)}"'
        self.parts.append(f'<rect x="{fmt(x)}" y="{fmt(y)}" width="{fmt(w)}" height="{fmt(h)}" fill="{color}"{op}/>')

    def line(self, xs: Sequence[float], ys: Sequence[float], color: str) -> None:
        """A polyline with round markers; a NaN value breaks the line (as matplotlib draws it)."""
        run: list[str] = []
        dots: list[str] = []
        for xv, yv in zip(xs, ys, strict=True):
            if math.isnan(yv):
                self._poly(run, color)
                run = []
                continue
            pt = (fmt(self.x(xv)), fmt(self._clip_y(self.y(yv))))
            run.append(f"{pt[0]},{pt[1]}")
            dots.append(f'<circle cx="{pt[0]}" cy="{pt[1]}" r="3.5" fill="{color}"/>')
        self._poly(run, color)
        self.parts.extend(dots)

    def _poly(self, run: list[str], color: str) -> None:
        if len(run) >= 2:
            self.parts.append(f'<polyline points="{" ".join(run)}" fill="none" stroke="{color}" stroke-width="1.5"/>')

    def axes(self, *, left: bool = True, bottom: bool = True) -> None:
        if left:
            self.parts.append(f'<line x1="{self.x0}" y1="{self.y0}" x2="{self.x0}" y2="{self.y1}" stroke="{_INK}" '
                              'stroke-width="0.8"/>')
        if bottom:
            self.parts.append(f'<line x1="{self.x0}" y1="{self.y1}" x2="{self.x1}" y2="{self.y1}" stroke="{_INK}" '
                              'stroke-width="0.8"/>')

    def xticks(self, values: Sequence[float], labels: Sequence[str] | None = None, *, rotate: int = 0,
               size: int = 12) -> None:
        texts = [fmt(v, 0) for v in values] if labels is None else list(labels)
        for v, text in zip(values, texts, strict=True):
            px = fmt(self.x(v))
            self.parts.append(f'<line x1="{px}" y1="{self.y1}" x2="{px}" y2="{self.y1 + 4}" stroke="{_INK}" '
                              'stroke-width="0.8"/>')
            ty = self.y1 + 6 + size
            if rotate:
                self.parts.append(f'<text x="{px}" y="{ty}" font-size="{size}" text-anchor="end" fill="{_INK}" '
                                  f'transform="rotate(-{rotate} {px} {ty})">{esc(text)}</text>')
            else:
                self.parts.append(f'<text x="{px}" y="{ty}" font-size="{size}" text-anchor="middle" '
                                  f'fill="{_INK}">{esc(text)}</text>')

    def yticks(self, values: Sequence[float], labels: Sequence[str] | None = None, *, size: int = 12) -> None:
        texts = [fmt(v, 0) for v in values] if labels is None else list(labels)
        for v, text in zip(values, texts, strict=True):
            py = fmt(self.y(v))
            self.parts.append(f'<line x1="{self.x0 - 4}" y1="{py}" x2="{self.x0}" y2="{py}" stroke="{_INK}" '
                              'stroke-width="0.8"/>')
            self.parts.append(f'<text x="{self.x0 - 7}" y="{py}" dy="0.35em" font-size="{size}" text-anchor="end" '
                              f'fill="{_INK}">{esc(text)}</text>')

    def xlabel(self, text: str, *, size: int = 12) -> None:
        cx = fmt((self.x0 + self.x1) / 2)
        self.parts.append(f'<text x="{cx}" y="{self.h - 6}" font-size="{size}" text-anchor="middle" '
                          f'fill="{_INK}">{esc(text)}</text>')

    def ylabel(self, text: str, *, size: int = 12) -> None:
        cy = fmt((self.y0 + self.y1) / 2)
        self.parts.append(f'<text x="14" y="{cy}" font-size="{size}" text-anchor="middle" fill="{_INK}" '
                          f'transform="rotate(-90 14 {cy})">{esc(text)}</text>')

    def legend(self, items: Sequence[tuple[str, str, str, float]], *, corner: str, size: int = 11) -> None:
        """``items``: (label, colour, 'box' | 'line', opacity), drawn in a framed box in ``corner``."""
        row = size + 6
        width = 36 + max(len(label) for label, *_ in items) * size * 0.62
        height = row * len(items) + 6
        bx = self.x1 - width - 6 if "right" in corner else self.x0 + 6
        by = self.y1 - height - 6 if "lower" in corner else self.y0 + 6
        self.parts.append(f'<rect x="{fmt(bx)}" y="{fmt(by)}" width="{fmt(width)}" height="{fmt(height)}" rx="3" '
                          'fill="#ffffff" fill-opacity="0.8" stroke="#cccccc" stroke-width="0.8"/>')
        for i, (label, color, kind, opacity) in enumerate(items):
            cy = by + 3 + row * i + row / 2
            if kind == "line":
                self.parts.append(f'<line x1="{fmt(bx + 6)}" y1="{fmt(cy)}" x2="{fmt(bx + 26)}" y2="{fmt(cy)}" '
                                  f'stroke="{color}" stroke-width="1.5"/>'
                                  f'<circle cx="{fmt(bx + 16)}" cy="{fmt(cy)}" r="3.5" fill="{color}"/>')
            else:
                self._rect(bx + 6, cy - 4, 20, 8, color, opacity)
            self.parts.append(f'<text x="{fmt(bx + 32)}" y="{fmt(cy)}" dy="0.35em" font-size="{size}" '
                              f'fill="{_INK}">{esc(label)}</text>')

    def svg(self, label: str, title: str) -> str:
        """The finished ``<svg>``: ``label`` (aria-label) is its accessible name, ``title`` (the
        values as text) its tooltip and accessible description."""
        return (f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{self.w}" height="{self.h}" '
                f'viewBox="0 0 {self.w} {self.h}" role="img" aria-label="{esc(label)}" font-family="sans-serif">'
                f'<title>{esc(title)}</title>'
                + "".join(self.parts) + "</svg>")
