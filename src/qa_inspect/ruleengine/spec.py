"""Rule specifications: the YAML schema of a rule set, validated by pydantic (extra="forbid").

A rule set file is ``{ruleset: name, description: ..., rules: [...]}``. Each rule has the
common fields of ``RuleBase`` plus the parameters of its ``type``; the type names a class in
``RULE_TYPES`` (an explicit registry filled in ``ruleengine.types``). Phrases and patterns are
written as a supervisor would type them (Simplified or Traditional, full- or half-width);
they are normalised like messages when the rule set is compiled.
"""

from __future__ import annotations

import string
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from qa_inspect import schema

Role = Literal["agent", "customer"]
Position = Literal["first", "last", "any"]

RULE_ID_PATTERN = r"^[A-Z][A-Z0-9]*(-[A-Z0-9]+)+$"

DEFAULT_NEGATORS: tuple[str, ...] = (
    "不", "没", "没有", "别", "不会", "不是", "并不", "并没有", "从不", "从没", "绝不", "绝对不", "不要",
    "不用", "无需", "不必", "未", "不能", "怎么会", "哪会", "哪里会", "不可能", "不至于", "并非", "非",
)


def check_template(text: str) -> None:
    """Raise ValueError unless ``text`` is a format string with plain named fields only.

    ``{name}`` is fine; ``{``, ``{0}``, ``{name.x}``, ``{name[0]}`` and ``{n:d}`` are not (they fail
    or misbehave when findings are rendered). Literal braces are written ``{{`` and ``}}``.
    """
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ValueError(f"not a valid template ({exc}); write literal braces as {{{{ and }}}}") from None
    for _lit, field, spec, conv in parts:
        if field is None:
            continue
        if not field.isidentifier():
            raise ValueError(f"template field '{{{field}}}' must be a plain name such as {{name}} or {{evidence}}")
        if spec or conv:
            raise ValueError(f"template field '{{{field}}}' must not have a format spec or conversion")



def check_regexes(patterns: list[str]) -> list[str]:
    """Compile every pattern so a bad regex is a config error at load, naming its index."""
    import re

    for i, p in enumerate(patterns):
        try:
            re.compile(p)
        except re.error as exc:
            raise ValueError(f"pattern {i} is not a valid regular expression: {exc}") from None
    return patterns

class Strict(BaseModel):
    # inf/nan (YAML .inf, 1e999) are never meant: they would turn scores into NaN.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class AppliesTo(Strict):
    """Which messages a message-level rule reads: role and position among that role's messages."""

    role: Role = "agent"
    position: Position = "any"
    window: int = Field(1, ge=1, description="how many messages at a first/last position count")


class When(Strict):
    """Conversation preconditions; a rule whose preconditions fail is N/A (no finding)."""

    platforms: list[str] | None = None
    has_event: list[Literal["order", "payment", "refund"]] = Field(default_factory=list)
    lacks_event: list[Literal["order", "payment", "refund"]] = Field(default_factory=list)
    min_agent_messages: int = Field(0, ge=0)
    customer_says: list[str] = Field(default_factory=list,
                                     description="any of these phrases in a customer message")

    @field_validator("platforms")
    @classmethod
    def _platforms(cls, v: list[str] | None) -> list[str] | None:
        for p in v or []:
            if p not in schema.PLATFORMS:
                raise ValueError(f"unknown platform '{p}'; known: {', '.join(schema.PLATFORMS)}")
        return v


class DialogueExample(Strict):
    """A short dialogue example: lines ``"买家: ..."``, ``"@245 客服: ..."`` (seconds from start)."""

    dialogue: list[str] = Field(min_length=1)
    platform: str = "tmall"
    start: str = Field("20:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$",
                       description="shop-local clock time of @0")
    repeat: int = Field(1, ge=1, description="template rules: the dialogue stands for this many chats")
    note: str = ""

    @field_validator("platform")
    @classmethod
    def _platform(cls, v: str) -> str:
        if v not in schema.PLATFORMS:
            raise ValueError(f"unknown platform '{v}'")
        return v


Example = str | list[str] | DialogueExample


class Examples(Strict):
    pass_: list[Example] = Field(default_factory=list, alias="pass",
                                 description="inputs on which the rule must NOT fire")
    fail: list[Example] = Field(default_factory=list, description="inputs on which the rule must fire")

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, populate_by_name=True)


class RuleBase(Strict):
    id: str = Field(pattern=RULE_ID_PATTERN)
    name: str = Field(min_length=1)
    type: str
    dimension: Literal["attitude", "responsiveness", "selling", "product_knowledge"]
    severity: Literal["info", "minor", "major", "critical"]
    points: float = Field(ge=0)
    polarity: Literal["+", "-"]
    veto: bool = False
    enabled: bool = True
    description: str = Field(min_length=1)
    explanation: str | None = Field(
        None, description="finding text; {name}, {evidence}, {phrase} and type-specific fields")
    applies_to: AppliesTo = Field(default_factory=AppliesTo)
    when: When = Field(default_factory=When)
    examples: Examples = Field(default_factory=Examples)

    @model_validator(mode="before")
    @classmethod
    def _bare_minus(cls, data: Any) -> Any:
        # YAML reads an unquoted ``polarity: -`` as a list holding null; accept what was meant.
        if isinstance(data, dict) and data.get("polarity") == [None]:
            data = {**data, "polarity": "-"}
        return data

    @field_validator("explanation")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        # Rendered with str.format_map at run time: a stray brace would crash every run.
        if v is not None:
            check_template(v)
        return v

    @model_validator(mode="after")
    def _examples_present(self) -> RuleBase:
        if not self.examples.fail or not self.examples.pass_:
            raise ValueError("every rule needs at least one 'pass' and one 'fail' example")
        return self


class MatcherSpec(Strict):
    """Token-aware phrase/regex matching with negation, exclusions and quote handling."""

    phrases: list[str] = Field(default_factory=list)
    patterns: list[str] = Field(default_factory=list, description="regular expressions on norm_text")
    exclude: list[str] = Field(default_factory=list,
                               description="phrases that cancel a hit they overlap (e.g. 自己看看详情)")
    unless: list[str] = Field(default_factory=list,
                              description="phrases that cancel every hit in the same message")
    negation: bool = True
    negators: list[str] | None = None
    negation_window: int = Field(3, ge=0, le=6, description="tokens before the hit searched for a negator")
    token_boundary: bool = True
    ignore_quoted: bool = True

    @field_validator("patterns")
    @classmethod
    def _compile(cls, v: list[str]) -> list[str]:
        return check_regexes(v)

    @model_validator(mode="after")
    def _something(self) -> MatcherSpec:
        if not self.phrases and not self.patterns:
            raise ValueError("needs at least one of 'phrases' or 'patterns'")
        return self
