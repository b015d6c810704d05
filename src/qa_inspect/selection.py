"""Picking conversations for people: 抽检 samples, the review queue and coaching examples.

Everything here is deterministic given its inputs (and the seed), so a supervisor can
reproduce a sample and a reviewer sees why each conversation was picked.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pandas as pd

from qa_inspect import schema as S
from qa_inspect.errors import UsageError, UserError
from qa_inspect.safe_io import safe_path, write_csv_safe

REASON = "reason"
DETAIL = "detail"
PRIORITY = "priority"
REVIEW_QUEUE_COLUMNS = (S.CONVERSATION_ID, S.SHOP_ID, S.AGENT_ID, S.NIGHT, REASON, DETAIL, PRIORITY, S.TOTAL)
SAMPLE_COLUMNS = (S.CONVERSATION_ID, S.SHOP_ID, S.AGENT_ID, S.NIGHT, S.GRADE, S.TOTAL, "stratum", "seed")

R_VETO, R_LOW, R_RISK, R_DISAGREE = "veto", "low_total", "high_risk", "rule_model_disagreement"


def review_queue(conversations: pd.DataFrame, review_items: pd.DataFrame | None = None, *,
                 low_total: float = 60.0, max_low_per_agent: int = 5, risk_threshold: float = 0.7,
                 max_disagreements_per_agent: int = 5) -> pd.DataFrame:
    """Conversations a person should look at, one row per (conversation, reason), highest priority first.

    Reasons: ``veto`` (一票否决 fired), ``low_total`` (total below ``low_total``; the lowest
    ``max_low_per_agent`` per agent), ``high_risk`` (dissatisfaction risk >= ``risk_threshold``),
    ``rule_model_disagreement`` (``review_items`` from models.combine: CONVERSATION_ID plus
    optional ``reason``/RULE_ID/``model_probability``; per agent only the
    ``max_disagreements_per_agent`` clearest ones, lowest model probability first, so the queue
    stays short enough for people).
    """
    S.require_columns(conversations, (S.CONVERSATION_ID, S.SHOP_ID, S.AGENT_ID, S.TOTAL, S.VETO), "review_queue")
    c = conversations
    night = c[S.NIGHT] if S.NIGHT in c.columns else pd.Series(None, index=c.index, dtype="string")
    base = pd.DataFrame({S.CONVERSATION_ID: c[S.CONVERSATION_ID], S.SHOP_ID: c[S.SHOP_ID],
                         S.AGENT_ID: c[S.AGENT_ID], S.NIGHT: night, S.TOTAL: c[S.TOTAL]})
    parts: list[pd.DataFrame] = []

    veto = c[S.VETO].fillna(False).astype(bool)
    if veto.any():
        vr = c.loc[veto, S.VETO_RULE] if S.VETO_RULE in c.columns else pd.Series("", index=c.index[veto])
        parts.append(base[veto].assign(**{REASON: R_VETO, DETAIL: "一票否决: " + vr.fillna("").astype(str),
                                          PRIORITY: 100.0}))

    low = base[(c[S.TOTAL] < low_total) & ~veto].sort_values([S.TOTAL, S.CONVERSATION_ID], kind="stable")
    low = low.groupby(S.AGENT_ID, dropna=False, sort=False).head(max_low_per_agent)
    if len(low):
        parts.append(low.assign(**{REASON: R_LOW,
                                   DETAIL: [f"total {t:.1f} < {low_total:g}" for t in low[S.TOTAL]],
                                   PRIORITY: 50.0 + (low_total - low[S.TOTAL]) / max(low_total, 1) * 40}))

    if S.RISK in c.columns:
        risk = pd.to_numeric(c[S.RISK], errors="coerce")
        hi = risk >= risk_threshold
        if hi.any():
            parts.append(base[hi].assign(**{REASON: R_RISK,
                                            DETAIL: [f"dissatisfaction risk {r:.2f}" for r in risk[hi]],
                                            PRIORITY: 60.0 + risk[hi] * 30}))

    if review_items is not None and len(review_items):
        ri = review_items
        S.require_columns(ri, (S.CONVERSATION_ID,), "review_queue")
        detail_parts = []
        for col in (S.RULE_ID, "reason", "detail", S.EXPLANATION):
            if col in ri.columns:
                detail_parts.append(ri[col].fillna("").astype(str))
        detail = (pd.concat(detail_parts, axis=1).agg(lambda r: " | ".join(x for x in r if x), axis=1)
                  if detail_parts else pd.Series("rule and model disagree", index=ri.index))
        prob = (pd.to_numeric(ri["model_probability"], errors="coerce").fillna(0.0).to_numpy()
                if "model_probability" in ri.columns else np.zeros(len(ri)))
        d = pd.DataFrame({S.CONVERSATION_ID: ri[S.CONVERSATION_ID].astype(str), DETAIL: detail.to_numpy(),
                          "_p": prob})
        d = d.groupby(S.CONVERSATION_ID, sort=True).agg(**{DETAIL: (DETAIL, lambda x: "; ".join(dict.fromkeys(x))),
                                                           "_p": ("_p", "min")})
        d = d.reset_index().merge(base, on=S.CONVERSATION_ID, how="inner")
        d = d.sort_values(["_p", S.CONVERSATION_ID], kind="stable")
        d = d.groupby(S.AGENT_ID, dropna=False, sort=False).head(max_disagreements_per_agent)
        parts.append(d.drop(columns="_p").assign(**{REASON: R_DISAGREE, PRIORITY: 40.0 + (1 - d["_p"]) * 20}))

    if not parts:
        return pd.DataFrame({col: pd.Series(dtype="float64" if col in (PRIORITY, S.TOTAL) else "string")
                             for col in REVIEW_QUEUE_COLUMNS})
    out = pd.concat(parts, ignore_index=True)[list(REVIEW_QUEUE_COLUMNS)]
    out = out.sort_values([PRIORITY, S.CONVERSATION_ID, REASON], ascending=[False, True, True], kind="stable")
    return out.reset_index(drop=True)


def _stable_seed(seed: int, key: str) -> int:
    """A per-agent seed independent of which other agents exist (adding one changes nobody's picks)."""
    h = hashlib.sha256(f"{seed}\x1f{key}".encode()).digest()
    return int.from_bytes(h[:8], "little")


def _allocate(sizes: dict[str, int], n: int) -> dict[str, int]:
    """Proportional allocation with largest remainders; every stratum gets one when n allows."""
    total = sum(sizes.values())
    if total <= n:
        return dict(sizes)
    alloc = {k: 0 for k in sizes}
    keys = sorted(sizes)
    if n >= len(keys):
        for k in keys:
            alloc[k] = 1
    left = n - sum(alloc.values())
    rest = {k: sizes[k] - alloc[k] for k in keys}
    rest_total = sum(rest.values())
    if left > 0 and rest_total > 0:
        quotas = {k: left * rest[k] / rest_total for k in keys}
        for k in keys:
            alloc[k] += math.floor(quotas[k])
        rem = n - sum(alloc.values())
        order = sorted(keys, key=lambda k: (-(quotas[k] - math.floor(quotas[k])), k))
        for k in order:
            if rem <= 0:
                break
            if alloc[k] < sizes[k]:
                alloc[k] += 1
                rem -= 1
    return alloc


def sample_conversations(conversations: pd.DataFrame, *, per_agent: int, seed: int) -> pd.DataFrame:
    """抽检: ``per_agent`` conversations per agent, stratified by grade band, reproducible by seed.

    Same conversations + same seed → same picks; the per-agent random stream depends only on
    the seed and the agent id.
    """
    if per_agent < 1:
        raise UsageError("--per-agent must be at least 1")
    S.require_columns(conversations, (S.CONVERSATION_ID, S.SHOP_ID, S.AGENT_ID, S.GRADE), "sample")
    c = conversations.sort_values(S.CONVERSATION_ID, kind="stable").reset_index(drop=True)
    picks: list[pd.DataFrame] = []
    for agent, g in c.groupby(c[S.AGENT_ID].fillna("(none)"), sort=True):
        rng = np.random.default_rng(_stable_seed(seed, str(agent)))
        strata = g[S.GRADE].fillna("(none)").astype(str)
        alloc = _allocate(strata.value_counts().to_dict(), per_agent)
        for stratum in sorted(alloc):
            k = alloc[stratum]
            members = g[strata == stratum]
            if k <= 0:
                continue
            idx = rng.choice(len(members), size=k, replace=False)
            picks.append(members.iloc[sorted(idx)].assign(stratum=stratum))
    if not picks:
        return pd.DataFrame(columns=list(SAMPLE_COLUMNS))
    out = pd.concat(picks, ignore_index=True).assign(seed=seed)
    for col in SAMPLE_COLUMNS:
        if col not in out.columns:
            out[col] = None
    return out.sort_values([S.AGENT_ID, S.CONVERSATION_ID], kind="stable")[list(SAMPLE_COLUMNS)].reset_index(
        drop=True)


def weakest_dimension(conversations: pd.DataFrame, agent_id: str) -> str:
    """The agent's dimension with the lowest mean score (N/A excluded)."""
    mine = conversations[conversations[S.AGENT_ID] == agent_id]
    means = {d: mine[S.score_column(d)].mean() for d in S.DIMENSIONS}
    means = {d: v for d, v in means.items() if not pd.isna(v)}
    if not means:
        raise UsageError(f"agent '{agent_id}' has no scored conversations")
    return min(means, key=lambda d: (means[d], d))


def coach_picks(conversations: pd.DataFrame, trace: pd.DataFrame, *, agent_id: str,
                dimension: str | None = None, n: int = 10, top_items: int = 3) -> pd.DataFrame:
    """Conversations that best illustrate the agent's weakest items in ``dimension``.

    Weakest items = the scorecard items/rules that cost the agent the most points in that
    dimension over all their conversations (from the trace). Conversations are ranked by the
    points those rules cost them; each row carries the evidence and explanations.
    """
    if dimension is None:
        dimension = weakest_dimension(conversations, agent_id)
    if dimension not in S.DIMENSIONS:
        raise UsageError(f"unknown dimension '{dimension}'; known: {', '.join(S.DIMENSIONS)}")
    cols = [S.CONVERSATION_ID, S.AGENT_ID, "dimension", "weak_rules", "points_lost", "score", S.TOTAL,
            "evidence"]
    mine = conversations[conversations[S.AGENT_ID] == agent_id]
    if mine.empty:
        raise UsageError(f"no conversations for agent '{agent_id}'")
    t = trace[(trace[S.CONVERSATION_ID].isin(mine[S.CONVERSATION_ID])) & (trace[S.DIMENSION] == dimension)
              & (trace[S.POINTS] < 0)]
    if t.empty:
        return pd.DataFrame(columns=cols)
    cost = t.groupby(S.RULE_ID)[S.POINTS].sum().sort_values(kind="stable")  # most negative first
    weak = list(cost.index[:top_items])
    tw = t[t[S.RULE_ID].isin(weak)]
    per = tw.groupby(S.CONVERSATION_ID)[S.POINTS].sum().rename("points_lost")
    per = per.reset_index().sort_values(["points_lost", S.CONVERSATION_ID], kind="stable").head(n)
    rows = []
    sc = mine.set_index(S.CONVERSATION_ID)
    for rec in per.itertuples(index=False):
        cid = getattr(rec, S.CONVERSATION_ID)
        ev = tw[tw[S.CONVERSATION_ID] == cid].sort_values(S.MESSAGE_INDEX, kind="stable")
        evidence = " | ".join(
            f"#{int(r[S.MESSAGE_INDEX])} {r[S.RULE_ID]} ({r[S.POINTS]:+.1f}): "
            f"{r[S.EXPLANATION] or ''}" + (f" 「{r[S.EVIDENCE]}」" if isinstance(r[S.EVIDENCE], str)
                                          and r[S.EVIDENCE] else "")
            for _, r in ev.iterrows())
        rows.append({S.CONVERSATION_ID: cid, S.AGENT_ID: agent_id, "dimension": dimension,
                     "weak_rules": ",".join(r for r in weak if r in set(ev[S.RULE_ID])),
                     "points_lost": float(rec.points_lost), "score": sc.at[cid, S.score_column(dimension)],
                     S.TOTAL: sc.at[cid, S.TOTAL], "evidence": evidence})
    return pd.DataFrame(rows, columns=cols)


def sample_from_store(db: Path | str | None, *, per_agent: int, seed: int, out_dir: Path | str | None = None,
                      nights: list[str] | None = None) -> tuple[pd.DataFrame, Path | None]:
    """抽检 from the store (latest scoring, overrides applied); writes ``sample.csv`` when out_dir."""
    from qa_inspect import store

    db = store.resolve_db(db, out_dir)
    with store.open_store(db, read_only=True) as con:
        conv = store.read_conversations(con, nights=nights)
    if conv.empty:
        raise UserError(f"no conversations in the store {db}" + (f" for nights {nights}" if nights else ""))
    picks = sample_conversations(conv, per_agent=per_agent, seed=seed)
    path = write_csv_safe(picks, safe_path(out_dir, "sample", suffix=".csv")) if out_dir is not None else None
    return picks, path


def coach_from_store(db: Path | str | None, *, agent_id: str, dimension: str | None = None, n: int = 10,
                     out_dir: Path | str | None = None) -> tuple[pd.DataFrame, Path | None]:
    """Coaching picks for one agent from the store; writes :func:`coach_csv_path` when out_dir."""
    from qa_inspect import store

    db = store.resolve_db(db, out_dir)
    with store.open_store(db, read_only=True) as con:
        conv = store.read_conversations(con, agent_id=agent_id)
        if conv.empty:
            known = [r[0] for r in con.execute(
                "SELECT DISTINCT agent_id FROM v_conversations WHERE agent_id IS NOT NULL ORDER BY 1 LIMIT 20"
            ).fetchall()]
            raise UsageError(f"no conversations for agent '{agent_id}'; agents in the store: {known}")
        trace = store.read_trace(con, conv[S.CONVERSATION_ID].tolist())
    picks = coach_picks(conv, trace, agent_id=agent_id, dimension=dimension, n=n)
    path = write_coach_csv(picks, out_dir, agent_id) if out_dir is not None else None
    return picks, path


def coach_csv_path(out_dir: Path | str, agent_id: str) -> Path:
    """``out_dir/coach_<agent>.csv``; agent ids come from exported chats, so the name is made safe.

    ``safe_path`` keeps ordinary ids readable (``coach_a01.csv``) and appends a hash whenever it
    had to change the id (``../../x``, ``客服/小美``, upper case), so the file always lands inside
    ``out_dir`` and two agents never share a file.
    """
    return safe_path(out_dir, f"coach_{agent_id}", suffix=".csv")


def write_coach_csv(picks: pd.DataFrame, out_dir: Path | str, agent_id: str) -> Path:
    """Write coaching picks to :func:`coach_csv_path` as formula-safe UTF-8-BOM CSV (Excel/WPS)."""
    return write_csv_safe(picks, coach_csv_path(out_dir, agent_id))
