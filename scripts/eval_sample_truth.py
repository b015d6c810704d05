"""End-to-end evaluation of the whole audit against the planted ground truth of sample_logs/.

Usage: python scripts/eval_sample_truth.py [--logs sample_logs] [--truth tests/data/sample_truth.csv]
           [--out DIR] [--rules DIR] [--show KIND]

Runs ``run_audit`` on the sample logs into a temporary folder (or reads the outputs already in
``--out`` when it holds findings.parquet), maps every truth row to the message it names
(conversation_id + exact text; the source line breaks ties) and prints:

1. per planted ``kind``: planted / detected / recall, where "detected" means a finding of one of the
   kind's expected rules (``EXPECT`` below, the one mapping table) on that message (or, for
   conversation-level kinds, in that conversation); for traps and good practice the same table
   counts the *unwanted* findings and reports a false-positive rate;
2. a per-rule precision estimate: findings on messages the truth marks with a supporting kind
   versus a conflicting kind (``CONFLICTS``); unlabelled messages are not counted either way;
3. mean total score and grade distribution of conversations with each planted problem versus
   conversations with none.

Why a script and not only a test: the figures are what a rule author tunes against; the test
(tests/test_sample_truth.py) asserts the ones we can defend. ``--show KIND`` lists the misses.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

import pandas as pd

from qa_inspect import schema as S

REPO = Path(__file__).resolve().parents[1]
TRUTH = REPO / "tests" / "data" / "sample_truth.csv"
LOGS = REPO / "sample_logs"


@dataclass(frozen=True)
class Expect:
    """What the system should (``detect``) or must not (``avoid``) say about a planted item.

    ``rules`` are fnmatch globs on rule_id; ``polarity``/``dimension`` narrow them (None = any).
    ``scope``: ``message`` = a finding on the truth message (or, with ``whole_ok``, a whole-conversation
    finding, message_index -1); ``conversation`` = anywhere in the conversation.
    """

    mode: str  # detect | avoid
    rules: tuple[str, ...] = ("*",)
    polarity: str | None = None
    dimension: str | None = None
    scope: str = "message"
    whole_ok: bool = False

    def matches(self, rule_id: str, polarity: str, dimension: str) -> bool:
        return (any(fnmatchcase(rule_id, g) for g in self.rules)
                and (self.polarity is None or polarity == self.polarity)
                and (self.dimension is None or dimension == self.dimension))


ATT_NEG = ("ATT-001", "ATT-002", "ATT-003", "ATT-INSULT-*", "ATT-OFFPLATFORM-*", "ATT-102", "MODEL:negative_tone")
TRAP = Expect("avoid", ATT_NEG + ("KB-DEFLECT", "MODEL:deflection"), "-")
KB = {"price": "KB-PRICE", "material": "KB-MATERIAL", "warranty": "KB-WARRANTY", "return": "KB-RETURN",
      "dispatch": "KB-DISPATCH", "shipping": "KB-SHIPPING", "stock": "KB-STOCK"}

# The one mapping table: planted kind -> expected (or unwanted) findings.
EXPECT: dict[str, Expect] = {
    "rude": Expect("detect", ("ATT-001", "ATT-003", "ATT-INSULT-*", "MODEL:negative_tone"), "-"),
    **{f"wrong_{k}": Expect("detect", (r,), "-") for k, r in KB.items()},
    "deflection": Expect("detect", ("KB-DEFLECT", "ATT-002", "MODEL:deflection"), "-"),
    "slow_first_reply": Expect("detect", ("RSP-001",), "-", scope="conversation"),
    "slow_reply": Expect("detect", ("RSP-002", "RSP-003"), "-", scope="message"),
    "unanswered": Expect("detect", ("RSP-004",), "-"),
    "template_reply": Expect("detect", ("MEC-001", "MEC-004"), "-", whole_ok=True),
    "partial_answer": Expect("detect", ("MEC-002",), "-"),
    "proactive_selling": Expect("detect", ("SEL-*", "MODEL:proactive_selling", "MODEL:needs_probing"), "+"),
    "cuifu": Expect("detect", ("SEL-006", "MODEL:proactive_selling"), "+"),
    "empathy_apology": Expect("detect", ("ATT-101", "MODEL:empathy"), "+"),
    **{f"correct_{k}": Expect("detect", (r,), "+") for k, r in KB.items()},
    # traps and good practice: these findings must NOT appear
    "agent_negation_trap": TRAP,
    "agent_quote_trap": TRAP,
    "buyer_negation_trap": TRAP,
    "positive_context_trap": TRAP,
    "greeting": Expect("avoid", ("ATT-004",), "-", scope="conversation"),
    "closing": Expect("avoid", ("ATT-005",), "-", scope="conversation"),
    "postsale": Expect("avoid", ("*",), "-", "selling", scope="conversation"),
    "no_selling": Expect("avoid", ("SEL-*", "MODEL:proactive_selling"), "+", scope="conversation"),
}
# correct facts must not be contradicted: reported as a second, avoid-style line
CORRECT_AVOID = {f"correct_{k}": Expect("avoid", (r,), "-") for k, r in KB.items()}

# kinds whose conversations carry a planted problem (for the score comparison)
PROBLEM_KINDS = ("rude", "deflection", "slow_first_reply", "slow_reply", "unanswered", "template_reply",
                 "mechanical_short", "partial_answer", "no_selling", *(f"wrong_{k}" for k in KB))
# message kinds that make a finding of a rule on the same message a false positive (precision);
# good-practice messages should carry no attitude '-' finding of their own.
GOOD = ("greeting", "closing", "empathy_apology", "proactive_selling", "cuifu",
        *(f"correct_{k}" for k in KB))
CONFLICTS: dict[str, tuple[Expect, ...]] = {
    **{k: (TRAP,) for k in ("agent_negation_trap", "agent_quote_trap", "buyer_negation_trap",
                            "positive_context_trap")},
    **{k: (Expect("avoid", ATT_NEG, "-"),) for k in GOOD},
    **{k: (v,) for k, v in CORRECT_AVOID.items()},
    **{f"wrong_{k}": (Expect("avoid", (r,), "+"),) for k, r in KB.items()},
    "rude": (Expect("avoid", ("ATT-101", "MODEL:empathy"), "+"),),
}


@dataclass
class Evaluation:
    """Everything the report prints, as frames (the test asserts on them)."""

    truth: pd.DataFrame  # truth rows + seq + hit/unwanted flags
    kinds: pd.DataFrame  # per kind: mode, planted, mapped, flagged, rate
    rules: pd.DataFrame  # per rule: findings, supported, conflicting, unlabelled, precision
    scores: pd.DataFrame  # per group: conversations, mean_total, grade shares
    findings: pd.DataFrame
    conversations: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def run_pipeline(logs: Path, out: Path, rules_dir: Path | None = None) -> None:
    from qa_inspect.pipeline import run_audit

    run_audit([logs], out, rules_dir=rules_dir, render=False)


def load_truth(path: Path = TRUTH) -> pd.DataFrame:
    truth = pd.read_csv(path, dtype=str, keep_default_na=False)
    return truth[truth["kind"].isin(set(EXPECT) | set(PROBLEM_KINDS) | set(CONFLICTS))].reset_index(drop=True)


def map_truth(truth: pd.DataFrame, messages: pd.DataFrame) -> pd.DataFrame:
    """Add ``seq``: the message with the same conversation and exact text (nearest source line on ties)."""
    m = messages[[S.CONVERSATION_ID, S.SEQ, S.TEXT, S.SOURCE_LINE]].copy()
    m["_t"] = m[S.TEXT].astype("object").fillna("").astype(str).str.strip()
    t = truth.reset_index(drop=True).copy()
    t["_row"] = t.index
    t["_t"] = t["message_text"].astype(str).str.strip()
    j = t.merge(m, left_on=["conversation_id", "_t"], right_on=[S.CONVERSATION_ID, "_t"], how="left",
                suffixes=("", "_m"))
    line = pd.to_numeric(j["line"], errors="coerce")
    j["_d"] = (pd.to_numeric(j[S.SOURCE_LINE], errors="coerce") - line).abs().fillna(0)
    j = j.sort_values(["_row", "_d"]).drop_duplicates("_row").sort_values("_row")
    out = truth.reset_index(drop=True).copy()
    out[S.SEQ] = pd.to_numeric(j[S.SEQ].to_numpy(), errors="coerce")
    return out


def _flag(truth: pd.DataFrame, findings: pd.DataFrame, exp_of: dict[str, Expect] | dict[str, tuple[Expect, ...]],
          ) -> pd.Series:
    """For each truth row: does a finding match its Expect(s) in the expected scope?"""
    by_conv = {c: g for c, g in findings.groupby(S.CONVERSATION_ID, sort=False)}
    empty = findings.iloc[0:0]
    out = []
    for conv, seq, kind in zip(truth["conversation_id"], truth[S.SEQ], truth["kind"], strict=True):
        exps = exp_of.get(kind)
        if exps is None:
            out.append(pd.NA)
            continue
        exps = exps if isinstance(exps, tuple) else (exps,)
        g = by_conv.get(conv, empty)
        hit = False
        for e in exps:
            if e.scope == "message":
                if pd.isna(seq):
                    continue
                on = g[S.MESSAGE_INDEX] == int(seq)
                cand = g[on | (g[S.MESSAGE_INDEX] == -1)] if e.whole_ok else g[on]
            else:
                cand = g
            if any(e.matches(r, p, d) for r, p, d in zip(cand[S.RULE_ID], cand[S.POLARITY], cand[S.DIMENSION],
                                                          strict=True)):
                hit = True
                break
        out.append(hit)
    return pd.Series(out, index=truth.index, dtype="boolean")


def kind_table(truth: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for kind, g in truth.groupby("kind", sort=True):
        exp = EXPECT.get(kind)
        if exp is None:
            continue
        mapped = g if exp.scope == "conversation" else g[g[S.SEQ].notna()]
        flagged = int(mapped["flag"].sum())
        rows.append({"kind": kind, "mode": "recall" if exp.mode == "detect" else "fp_rate",
                     "planted": len(g), "mapped": len(mapped), "flagged": flagged,
                     "rate": flagged / len(mapped) if len(mapped) else float("nan")})
        if kind in CORRECT_AVOID:
            bad = int(mapped["contradicted"].sum())
            rows.append({"kind": kind + " (contradicted)", "mode": "fp_rate", "planted": len(g),
                         "mapped": len(mapped), "flagged": bad, "rate": bad / len(mapped) if len(mapped) else 0.0})
    return pd.DataFrame(rows)


def rule_table(truth: pd.DataFrame, findings: pd.DataFrame) -> pd.DataFrame:
    """Per rule: findings on supporting vs conflicting truth items.

    ``supported``: on a message (or, for conversation-scope kinds, in a conversation) whose planted kind
    expects this rule; ``conflicting``: on a message/conversation whose kind forbids it (traps, correct
    facts, good practice, post-sale chats); ``outside``: in a conversation with no planted item of any
    kind that expects the rule (the generator plants every slow first reply, unanswered question and
    pasted template, so for those rules this is a false-positive count in the generator's world).
    """
    t = truth[truth[S.SEQ].notna()].copy()
    t["_seq"] = t[S.SEQ].astype(int)
    kinds_at: dict[tuple[str, int], set[str]] = {}
    for c, sq, k in zip(t["conversation_id"], t["_seq"], t["kind"], strict=True):
        kinds_at.setdefault((c, sq), set()).add(k)
    kinds_in: dict[str, set[str]] = {}
    for c, k in zip(truth["conversation_id"], truth["kind"], strict=True):
        kinds_in.setdefault(c, set()).add(k)
    rows = []
    for rule, g in findings.groupby(S.RULE_ID, sort=True):
        sup = con = unl = outside = 0
        for c, sq, p, d in zip(g[S.CONVERSATION_ID], g[S.MESSAGE_INDEX], g[S.POLARITY], g[S.DIMENSION], strict=True):
            ks = kinds_at.get((c, int(sq)), set())
            cks = kinds_in.get(c, set())
            owners = {k for k, e in EXPECT.items() if e.mode == "detect" and e.matches(rule, p, d)}
            supports = any(EXPECT[k].scope == "message" for k in ks & owners) or any(
                EXPECT[k].scope == "conversation" or (EXPECT[k].whole_ok and int(sq) == -1) for k in cks & owners)
            conflicts = any(e.matches(rule, p, d) for k in ks for e in CONFLICTS.get(k, ())) or any(
                EXPECT[k].mode == "avoid" and EXPECT[k].scope == "conversation" and EXPECT[k].matches(rule, p, d)
                for k in cks if k in EXPECT)
            if owners and not cks & owners:
                outside += 1
            if supports:
                sup += 1
            elif conflicts:
                con += 1
            else:
                unl += 1
        rows.append({"rule_id": rule, "findings": len(g), "supported": sup, "conflicting": con,
                     "unlabelled": unl, "outside": outside,
                     "precision": sup / (sup + con) if sup + con else float("nan")})
    return pd.DataFrame(rows)


def score_table(truth: pd.DataFrame, conversations: pd.DataFrame) -> pd.DataFrame:
    """Mean total and grade shares: conversations with each planted problem vs with none."""
    conv = conversations.set_index(S.CONVERSATION_ID)
    grades = sorted(conv[S.GRADE].dropna().astype(str).unique())
    problem = truth[truth["kind"].isin(PROBLEM_KINDS)]
    groups: list[tuple[str, Iterable[str]]] = [
        (k, set(g["conversation_id"])) for k, g in problem.groupby("kind", sort=True)]
    groups.append(("any problem", set(problem["conversation_id"])))
    groups.append(("clean", set(conv.index) - set(problem["conversation_id"])))
    rows = []
    for name, ids in groups:
        sub = conv.loc[conv.index.intersection(list(ids))]
        row: dict[str, object] = {"group": name, "conversations": len(sub),
                                  "mean_total": float(sub[S.TOTAL].astype(float).mean())}
        gcount = sub[S.GRADE].astype(str).value_counts()
        for gr in grades:
            row[gr] = round(float(gcount.get(gr, 0)) / len(sub), 3) if len(sub) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def evaluate(out: Path, truth_path: Path = TRUTH) -> Evaluation:
    """Read a run's outputs in ``out`` and compare them with the truth file."""
    findings = pd.read_parquet(out / "findings.parquet")
    conversations = pd.read_parquet(out / "conversations.parquet")
    messages = pd.read_parquet(out / "messages.parquet")
    for col in (S.RULE_ID, S.POLARITY, S.DIMENSION, S.CONVERSATION_ID):
        findings[col] = findings[col].astype("object")
    truth = map_truth(load_truth(truth_path), messages)
    truth["flag"] = _flag(truth, findings, EXPECT)
    truth["contradicted"] = _flag(truth, findings, CORRECT_AVOID)
    ev = Evaluation(truth=truth, kinds=kind_table(truth), rules=rule_table(truth, findings),
                    scores=score_table(truth, conversations), findings=findings, conversations=conversations)
    unmapped = truth[truth[S.SEQ].isna()]
    if len(unmapped):
        ev.notes.append(f"{len(unmapped)} of {len(truth)} truth rows did not map onto a message "
                        f"({unmapped['kind'].value_counts().to_dict()})")
    return ev


def run_and_evaluate(logs: Path = LOGS, truth_path: Path = TRUTH, rules_dir: Path | None = None,
                     out: Path | None = None) -> Evaluation:
    """Run the audit into ``out`` (a temp dir when None) and evaluate it."""
    if out is not None:
        if not (out / "findings.parquet").exists():
            run_pipeline(logs, out, rules_dir)
        return evaluate(out, truth_path)
    with tempfile.TemporaryDirectory(prefix="qa-eval-") as tmp:
        run_pipeline(logs, Path(tmp), rules_dir)
        return evaluate(Path(tmp), truth_path)


def render(ev: Evaluation) -> str:
    pd.set_option("display.width", 160)
    parts = ["== planted kinds (recall: higher is better; fp_rate: lower is better)",
             ev.kinds.to_string(index=False, float_format=lambda x: f"{x:.3f}"),
             "", "== per-rule precision estimate (message-level; unlabelled messages not counted)",
             ev.rules.to_string(index=False, float_format=lambda x: f"{x:.3f}"),
             "", "== total score and grade by planted problem (conversation level)",
             ev.scores.to_string(index=False, float_format=lambda x: f"{x:.2f}"), *ev.notes]
    return "\n".join(parts)


def misses(ev: Evaluation, kind: str) -> pd.DataFrame:
    """Rows of ``kind`` where the verdict is bad (a missed detection, or an unwanted finding)."""
    exp = EXPECT[kind]
    g = ev.truth[ev.truth["kind"] == kind]
    bad = g[~g["flag"].fillna(False)] if exp.mode == "detect" else g[g["flag"].fillna(False)]
    f = ev.findings
    rows = []
    for _, r in bad.iterrows():
        fs = f[(f[S.CONVERSATION_ID] == r["conversation_id"])
               & ((f[S.MESSAGE_INDEX] == r[S.SEQ]) if exp.scope == "message" else True)]
        rows.append({"conversation_id": r["conversation_id"], "seq": r[S.SEQ], "text": r["message_text"][:50],
                     "findings": ",".join(f"{a}{b}" for a, b in zip(fs[S.RULE_ID], fs[S.POLARITY], strict=True))})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--logs", type=Path, default=LOGS, help="sample logs folder")
    ap.add_argument("--truth", type=Path, default=TRUTH, help="planted truth CSV")
    ap.add_argument("--rules", type=Path, default=None, help="rules folder (default: the bundled one)")
    ap.add_argument("--out", type=Path, default=None,
                    help="output folder of a run; reused when it has findings.parquet, else the run writes there")
    ap.add_argument("--show", action="append", default=[], help="list the misses / unwanted hits of this kind")
    a = ap.parse_args(argv)
    ev = run_and_evaluate(a.logs, a.truth, a.rules, a.out)
    print(render(ev))
    for kind in a.show:
        print(f"\n== {kind}: misses / unwanted")
        print(misses(ev, kind).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
