"""Report inputs as plain DataFrames, per-shop filtering.

Reports depend only on these frames (not on the store or KPI internals) so the pipeline, the
``report``/``send`` commands and the tests can all build a :class:`ReportData` their own way.
Merchant isolation is structural: :func:`for_shop` filters every frame before a template sees it
and :func:`assert_single_shop` proves it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import pandas as pd

from qa_inspect import schema as S
from qa_inspect.config import Shop
from qa_inspect.errors import BugError
from qa_inspect.heap import release_memory
from qa_inspect.reports.stats import CHUNK_ROWS, FindingStats

# Columns the reports read from the KPI frames (docs/reports.md; the KPI engineer matches them).
KPI_COLUMNS: tuple[str, ...] = (
    "conversations",
    "messages",
    "first_response_avg_s",
    "avg_response_s",
    "reply_rate",
    "slow_replies",
    "unanswered",
    "conversion_rate",
    "attributed_sales",
    "consultations_per_day",
)
AGENT_KPI_COLUMNS: tuple[str, ...] = (S.AGENT_ID, S.SHOP_ID, *KPI_COLUMNS)
SHOP_KPI_COLUMNS: tuple[str, ...] = (S.SHOP_ID, *KPI_COLUMNS)
TREND_COLUMNS: tuple[str, ...] = (S.NIGHT, S.AGENT_ID, "mean_total", "n")
REVIEW_COLUMNS: tuple[str, ...] = (S.CONVERSATION_ID, "reason", "priority")
BUYER_COLUMNS: tuple[str, ...] = (S.SHOP_ID, S.CUSTOMER_ID)
# Optional conversation columns (pipeline.AUTO_TOTAL, schema.HUMAN_TOTAL / OVERRIDDEN): where a
# supervisor's review overrode a total, TOTAL is the human one and AUTO_TOTAL the scorecard's.
AUTO_TOTAL = "auto_total"


def _empty(columns: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})


@dataclass(frozen=True)
class ReportData:
    """Everything one run's reports need.

    ``kb_answers`` maps a claim (the finding's evidence text) or a rule id to the knowledge-base
    reference answer shown as a coaching suggestion. ``coaching_picks`` lists conversation ids for
    the coaching pack; ``None`` lets the reports pick (review queue first, then each agent's worst).

    ``stats``: the aggregates the pages read over ALL findings (:func:`stats.finding_stats`); with
    them ``findings`` may hold only the rows of the conversations the pages show, like
    ``messages``. ``None``: derived from ``findings``, which must then be all of the run's.

    ``messages`` may hold only the conversations the pages show (``render.needed_conversations``;
    the other rows are never read). Then pass ``buyers`` (:func:`buyers_of` over ALL the run's
    messages): buyer aliases are made for every buyer of the run, and a nickname that only appears
    in unshown messages may still appear in a shown one. ``None`` derives them from ``messages``.
    """

    run_id: str
    generated_at: datetime
    conversations: pd.DataFrame
    messages: pd.DataFrame
    findings: pd.DataFrame
    agent_kpis: pd.DataFrame = field(default_factory=lambda: _empty(AGENT_KPI_COLUMNS))
    shop_kpis: pd.DataFrame = field(default_factory=lambda: _empty(SHOP_KPI_COLUMNS))
    trend: pd.DataFrame = field(default_factory=lambda: _empty(TREND_COLUMNS))
    review_queue: pd.DataFrame = field(default_factory=lambda: _empty(REVIEW_COLUMNS))
    shops: dict[str, Shop] = field(default_factory=dict)
    kb_answers: dict[str, str] = field(default_factory=dict)
    coaching_picks: list[str] | None = None
    buyers: pd.DataFrame | None = None
    stats: FindingStats | None = None

    def validate(self) -> None:
        """Fail fast with the missing column names instead of a KeyError inside a template."""
        S.require_columns(self.conversations, S.CONVERSATION_COLUMNS, "reports (conversations)")
        S.require_columns(self.messages, S.MESSAGE_COLUMNS, "reports (messages)")
        S.require_columns(self.findings, S.FINDING_COLUMNS, "reports (findings)")
        S.require_columns(self.agent_kpis, AGENT_KPI_COLUMNS, "reports (agent_kpis)")
        S.require_columns(self.shop_kpis, SHOP_KPI_COLUMNS, "reports (shop_kpis)")
        S.require_columns(self.trend, TREND_COLUMNS, "reports (trend)")
        S.require_columns(self.review_queue, REVIEW_COLUMNS, "reports (review_queue)")
        if self.buyers is not None:
            S.require_columns(self.buyers, BUYER_COLUMNS, "reports (buyers)")

    def buyer_frame(self) -> pd.DataFrame:
        """``shop_id, customer_id`` rows of every buyer of the run (see ``buyers``)."""
        return self.messages[list(BUYER_COLUMNS)] if self.buyers is None else self.buyers

    def shop_ids(self) -> list[str]:
        """Shops that have conversations in this run (plus configured shops seen in messages)."""
        ids = set(self.conversations[S.SHOP_ID].dropna().unique().astype(str).tolist())
        return sorted(ids)


def for_shop(data: ReportData, shop_id: str) -> ReportData:
    """A copy of ``data`` holding only ``shop_id``'s rows in EVERY frame (filtered frames are new
    frames; pandas' copy-on-write keeps the caller's frames unchanged by later edits).

    The trend frame has no shop column (an agent may serve several shops), so it is dropped and
    the merchant report derives its own trend from the shop's conversations. KB answers and
    coaching picks are internal and not passed on.
    """
    conv = data.conversations[data.conversations[S.SHOP_ID] == shop_id]
    buyers = None if data.buyers is None else data.buyers[data.buyers[S.SHOP_ID] == shop_id]
    # membership tested per review-queue row (a few hundred): ``isin`` with the shop's ~20k ids
    # as values converted each id to a pyarrow scalar in Python
    conv_ids = set(conv[S.CONVERSATION_ID].tolist())
    rq = data.review_queue[[c in conv_ids for c in data.review_queue[S.CONVERSATION_ID].tolist()]]
    shops = {shop_id: data.shops[shop_id]} if shop_id in data.shops else {}
    out = ReportData(
        run_id=data.run_id,
        generated_at=data.generated_at,
        conversations=conv,
        messages=data.messages[data.messages[S.SHOP_ID] == shop_id],
        findings=data.findings[data.findings[S.SHOP_ID] == shop_id],
        agent_kpis=data.agent_kpis[data.agent_kpis[S.SHOP_ID] == shop_id],
        shop_kpis=data.shop_kpis[data.shop_kpis[S.SHOP_ID] == shop_id],
        trend=_empty(TREND_COLUMNS),
        review_queue=rq,
        shops=shops,
        kb_answers={},
        coaching_picks=[],
        buyers=buyers,
        stats=None if data.stats is None else data.stats.for_shop(shop_id),
    )
    assert_single_shop(out, shop_id)
    return out


def assert_single_shop(data: ReportData, shop_id: str) -> None:
    """Raise BugError if any frame holds another shop's rows: merchant data must never mix."""
    for name in ("conversations", "messages", "findings", "agent_kpis", "shop_kpis"):
        df: pd.DataFrame = getattr(data, name)
        other = set(df[S.SHOP_ID].dropna().astype(str).unique().tolist()) - {shop_id}
        if other:
            raise BugError(f"merchant data for {shop_id} holds rows of {sorted(other)} in {name}")
    if data.buyers is not None and set(data.buyers[S.SHOP_ID].dropna().astype(str)) - {shop_id}:
        raise BugError(f"merchant data for {shop_id} holds other shops' buyers")
    conv_ids = set(data.conversations[S.CONVERSATION_ID].tolist())
    for name in ("messages", "findings", "review_queue"):
        df = getattr(data, name)
        stray = set(df[S.CONVERSATION_ID].tolist()) - conv_ids
        if stray and name != "messages":
            raise BugError(f"merchant data for {shop_id}: {name} references foreign conversations")
    if set(data.shops) - {shop_id}:
        raise BugError(f"merchant data for {shop_id} carries other shops' settings")
    if data.stats is not None:
        held = set(data.stats.issues) | set(data.stats.shop_agent_neg)
        held |= {str(r[S.SHOP_ID]) for i in data.stats.issues.get(shop_id, {}).values() for r in i.examples}
        if held - {shop_id} or data.stats.rule_hits or data.stats.selling or data.stats.deductions:
            raise BugError(f"merchant data for {shop_id} carries other shops' finding aggregates")


def buyer_aliases(data: ReportData) -> BuyerAliases:
    """The nickname -> alias map of every buyer of ``data`` (conversations and the run's buyers)."""
    ids: set[str] = set()
    if S.CUSTOMER_ID in data.conversations.columns:
        ids = set(data.conversations[S.CUSTOMER_ID].dropna().unique().astype(str).tolist())
    ids |= set(data.buyer_frame()[S.CUSTOMER_ID].dropna().unique().astype(str).tolist())
    return BuyerAliases(c for c in sorted(ids) if c)


def with_buyer_aliases(data: ReportData, conversation_ids: set[str] | None = None, *,
                       aliases: BuyerAliases | None = None) -> tuple[ReportData, Mapping[str, str]]:
    """Replace buyer nicknames by stable aliases (``买家-3fa2``) for readers outside the QA team.

    Returns the new data and the nickname -> alias map, which the renderer also applies inside
    message text (before PII masking) since buyers' nicknames appear in greetings. The map covers
    every buyer of ``data`` (or is ``aliases``, made by :func:`buyer_aliases` before the caller
    dropped a column); with ``conversation_ids`` only those conversations (and their messages) are
    kept and aliased (a page that shows a few needs no copy of the night's).
    """
    if aliases is None:
        aliases = buyer_aliases(data)
    if conversation_ids is not None:
        c, m = data.conversations, data.messages
        data = replace(data, conversations=c[c[S.CONVERSATION_ID].astype(str).isin(conversation_ids)],
                       messages=m[m[S.CONVERSATION_ID].astype(str).isin(conversation_ids)])
    # assign: a new frame sharing every other column (copy-on-write), not a copy of the night's
    conv = data.conversations
    if S.CUSTOMER_ID in conv.columns:
        conv = conv.assign(**{S.CUSTOMER_ID: _aliased(conv[S.CUSTOMER_ID], aliases)})
    msgs = data.messages.assign(**{S.CUSTOMER_ID: _aliased(data.messages[S.CUSTOMER_ID], aliases)})
    return replace(data, conversations=conv, messages=msgs, kb_answers={}), aliases


def _aliased(ids: pd.Series, aliases: Mapping[str, str]) -> pd.Series:
    """Each id's alias (ids without one, and missing ids, unchanged): the per-row rule applied
    once per distinct id."""
    return ids.map({c: aliases.get(str(c), c) for c in ids.dropna().unique().tolist()})


class BuyerAliases(Mapping[str, str]):
    """nickname -> :func:`buyer_alias` for a fixed set of nicknames, each alias hashed when first
    asked for: the coaching pack knows the night's tens of thousands of buyers (to replace any
    of them in the text it shows) but shows a few dozen. Iterates in the given order."""

    def __init__(self, names: Iterable[str]) -> None:
        self._names = list(names)
        self._known = set(self._names)
        self._done: dict[str, str] = {}

    def __getitem__(self, name: str) -> str:
        if name not in self._known:
            raise KeyError(name)
        alias = self._done.get(name)
        if alias is None:
            alias = self._done[name] = buyer_alias(name)
        return alias

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return self[name] if name in self._known else default

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._known


def buyers_of(messages: pd.DataFrame) -> pd.DataFrame:
    """Distinct ``shop_id, customer_id`` of ``messages``: what :class:`ReportData` ``buyers`` needs
    from the full message frame (tens of thousands of rows instead of a million)."""
    b = messages[list(BUYER_COLUMNS)]
    return b[b[S.CUSTOMER_ID].notna()].drop_duplicates().reset_index(drop=True)


def buyer_alias(customer_id: str) -> str:
    """A stable, non-reversible alias for a buyer nickname (same buyer -> same alias in a run)."""
    return "买家-" + hashlib.sha256(customer_id.encode("utf-8")).hexdigest()[:6]


def trend_from_conversations(conversations: pd.DataFrame) -> pd.DataFrame:
    """``night, agent_id, mean_total, n`` straight from scored conversations."""
    if conversations.empty:
        return _empty(TREND_COLUMNS)
    c = conversations.assign(_t=pd.to_numeric(conversations[S.TOTAL], errors="coerce"))
    g = c.groupby([S.NIGHT, S.AGENT_ID], dropna=True)["_t"].agg(["mean", "count"]).reset_index()
    return g.rename(columns={"mean": "mean_total", "count": "n"})[list(TREND_COLUMNS)]


def _table(con: object, name: str, run_id: str, order_by: str = "") -> pd.DataFrame | None:
    """Rows of ``name`` for ``run_id`` (all rows when the table has no run_id column), in
    ``order_by`` order when given (the store does not keep an insertion order a reader can rely on)."""
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}  # type: ignore[attr-defined]
    if name not in tables:
        return None
    cols = [r[0] for r in con.execute(  # type: ignore[attr-defined]
        "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [name]).fetchall()]
    if S.RUN_ID in cols:
        order = f" ORDER BY {order_by}" if order_by else ""
        return con.execute(f'SELECT * FROM "{name}" WHERE run_id = ?{order}', [run_id]).df()  # type: ignore[attr-defined]
    return con.execute(f'SELECT * FROM "{name}"').df()  # type: ignore[attr-defined]


def _overrides(con: object) -> pd.DataFrame | None:
    """``conversation_id, human_total`` of every override in the store (``v_conversations``, so the
    rule "latest review with override wins" lives in one place), or None without the view."""
    views = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}  # type: ignore[attr-defined]
    if "v_conversations" not in views:
        return None
    return con.execute(  # type: ignore[attr-defined]
        f"SELECT DISTINCT conversation_id, {S.HUMAN_TOTAL} FROM v_conversations WHERE {S.OVERRIDDEN}").df()


def apply_overrides(conv: pd.DataFrame, overrides: pd.DataFrame | None,
                    grade: Callable[[float], str] | None = None) -> pd.DataFrame:
    """TOTAL becomes the supervisor's total where a review overrode it (the store keeps the
    automatic one), AUTO_TOTAL keeps the automatic total, OVERRIDDEN marks the rows.

    ``grade`` (the scorecard's) re-grades overridden rows; without it their grade is blanked
    rather than left showing the automatic grade next to the human total.
    """
    out = conv.drop(columns=[c for c in (S.HUMAN_TOTAL, S.OVERRIDDEN, AUTO_TOTAL) if c in conv.columns])
    out[AUTO_TOTAL] = pd.to_numeric(out[S.TOTAL], errors="coerce").astype("float64")
    human: dict[str, float] = {}
    if overrides is not None and not overrides.empty:
        human = {str(c): float(t) for c, t in zip(overrides[S.CONVERSATION_ID], overrides[S.HUMAN_TOTAL], strict=True)
                 if pd.notna(t)}
    out[S.HUMAN_TOTAL] = out[S.CONVERSATION_ID].astype(str).map(human).astype("float64")
    ov = out[S.HUMAN_TOTAL].notna()
    out[S.OVERRIDDEN] = ov.to_numpy(dtype=bool)
    out[S.TOTAL] = out[AUTO_TOTAL].where(~ov, out[S.HUMAN_TOTAL])
    if ov.any():
        out[S.GRADE] = out[S.GRADE].astype(object)
        out.loc[ov, S.GRADE] = [grade(float(t)) if grade else None for t in out.loc[ov, S.HUMAN_TOTAL]]
    return out


def load_needed_messages(con: object, run_id: str, conv_ids: set[str]) -> tuple[pd.DataFrame | None, pd.DataFrame]:
    """The messages of ``conv_ids`` (rows and columns as :func:`_table` reads them, in table
    order) and the run's buyers (:func:`buyers_of`), without reading the whole messages table."""
    kinds = dict(con.execute("SELECT table_name, table_type FROM information_schema.tables").fetchall())  # type: ignore[attr-defined]
    if "messages" not in kinds:
        return None, _empty(BUYER_COLUMNS)
    cols = [r[0] for r in con.execute(  # type: ignore[attr-defined]
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'messages'").fetchall()]
    if kinds["messages"] != "BASE TABLE" or S.RUN_ID not in cols:  # no rowid order to keep: filter here
        m = _table(con, "messages", run_id)
        assert m is not None
        return m[m[S.CONVERSATION_ID].isin(conv_ids)].reset_index(drop=True), buyers_of(m)
    ids = sorted(conv_ids)
    # ORDER BY rowid: the order a plain scan (what _table reads) returns, whatever plan the IN picks
    msgs = con.execute(  # type: ignore[attr-defined]
        "SELECT * FROM messages WHERE run_id = ? AND conversation_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY rowid",
        [run_id, ids]).df()
    buyers = con.execute(  # type: ignore[attr-defined]
        "SELECT DISTINCT shop_id, customer_id FROM messages WHERE run_id = ? AND customer_id IS NOT NULL",
        [run_id]).df()
    return msgs, buyers


def _findings_kind(con: object) -> str | None:
    """'table' (a base table with run_id: read in rowid order), 'other' or None (no findings)."""
    kinds = dict(con.execute("SELECT table_name, table_type FROM information_schema.tables").fetchall())  # type: ignore[attr-defined]
    if "findings" not in kinds:
        return None
    cols = [r[0] for r in con.execute(  # type: ignore[attr-defined]
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'findings'").fetchall()]
    return "table" if kinds["findings"] == "BASE TABLE" and S.RUN_ID in cols else "other"


def store_finding_chunks(con: object, run_id: str, rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """The run's findings (schema.FINDING_COLUMNS) in table order, ``rows`` at a time: DuckDB
    streams the scan, so a night's findings are never one frame in memory."""
    cols = ", ".join(f'"{c}"' for c in S.FINDING_COLUMNS)
    reader = con.sql(f"SELECT {cols} FROM findings WHERE run_id = $1",  # type: ignore[attr-defined]
                     params=[run_id]).to_arrow_reader(rows)
    for batch in reader:
        yield batch.to_pandas()


def _sql_stats(con: object, run_id: str, cands: list[str], kb: dict[str, str]) -> FindingStats | None:
    """The aggregates computed inside DuckDB (reports.storestats), or None when DuckDB runs out of
    its memory cap: the streaming pass then gives the same result with pandas' memory instead."""
    import duckdb

    from qa_inspect.reports.storestats import store_finding_stats

    try:
        return store_finding_stats(con, run_id, coaching_candidates=cands, kb_answers=kb)
    except duckdb.OutOfMemoryException:
        return None


def with_store_findings(con: object, data: ReportData) -> ReportData:
    """``data`` (conversations, KPIs, queue... set; findings and messages not needed) completed
    from the store: the aggregates over all of the run's findings in one streaming pass, then the
    findings and messages of only the conversations the pages show, plus the run's buyers."""
    from qa_inspect.reports.render import (  # render imports us
        coaching_candidates,
        coaching_picks,
        needed_conversations,
    )
    from qa_inspect.reports.stats import finding_stats, frame_chunks

    run_id = data.run_id
    kind = _findings_kind(con)
    full = None
    cands = coaching_candidates(data) if data.coaching_picks is None else []
    stats = None
    if kind == "table":
        stats = _sql_stats(con, run_id, cands, data.kb_answers)
        if stats is None:  # DuckDB out of memory: the same aggregates by the streaming pass
            stats = finding_stats(store_finding_chunks(con, run_id), coaching_candidates=cands,
                                  kb_answers=data.kb_answers)
    else:  # no table, or a view without a rowid order: the old way, one frame
        full = _table(con, "findings", run_id) if kind else None
        full = S.empty_findings() if full is None else full
        stats = finding_stats(frame_chunks(full), coaching_candidates=cands, kb_answers=data.kb_answers)
    data = replace(data, stats=stats, findings=S.empty_findings() if full is None else full)
    if data.coaching_picks is None:  # picked once: the same list every later call would pick
        data = replace(data, coaching_picks=coaching_picks(data))
    need = needed_conversations(data)
    if full is not None:
        fnd = full[full[S.CONVERSATION_ID].astype(str).isin(need)].reset_index(drop=True)
    else:
        fnd = con.execute(  # type: ignore[attr-defined]
            "SELECT * FROM findings WHERE run_id = ? AND conversation_id IN (SELECT unnest(?::VARCHAR[])) "
            "ORDER BY rowid", [run_id, sorted(need)]).df()
    msgs, buyers = load_needed_messages(con, run_id, need)
    release_memory()
    return replace(data, findings=fnd, messages=msgs if msgs is not None else S.empty_messages(), buyers=buyers)


def load_report_data(con: object, run_id: str, shops: dict[str, Shop],
                     generated_at: datetime | None = None, *,
                     grade: Callable[[float], str] | None = None, all_messages: bool = False) -> ReportData:
    """Read one run from the DuckDB store (tables conversations, messages, findings, review_queue,
    and agent_kpis/shop_kpis/trend when the store keeps them).

    Messages: only those of the conversations the pages show (``render.needed_conversations``)
    plus the run's buyers, unless ``all_messages``; the reports are the same either way.

    Totals are the EFFECTIVE ones: where a supervisor's review overrode a conversation
    (``v_conversations``), TOTAL is the human total, AUTO_TOTAL the automatic one and OVERRIDDEN
    True (the pages mark it "人工复核"); ``grade`` (the scorecard's) re-grades those rows.
    Missing KPI tables give empty KPI frames (the reports show "no data") and the trend is derived
    from the (effective) totals. An unknown run is a user error listing the runs that exist.
    """
    from qa_inspect.errors import UserError

    conv = _table(con, "conversations", run_id, order_by="conversation_id")  # as the run's conversations.csv
    if conv is None or conv.empty:
        known = ""
        try:
            known = ", ".join(str(r[0]) for r in con.execute(  # type: ignore[attr-defined]
                "SELECT DISTINCT run_id FROM conversations ORDER BY 1").fetchall())
        except Exception:  # noqa: BLE001 - the table may not exist at all
            known = ""
        raise UserError(f"run '{run_id}' has no conversations in the store; known runs: {known or '(none)'}")
    conv = apply_overrides(conv, _overrides(con), grade)
    rq = _table(con, "review_queue", run_id)
    ak = _table(con, "agent_kpis", run_id)
    sk = _table(con, "shop_kpis", run_id)
    tr = _table(con, "trend", run_id)
    data = ReportData(
        run_id=run_id,
        generated_at=generated_at or datetime.now().astimezone(),
        conversations=conv,
        messages=S.empty_messages(),
        findings=S.empty_findings(),
        agent_kpis=ak if ak is not None else _empty(AGENT_KPI_COLUMNS),
        shop_kpis=sk if sk is not None else _empty(SHOP_KPI_COLUMNS),
        trend=tr if tr is not None else trend_from_conversations(conv),
        review_queue=rq if rq is not None else _empty(REVIEW_COLUMNS),
        shops=shops,
    )
    data = with_store_findings(con, data)
    if all_messages:
        msgs = _table(con, "messages", run_id)
        return replace(data, messages=msgs if msgs is not None else S.empty_messages(), buyers=None)
    return data


def needed_only(data: ReportData) -> ReportData:
    """``data`` with only the messages the pages show and the run's buyers: the same reports from
    a fraction of the memory (for callers that hold the full frame anyway, like tests)."""
    from qa_inspect.reports.render import needed_conversations, with_stats  # render imports this module

    data = with_stats(data)  # aggregates over ALL findings before they are cut down
    m, f = data.messages, data.findings
    need = needed_conversations(data)
    return replace(data, messages=m[m[S.CONVERSATION_ID].astype(str).isin(need)].reset_index(drop=True),
                   findings=f[f[S.CONVERSATION_ID].astype(str).isin(need)].reset_index(drop=True),
                   buyers=data.buyers if data.buyers is not None else buyers_of(m))
