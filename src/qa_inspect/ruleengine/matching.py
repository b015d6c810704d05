"""Token-aware phrase and regex matching over ``norm_text``.

One Aho-Corasick automaton holds every phrase of a rule set, so each distinct text is scanned
once whatever the number of rules; each rule then filters the raw occurrences: a hit must start
and end on token boundaries (不知道 inside 不会不知道 is still a boundary hit, so the negation
window cancels it), must not sit inside quotes (an agent quoting the buyer), must not overlap an
exclusion phrase, and must not follow a negator within a few tokens.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import ahocorasick

from qa_inspect.ruleengine.spec import DEFAULT_NEGATORS, MatcherSpec
from qa_inspect.text.normalize import normalize_text, to_simplified

QUOTE_RE = re.compile(r"“[^”]*”|「[^」]*」|\"[^\"]*\"|‘[^’]*’|『[^』]*』")
CLAUSE_BREAK = set(",.!?;:，。！？；：~、\n…")
_DEFAULT_NEGATORS = frozenset(normalize_text(n) for n in DEFAULT_NEGATORS)  # constant
# Two-character tokens like 不让/没给/别说 negate what follows; these do not.
_NOT_NEGATING = frozenset({"不错", "不过", "不少", "不久", "不断", "不仅", "不同", "不好", "别人", "别的", "没事",
                           "不满", "不行", "未来"})


def _negated_verb(tok: str) -> bool:
    return len(tok) == 2 and tok[0] in "不没别未" and tok not in _NOT_NEGATING


def build_automaton(phrases: Iterable[str]) -> ahocorasick.Automaton | None:
    auto = ahocorasick.Automaton()
    n = 0
    for p in set(phrases):
        if p:
            auto.add_word(p, p)
            n += 1
    if not n:
        return None
    auto.make_automaton()
    return auto


Found = Mapping[str, Sequence[tuple[int, int]]]  # phrase -> its (start, end) spans in a text, in order
NO_PHRASES: Found = MappingProxyType({})  # shared by every text without a rule-set phrase (read-only)


def phrases_found(norm: str, automaton: ahocorasick.Automaton | None) -> Found:
    """Every occurrence of every rule-set phrase in ``norm``: phrase -> spans in text order.
    Spans are tuples (not lists) so the cached result drops out of the garbage collector."""
    if automaton is None or not norm:
        return NO_PHRASES
    found: dict[str, tuple[tuple[int, int], ...]] = {}
    get = found.get
    for end, phrase in automaton.iter(norm):
        found[phrase] = get(phrase, ()) + ((end - len(phrase) + 1, end + 1),)
    return found or NO_PHRASES


def phrases_found_many(texts: Sequence[str], automaton: ahocorasick.Automaton | None,
                       sep: str | None) -> list[Found]:
    """``phrases_found`` of each text, from one automaton pass over the texts joined by
    ``sep`` (a character in no phrase, so no occurrence spans two texts and the automaton
    restarts at each text as a fresh pass would; None: one pass per text)."""
    if automaton is None or sep is None:
        return [phrases_found(t, automaton) for t in texts]
    offsets: list[int] = []
    pos = 0
    for t in texts:
        offsets.append(pos)
        pos += len(t) + 1
    out: list[Found] = [NO_PHRASES] * len(texts)
    cur: dict[str, tuple[tuple[int, int], ...]] = {}
    off, bound = 0, -1  # the current text's offset and its separator's position
    for end, phrase in automaton.iter(sep.join(texts)):
        if end >= bound:  # the first hit in a later text (hits come in text order)
            k = bisect_right(offsets, end) - 1
            off = offsets[k]
            bound = off + len(texts[k])
            cur = out[k] = {}  # type: ignore[assignment]
        span = (end - len(phrase) + 1 - off, end + 1 - off)
        got = cur.get(phrase)
        cur[phrase] = (span,) if got is None else got + (span,)
    return out


class TextView:
    """Everything matching needs about one distinct normalised text (computed once).

    ``found`` (the automaton pass) is computed at once; token starts, boundaries and quoted
    spans only when a rule actually has a candidate hit to check (most texts never need them).
    """

    __slots__ = ("norm", "found", "_raw_tokens", "_tokens", "_starts", "_bounds", "_quoted")

    def __init__(self, norm: str, tokens: Sequence[str] | None,
                 found: Found) -> None:
        self.norm = norm
        self.found = found
        self._raw_tokens = tokens
        self._tokens: Sequence[str] | None = None
        self._starts: list[int] | None = None
        self._bounds: frozenset[int] | None = None
        self._quoted: list[tuple[int, int]] | None = None

    @classmethod
    def build(cls, norm: str, tokens: Sequence[str] | None,
              automaton: ahocorasick.Automaton | None) -> TextView:
        return cls(norm, tokens, phrases_found(norm, automaton))

    @property
    def tokens(self) -> Sequence[str]:
        if self._tokens is None:
            toks = self._raw_tokens
            if toks is None or "".join(toks) != self.norm:
                toks = list(self.norm)  # no usable tokens: every character is a boundary
            self._tokens = toks
        return self._tokens

    @property
    def starts(self) -> list[int]:
        if self._starts is None:
            starts, pos = [], 0
            for t in self.tokens:
                starts.append(pos)
                pos += len(t)
            self._starts = starts
        return self._starts

    @property
    def bounds(self) -> frozenset[int]:
        if self._bounds is None:
            starts = self.starts
            bounds = frozenset([*starts, len(self.norm)])
            if self.found:
                bounds = bounds | _inner_bounds(self.found, self.tokens, starts)
            self._bounds = bounds
        return self._bounds

    @property
    def quoted(self) -> list[tuple[int, int]]:
        if self._quoted is None:
            self._quoted = [(m.start() + 1, m.end() - 1) for m in QUOTE_RE.finditer(self.norm)]
        return self._quoted


def _inner_bounds(found: Found, tokens: Sequence[str],
                  starts: list[int]) -> set[int]:
    """Boundaries of phrases nested in a token that is itself a rule phrase.

    Rule phrases go into the user dictionary, so 记得付款 may become one token; the shorter
    phrase 付款 inside it is still a real word and must stay matchable.
    """
    index = {s: i for i, s in enumerate(starts)}
    whole = [(s, e) for p, spans in found.items() for s, e in spans
             if s in index and len(tokens[index[s]]) == e - s]
    extra: set[int] = set()
    if not whole:
        return extra
    # (s, e) lies in some whole span iff the widest end among wholes starting at or before s
    # reaches e: one bisect per span instead of a scan of every whole span
    whole.sort()
    w_starts = [ws for ws, _ in whole]
    reach: list[int] = []
    for _, we in whole:
        reach.append(max(we, reach[-1]) if reach else we)
    for spans in found.values():
        for s, e in spans:
            k = bisect_right(w_starts, s) - 1
            if k >= 0 and reach[k] >= e:
                extra.update((s, e))
    return extra


def first_chars(pattern: str) -> frozenset[str] | None:
    """The characters every match of ``pattern`` starts with; None when that is not known
    (a class such as \\d or \\w, a negated set, a backreference...) or the pattern can match
    the empty string. Read from the stdlib's own parse of the pattern."""
    try:
        from re import _constants as C  # noqa: N812
        from re import _parser as P  # noqa: N812

        tree = P.parse(pattern)
    except Exception:  # noqa: BLE001  (another Python's internals, or not a pattern: no prefilter)
        return None
    if tree.state.flags & ~int(re.UNICODE):
        return None  # global flags (ignore case...) change what a first character may be

    def seq(items: Any) -> tuple[set[str], bool] | None:  # (first chars, can be empty)
        out: set[str] = set()
        for op, av in items:
            got = one(op, av)
            if got is None:
                return None
            out |= got[0]
            if not got[1]:
                return out, False
        return out, True

    def one(op: Any, av: Any) -> tuple[set[str], bool] | None:
        if op is C.LITERAL:
            return {chr(av)}, False
        if op is C.IN:
            chars: set[str] = set()
            for o, a in av:
                if o is C.LITERAL:
                    chars.add(chr(a))
                elif o is C.RANGE and a[1] - a[0] < 1024:
                    chars.update(map(chr, range(a[0], a[1] + 1)))
                else:  # a category, a negation, a huge range
                    return None
            return chars, False
        if op in (C.ASSERT, C.ASSERT_NOT, C.AT):  # lookarounds, anchors: what follows starts the match
            return set(), True
        if op is C.SUBPATTERN:
            return None if av[1] or av[2] else seq(av[3])  # scoped flags (?i:...): not known
        if op is C.BRANCH:
            out, empty = set(), False
            for alt in av[1]:
                got = seq(alt)
                if got is None:
                    return None
                out |= got[0]
                empty |= got[1]
            return out, empty
        if op in (C.MAX_REPEAT, C.MIN_REPEAT, getattr(C, "POSSESSIVE_REPEAT", None)):
            got = seq(av[2])
            return None if got is None else (got[0], got[1] or av[0] == 0)
        return None

    got = seq(tree)
    return None if got is None or got[1] or not got[0] else frozenset(got[0])


def _scans_fast(pattern: str) -> bool:
    """Does ``re`` already skip to candidate positions (as its compiler does when the pattern,
    inside leading groups, starts with a literal, a class or branches that each start with a
    literal)? A lookahead would then only add work."""
    try:
        from re import _constants as C  # noqa: N812
        from re import _parser as P  # noqa: N812

        data = P.parse(pattern).data
    except Exception:  # noqa: BLE001
        return True
    while data and data[0][0] is C.SUBPATTERN:
        data = data[0][1][3].data
    if not data:
        return False
    op, av = data[0]
    if op is C.LITERAL or op is C.IN:
        return True
    return op is C.BRANCH and all(alt.data and alt.data[0][0] is C.LITERAL for alt in av[1])


def compile_scanning(pattern: str) -> re.Pattern[str]:
    """``re.compile(pattern)``, led by a lookahead on the characters a match can start with when
    they are known: the same matches, spans and groups, but positions where no match can
    start are rejected by one class test instead of trying every alternative (a joined
    alternation of named groups gets no such prefix from ``re`` itself: 2-3x faster scans)."""
    chars = first_chars(pattern)
    if chars is None or _scans_fast(pattern):
        return re.compile(pattern)
    cls = "".join(re.escape(c) for c in sorted(chars))
    return re.compile(f"(?=[{cls}])(?:{pattern})")


def _alternation(patterns: Sequence[re.Pattern[str] | str]) -> re.Pattern[str] | None:
    """One regex that matches somewhere iff one of ``patterns`` does (a one-pass reject test).

    None when the patterns cannot be joined safely (backreferences or group names would change
    meaning, inline flags must lead): then every pattern is scanned as before.
    """
    if not patterns:
        return None
    srcs = [p if isinstance(p, str) else p.pattern for p in patterns]  # sources, not compile_scanning's
    if any(re.search(r"\\[1-9]|\(\?P[=<]|\(\?<[^=!]|\(\?[aiLmsux]", src) for src in srcs):
        return None
    try:
        return compile_scanning("|".join(f"(?:{src})" for src in srcs))
    except re.error:
        return None


Hit = tuple[int, int, str]
"""One hit: (start, end, label). A plain tuple, not a class: thousands are cached per call,
and only exact tuples of atoms drop out of the garbage collector's tracking (tracked objects
kept alive for the call made full collections a hot spot on less repetitive text)."""


class CompiledMatcher:
    """A MatcherSpec normalised and ready to filter a TextView's occurrences."""

    def __init__(self, spec: MatcherSpec, *, default_boundary: bool = True) -> None:
        self.spec = spec
        self.phrases = frozenset(p for p in (normalize_text(x) for x in spec.phrases) if p)
        self.exclude = frozenset(p for p in (normalize_text(x) for x in spec.exclude) if p)
        self.unless = frozenset(p for p in (normalize_text(x) for x in spec.unless) if p)
        sources = [to_simplified(p) for p in spec.patterns]
        self.patterns = [compile_scanning(p) for p in sources]
        self.negators = (frozenset(normalize_text(n) for n in spec.negators) if spec.negators is not None
                         else _DEFAULT_NEGATORS)
        self.boundary = spec.token_boundary and default_boundary
        self.any_pattern = _alternation(sources)

    def all_phrases(self) -> set[str]:
        return set(self.phrases | self.exclude | self.unless)

    def _negated(self, view: TextView, start: int) -> bool:
        i = bisect_right(view.starts, start) - 1
        if i >= 0 and view.starts[i] < start:  # hit starts inside a token: the token's head counts
            head = view.tokens[i][: start - view.starts[i]]
            if head in self.negators or head[-1:] in self.negators:
                return True
        seen = 0
        j = i - 1 if i >= 0 and view.starts[i] == start else i - 1
        while j >= 0 and seen < self.spec.negation_window:
            tok = view.tokens[j]
            j -= 1
            if not tok.strip():
                continue
            if any(ch in CLAUSE_BREAK for ch in tok):
                return False
            if tok in self.negators or (self.spec.negators is None and _negated_verb(tok)):
                return True
            seen += 1
        return False

    def find(self, view: TextView) -> list[Hit]:
        if not view.norm:
            return []
        found = view.found
        if self.phrases.isdisjoint(found) and (
                not self.patterns or (self.any_pattern is not None and self.any_pattern.search(view.norm) is None)):
            return []  # the common case: none of this rule's phrases or patterns in the text
        if self.unless and not self.unless.isdisjoint(found):
            return []
        raw: list[Hit] = []
        if found and self.phrases:
            for p in self.phrases.intersection(found):
                for s, e in found[p]:
                    raw.append((s, e, p))
        for rx in self.patterns:
            for m in rx.finditer(view.norm):
                if m.end() > m.start():
                    raw.append((m.start(), m.end(), m.group(0)))
        if not raw:
            return []
        excl = [span for p in self.exclude for span in view.found.get(p, ())]
        out: list[Hit] = []
        for h in sorted(raw, key=lambda h: (h[0], -(h[1] - h[0]))):
            hs, he = h[0], h[1]
            if out and hs < out[-1][1]:
                continue  # overlaps a longer/earlier hit
            if self.boundary and (hs not in view.bounds or he not in view.bounds):
                continue
            if self.spec.ignore_quoted and any(qs <= hs and he <= qe for qs, qe in view.quoted):
                continue
            if any(xs < he and hs < xe for xs, xe in excl):
                continue
            if self.spec.negation and self._negated(view, hs):
                continue
            out.append(h)
        return out
