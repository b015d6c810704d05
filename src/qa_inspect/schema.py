"""Column names and dtypes shared by every stage.

Every stage takes and returns DataFrames; the names live here so that a rename is one
edit and so that a stage can check its input contract before doing any work.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from qa_inspect.errors import BugError

# --- messages: one row per message (written by ingest) ---------------------------------
PLATFORM = "platform"  # see PLATFORMS
SHOP_ID = "shop_id"
CONVERSATION_ID = "conversation_id"  # namespaced: "<shop_id>:<export id>" -> unique across shops
SEQ = "seq"  # 0-based position of the message inside its conversation
TS = "ts"  # tz-aware timestamp; NaT when the export has none (JDDC, STC-3)
ROLE = "role"  # customer | agent | bot | system
AGENT_ID = "agent_id"  # the human agent's account; for customer rows the agent serving the chat
CUSTOMER_ID = "customer_id"
TEXT = "text"  # as written; never altered (display and evidence come from here)
SKU = "sku"  # product the export ties the message/conversation to, if any
IS_AUTO_REPLY = "is_auto_reply"
EVENT = "event"  # order | payment | refund | None: system events an export may carry
AMOUNT = "amount"  # money amount of an order/payment event (shop currency)
SOURCE_FILE = "source_file"
SOURCE_LINE = "source_line"  # 1-based physical line (or row) in the source file

MESSAGE_COLUMNS: tuple[str, ...] = (
    PLATFORM,
    SHOP_ID,
    CONVERSATION_ID,
    SEQ,
    TS,
    ROLE,
    AGENT_ID,
    CUSTOMER_ID,
    TEXT,
    SKU,
    IS_AUTO_REPLY,
    EVENT,
    AMOUNT,
    SOURCE_FILE,
    SOURCE_LINE,
)

ROLES = ("customer", "agent", "bot", "system")
PLATFORMS = ("taobao", "tmall", "jd", "pdd", "douyin", "shopee", "weibo", "other")
EVENTS = ("order", "payment", "refund")

# --- added by text stages ----------------------------------------------------------------
NORM_TEXT = "norm_text"  # Simplified, half-width, for analysis only (same length as TEXT when possible)
TOKENS = "tokens"  # list[str] of jieba tokens over NORM_TEXT; concatenated they equal NORM_TEXT

# --- rejects: rows an importer could not use -------------------------------------------
REJECT_FILE = "file"
REJECT_LINE = "line"
REJECT_FIELD = "field"
REJECT_REASON = "reason"
REJECT_RAW = "raw"
REJECT_COLUMNS: tuple[str, ...] = (REJECT_FILE, REJECT_LINE, REJECT_FIELD, REJECT_REASON, REJECT_RAW)

# --- findings: one row per rule/model/knowledge hit --------------------------------------
MESSAGE_INDEX = "message_index"  # SEQ of the message the finding is about; -1 = whole conversation
RULE_ID = "rule_id"  # "ATT-003", "MODEL:negative_tone", "KB-PRICE"...
DIMENSION = "dimension"
POLARITY = "polarity"  # "+" good practice, "-" problem
SEVERITY = "severity"
POINTS = "points"  # magnitude >= 0; POLARITY gives the direction
EVIDENCE = "evidence"  # the span of TEXT that triggered it (original text)
EVIDENCE_START = "evidence_start"  # char offset into TEXT, -1 when not a span
EVIDENCE_END = "evidence_end"
EXPLANATION = "explanation"
SOURCE = "source"  # rule | model | knowledge
CONFIDENCE = "confidence"  # 0..1; 1.0 for deterministic rules

FINDING_COLUMNS: tuple[str, ...] = (
    CONVERSATION_ID,
    SHOP_ID,
    AGENT_ID,
    MESSAGE_INDEX,
    RULE_ID,
    DIMENSION,
    POLARITY,
    SEVERITY,
    POINTS,
    EVIDENCE,
    EVIDENCE_START,
    EVIDENCE_END,
    EXPLANATION,
    SOURCE,
    CONFIDENCE,
)

DIMENSIONS = ("product_knowledge", "selling", "attitude", "responsiveness")
SEVERITIES = ("info", "minor", "major", "critical")
POLARITIES = ("+", "-")
FINDING_SOURCES = ("rule", "model", "knowledge")


def empty_messages() -> pd.DataFrame:
    """A zero-row frame with the message contract, so empty inputs flow like full ones."""
    return pd.DataFrame(
        {
            PLATFORM: pd.Series(dtype="string"),
            SHOP_ID: pd.Series(dtype="string"),
            CONVERSATION_ID: pd.Series(dtype="string"),
            SEQ: pd.Series(dtype="int64"),
            TS: pd.Series(dtype="datetime64[ns, UTC]"),
            ROLE: pd.Series(dtype="string"),
            AGENT_ID: pd.Series(dtype="string"),
            CUSTOMER_ID: pd.Series(dtype="string"),
            TEXT: pd.Series(dtype="string"),
            SKU: pd.Series(dtype="string"),
            IS_AUTO_REPLY: pd.Series(dtype="bool"),
            EVENT: pd.Series(dtype="string"),
            AMOUNT: pd.Series(dtype="float64"),
            SOURCE_FILE: pd.Series(dtype="string"),
            SOURCE_LINE: pd.Series(dtype="int64"),
        }
    )


def empty_findings() -> pd.DataFrame:
    return pd.DataFrame(
        {
            CONVERSATION_ID: pd.Series(dtype="string"),
            SHOP_ID: pd.Series(dtype="string"),
            AGENT_ID: pd.Series(dtype="string"),
            MESSAGE_INDEX: pd.Series(dtype="int64"),
            RULE_ID: pd.Series(dtype="string"),
            DIMENSION: pd.Series(dtype="string"),
            POLARITY: pd.Series(dtype="string"),
            SEVERITY: pd.Series(dtype="string"),
            POINTS: pd.Series(dtype="float64"),
            EVIDENCE: pd.Series(dtype="string"),
            EVIDENCE_START: pd.Series(dtype="int64"),
            EVIDENCE_END: pd.Series(dtype="int64"),
            EXPLANATION: pd.Series(dtype="string"),
            SOURCE: pd.Series(dtype="string"),
            CONFIDENCE: pd.Series(dtype="float64"),
        }
    )


def empty_rejects() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="int64" if c == REJECT_LINE else "string") for c in REJECT_COLUMNS})


def findings_frame(records: Iterable[dict]) -> pd.DataFrame:
    """Build a findings frame from dict records, with the contract's columns and dtypes."""
    rows = list(records)
    if not rows:
        return empty_findings()
    df = pd.DataFrame.from_records(rows)
    missing = [c for c in FINDING_COLUMNS if c not in df.columns]
    if missing:
        raise BugError(f"finding records lack columns {missing}")
    base = empty_findings()
    df = df[list(FINDING_COLUMNS)]
    return df.astype(base.dtypes.to_dict())


def require_columns(df: pd.DataFrame, columns: Iterable[str], stage: str) -> None:
    """Fail fast, naming the stage, when an input frame breaks the column contract."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise BugError(f"stage '{stage}' needs columns {missing}; got {list(df.columns)}")


# --- conversations: one row per conversation (scoring; conversations.csv) ----------------
STARTED_AT = "started_at"
ENDED_AT = "ended_at"
N_MESSAGES = "n_messages"
FIRST_RESPONSE_S = "first_response_s"  # first human agent reply after the first customer message
TOTAL = "total"  # 0..100 weighted over applicable dimensions; 0 on veto
GRADE = "grade"  # band label from scorecard.yaml (e.g. 优秀/合格/待改进/不合格)
VETO = "veto"  # bool: a 一票否决 item fired
VETO_RULE = "veto_rule"  # rule id that vetoed, if any
RISK = "dissatisfaction_risk"  # 0..1 from the risk model; NaN when no model
N_FINDINGS = "n_findings"
RUN_ID = "run_id"
NIGHT = "night"  # business date (YYYY-MM-DD, shop-local) the conversation started on


def score_column(dimension: str) -> str:
    """``score_<dimension>``: 0..100, NaN when the dimension is N/A for the conversation."""
    return f"score_{dimension}"


SCORE_COLUMNS: tuple[str, ...] = tuple(score_column(d) for d in DIMENSIONS)

CONVERSATION_COLUMNS: tuple[str, ...] = (
    CONVERSATION_ID,
    SHOP_ID,
    PLATFORM,
    AGENT_ID,
    CUSTOMER_ID,
    NIGHT,
    STARTED_AT,
    ENDED_AT,
    N_MESSAGES,
    FIRST_RESPONSE_S,
    *SCORE_COLUMNS,
    TOTAL,
    GRADE,
    VETO,
    VETO_RULE,
    RISK,
    N_FINDINGS,
)

# --- acts: one row per agent message (models) --------------------------------------------
ACT_LABELS = (
    "proactive_selling",
    "needs_probing",
    "empathy",
    "negative_tone",
    "deflection",
    "informative",
    "greeting_closing",
    "other",
)


def act_column(label: str) -> str:
    """``act_<label>``: calibrated probability of that dialogue act for an agent message."""
    return f"act_{label}"

# --- scoring / calibration extras (conversations.csv, after CONVERSATION_COLUMNS) ---------
NA_REASONS = "na_reasons"  # why dimensions were N/A (and the veto rule), "; "-separated
HUMAN_TOTAL = "human_total"  # total from a human review with override=True; NaN otherwise
OVERRIDDEN = "overridden"  # bool: HUMAN_TOTAL replaces TOTAL in outputs and reports
