"""Calibration against people: import human reviews, measure agreement, find disputed rules.

Automatic scores are only useful if they agree with the QA team; this module says how much
(MAE, Spearman, Cohen's kappa on grades) and which rules people disagree with most.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.metrics import cohen_kappa_score

from qa_inspect import schema as S
from qa_inspect import store
from qa_inspect.config import resolve_rules_dir
from qa_inspect.errors import InputError, UserError
from qa_inspect.scoring.scorecard import Scorecard, load_scorecard

REVIEWER = "reviewer"
VERDICT = "verdict"
OVERRIDE = "override"
COMMENT = "comment"
REVIEW_COLUMNS = (S.CONVERSATION_ID, REVIEWER, *S.SCORE_COLUMNS, S.TOTAL, S.GRADE, VERDICT, OVERRIDE, COMMENT)

# Accepted header spellings (Chinese QA sheets) → canonical column.
_ALIASES = {
    "会话id": S.CONVERSATION_ID, "会话编号": S.CONVERSATION_ID, "质检员": REVIEWER, "评审人": REVIEWER,
    "总分": S.TOTAL, "等级": S.GRADE, "结论": VERDICT, "覆盖": OVERRIDE, "备注": COMMENT,
    "商品知识": S.score_column("product_knowledge"), "销售能力": S.score_column("selling"),
    "服务态度": S.score_column("attitude"), "响应时效": S.score_column("responsiveness"),
    **{d: S.score_column(d) for d in S.DIMENSIONS},
}
_TRUE = {"1", "true", "yes", "y", "是", "t", "x"}
_FALSE = {"", "0", "false", "no", "n", "否", "f", "nan", "none"}


def read_reviews_csv(path: Path | str) -> pd.DataFrame:
    """Parse a reviews CSV (UTF-8, BOM allowed) into REVIEW_COLUMNS; bad cells raise InputError
    naming file, line and field."""
    path = Path(path)
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError("file not found", file=str(path)) from None
    except (UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise InputError(f"not a readable UTF-8 CSV: {exc}", file=str(path)) from None
    raw.columns = [_ALIASES.get(str(c).strip().lower(), str(c).strip().lower()) for c in raw.columns]
    for req in (S.CONVERSATION_ID, REVIEWER):
        if req not in raw.columns:
            raise InputError(f"missing column '{req}'", file=str(path), field=req)
    unknown = [c for c in raw.columns if c not in REVIEW_COLUMNS]
    if unknown:
        raise InputError(f"unknown columns {unknown}; expected some of {list(REVIEW_COLUMNS)}", file=str(path))
    out = pd.DataFrame(index=raw.index)
    for col in REVIEW_COLUMNS:
        out[col] = raw[col].str.strip() if col in raw.columns else ""
    numeric = [*S.SCORE_COLUMNS, S.TOTAL]
    for i, row in out.iterrows():
        line = int(i) + 2  # header is line 1
        if not row[S.CONVERSATION_ID]:
            raise InputError("empty conversation id", file=str(path), line=line, field=S.CONVERSATION_ID)
        if not row[REVIEWER]:
            raise InputError("empty reviewer", file=str(path), line=line, field=REVIEWER)
        for col in numeric:
            v = row[col]
            if v == "":
                continue
            try:
                x = float(v)
            except ValueError:
                raise InputError(f"not a number: '{v}'", file=str(path), line=line, field=col) from None
            if not 0 <= x <= 100:
                raise InputError(f"score {x} outside 0..100", file=str(path), line=line, field=col)
        ov = row[OVERRIDE].lower()
        if ov not in _TRUE and ov not in _FALSE:
            raise InputError(f"override must be true/false, got '{row[OVERRIDE]}'", file=str(path), line=line,
                             field=OVERRIDE)
        if ov in _TRUE and row[S.TOTAL] == "":
            raise InputError("override needs a total", file=str(path), line=line, field=S.TOTAL)
    if out.duplicated([S.CONVERSATION_ID, REVIEWER]).any():
        dup = out[out.duplicated([S.CONVERSATION_ID, REVIEWER])].index[0]
        raise InputError("the same reviewer reviewed this conversation twice", file=str(path),
                         line=int(dup) + 2, field=S.CONVERSATION_ID)
    for col in numeric:
        out[col] = pd.to_numeric(out[col].replace("", np.nan))
    out[OVERRIDE] = out[OVERRIDE].str.lower().isin(_TRUE)
    for col in (S.GRADE, VERDICT, COMMENT):
        out[col] = out[col].replace("", None)
    return out


@dataclass
class ImportResult:
    imported: int
    unknown_ids: list[str]
    overrides: int


def import_reviews(db: Path | str | None, path: Path | str, *, out_dir: Path | str | None = None) -> ImportResult:
    """Store reviews (replacing earlier ones by the same reviewer for the same conversation).

    Reviews of conversations the store does not know are refused (listed), so a typo in an id
    cannot silently create an orphan override.
    """
    reviews = read_reviews_csv(path)
    db = store.resolve_db(db, out_dir)
    if not Path(db).exists():
        raise UserError(f"store not found: {db}")
    with store.open_store(db) as con:
        known = set(con.execute("SELECT DISTINCT conversation_id FROM conversations").df()[S.CONVERSATION_ID])
        mask = reviews[S.CONVERSATION_ID].isin(known)
        unknown = sorted(set(reviews.loc[~mask, S.CONVERSATION_ID]))
        good = reviews[mask].assign(source_file=str(path), imported_at=datetime.now(UTC))
        if good.empty:
            raise UserError(f"{path}: none of the {len(reviews)} reviewed conversation ids is in the store "
                            f"(e.g. {unknown[:3]})")
        with store.transaction(con):
            with store.registered(con, "_rv", good[[S.CONVERSATION_ID, REVIEWER]]):
                con.execute("DELETE FROM reviews WHERE (conversation_id, reviewer) IN "
                            "(SELECT (conversation_id, reviewer) FROM _rv)")
            store.insert_frame(con, "reviews", good)
    return ImportResult(imported=len(good), unknown_ids=unknown, overrides=int(good[OVERRIDE].sum()))


@dataclass
class CalibrationReport:
    agreement: pd.DataFrame  # measure (dimension|total|grade), n, mae, bias, spearman, kappa
    rules: pd.DataFrame  # rule_id, polarity, n_reviewed_hits, mean_human_total, disagreement
    n_reviewed: int


def _grade_series(totals: pd.Series, scorecard: Scorecard) -> pd.Series:
    return totals.map(lambda t: scorecard.grade(float(t)) if not pd.isna(t) else None)


def calibrate_frames(conversations: pd.DataFrame, reviews: pd.DataFrame, findings: pd.DataFrame,
                     scorecard: Scorecard, *, min_hits: int = 3) -> CalibrationReport:
    """Agreement of automatic (``conversations``) vs human (``reviews``) scores.

    Several reviewers of one conversation are averaged. Grades compare the automatic grade with
    the human grade (given, or derived from the human total with the scorecard's bands).
    Rule disagreement: for a "-" rule, the share of its reviewed hits that people scored at or
    above ``scorecard.pass_min``; for a "+" rule, the share people scored below it.
    """
    hum = reviews.groupby(S.CONVERSATION_ID).agg(
        {**{c: "mean" for c in (*S.SCORE_COLUMNS, S.TOTAL)}, S.GRADE: "first"})
    auto = conversations.set_index(S.CONVERSATION_ID)
    ids = sorted(set(hum.index) & set(auto.index))
    hum, auto = hum.loc[ids], auto.loc[ids]
    rows = []
    for col, label in [*((S.score_column(d), d) for d in S.DIMENSIONS), (S.TOTAL, "total")]:
        a = pd.to_numeric(auto[col], errors="coerce")
        h = pd.to_numeric(hum[col], errors="coerce")
        ok = a.notna() & h.notna()
        n = int(ok.sum())
        mae = float((a[ok] - h[ok]).abs().mean()) if n else math.nan
        bias = float((a[ok] - h[ok]).mean()) if n else math.nan
        rho = math.nan
        if n >= 3 and a[ok].nunique() > 1 and h[ok].nunique() > 1:
            rho = float(spearmanr(a[ok], h[ok]).statistic)
        rows.append({"measure": label, "n": n, "mae": mae, "bias": bias, "spearman": rho, "kappa": math.nan})
    human_grade = hum[S.GRADE].where(hum[S.GRADE].notna(), _grade_series(hum[S.TOTAL], scorecard))
    auto_grade = auto[S.GRADE] if S.GRADE in auto.columns else _grade_series(auto[S.TOTAL], scorecard)
    ok = human_grade.notna() & auto_grade.notna()
    n = int(ok.sum())
    kappa = math.nan
    labels = [b.label for b in scorecard.grades]
    if n >= 2:
        ag, hg = auto_grade[ok].astype(str), human_grade[ok].astype(str)
        if len(set(ag) | set(hg)) > 1:
            kappa = float(cohen_kappa_score(ag, hg, labels=[x for x in labels if x in set(ag) | set(hg)]))
    rows.append({"measure": "grade", "n": n, "mae": math.nan, "bias": math.nan, "spearman": math.nan,
                 "agreement": float((auto_grade[ok].astype(str) == human_grade[ok].astype(str)).mean())
                 if n else math.nan, "kappa": kappa})
    agreement = pd.DataFrame(rows, columns=["measure", "n", "mae", "bias", "spearman", "kappa", "agreement"])

    pass_min = scorecard.pass_min
    f = findings[findings[S.CONVERSATION_ID].isin(ids)]
    hits = f.drop_duplicates([S.CONVERSATION_ID, S.RULE_ID, S.POLARITY])
    ht = hum[S.TOTAL]
    rrows = []
    for (rule, pol), g in hits.groupby([S.RULE_ID, S.POLARITY], sort=True):
        t = ht.reindex(g[S.CONVERSATION_ID]).dropna()
        if len(t) == 0:
            continue
        high = float((t >= pass_min).mean())
        rrows.append({S.RULE_ID: rule, S.POLARITY: pol, "n_reviewed_hits": len(t),
                      "mean_human_total": float(t.mean()),
                      "disagreement": high if pol == "-" else 1.0 - high})
    rules = pd.DataFrame(rrows, columns=[S.RULE_ID, S.POLARITY, "n_reviewed_hits", "mean_human_total",
                                         "disagreement"])
    rules["enough_data"] = rules["n_reviewed_hits"] >= min_hits
    rules = rules.sort_values(["enough_data", "disagreement", "n_reviewed_hits", S.RULE_ID],
                              ascending=[False, False, False, True], kind="stable").reset_index(drop=True)
    return CalibrationReport(agreement=agreement, rules=rules, n_reviewed=len(ids))


def calibrate(db: Path | str | None, *, rules_dir: Path | str | None = None, out_dir: Path | str | None = None,
              min_hits: int = 3) -> CalibrationReport:
    """Calibration over everything reviewed in the store (latest automatic scoring); writes
    calibration_agreement.csv and calibration_rules.csv when ``out_dir`` is given."""
    scorecard = load_scorecard(resolve_rules_dir(rules_dir))
    db = store.resolve_db(db, out_dir)
    with store.open_store(db, read_only=True) as con:
        reviews = con.execute("SELECT * FROM reviews").df()
        if reviews.empty:
            raise UserError("no reviews in the store; import some with 'qa-inspect review import FILE'")
        conv = store.read_conversations(con)
        findings = store.read_findings(con, sorted(set(reviews[S.CONVERSATION_ID])))
    report = calibrate_frames(conv, reviews, findings, scorecard, min_hits=min_hits)
    if out_dir is not None:
        from qa_inspect.pipeline import write_csv

        write_csv(report.agreement, Path(out_dir) / "calibration_agreement.csv")
        write_csv(report.rules, Path(out_dir) / "calibration_rules.csv")
    return report

