"""``rules/models.yaml``: when a model probability becomes a finding, and how rules and models combine.

Thresholds are deployment policy (a strict QA team reviews more, a lenient one less), so they
live in the configuration folder, validated like every other YAML file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from qa_inspect import schema
from qa_inspect.config import config_error_from_validation, load_yaml
from qa_inspect.errors import ConfigError

MODELS_FILE = "models.yaml"


class ActPolicy(BaseModel):
    """How one dialogue act becomes a model finding."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    threshold: float = Field(ge=0.0, le=1.0)
    dimension: Literal["product_knowledge", "selling", "attitude", "responsiveness"]
    polarity: Literal["+", "-"]
    severity: Literal["info", "minor", "major", "critical"] = "minor"
    points: float = Field(ge=0.0)
    explanation: str = ""
    # shorter messages never become findings: one or two characters carry too little context
    min_chars: int = Field(0, ge=0)


class RuleActLink(BaseModel):
    """Which act(s) speak to a rule finding: by exact rule ids, else by dimension + polarity."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    rule_ids: list[str] = Field(default_factory=list)
    dimension: Literal["product_knowledge", "selling", "attitude", "responsiveness"] | None = None
    polarity: Literal["+", "-"] | None = None
    acts: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _selector(self) -> RuleActLink:
        if not self.rule_ids and (self.dimension is None or self.polarity is None):
            raise ValueError("give rule_ids, or both dimension and polarity")
        if self.rule_ids and (self.dimension is not None or self.polarity is not None):
            raise ValueError("give rule_ids or dimension + polarity, not both")
        return self


class CombinePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    # a model-only finding (no rule on that message/act) counts when its probability >= this
    model_only_threshold: float = Field(0.85, ge=0.0, le=1.0)
    # ... and with points multiplied by this factor (models are less explainable than rules)
    model_only_factor: float = Field(0.5, ge=0.0, le=1.0)
    # a rule hit whose linked acts all have probability <= this goes to the review queue
    disagree_below: float = Field(0.1, ge=0.0, le=1.0)
    # a rule hit whose linked act has probability >= this is "agreed" (confidence raised)
    agree_above: float = Field(0.5, ge=0.0, le=1.0)
    links: list[RuleActLink] = Field(default_factory=list)


class ModelsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    acts: dict[str, ActPolicy] = Field(default_factory=dict)
    combine: CombinePolicy = Field(default_factory=CombinePolicy)

    @model_validator(mode="after")
    def _known_acts(self) -> ModelsConfig:
        for name in self.acts:
            if name not in schema.ACT_LABELS:
                raise ValueError(f"unknown act '{name}' in acts; known: {', '.join(schema.ACT_LABELS)}")
        for link in self.combine.links:
            for a in link.acts:
                if a not in schema.ACT_LABELS:
                    raise ValueError(f"unknown act '{a}' in combine.links; known: {', '.join(schema.ACT_LABELS)}")
        if self.combine.disagree_below >= self.combine.agree_above:
            raise ValueError("combine.disagree_below must be lower than combine.agree_above")
        return self


def load_thresholds(rules_dir: Path) -> ModelsConfig:
    """``<rules>/models.yaml``; absent file means defaults with no act findings."""
    path = Path(rules_dir) / MODELS_FILE
    if not path.exists():
        return ModelsConfig()
    data = load_yaml(path)
    if data is None:  # an empty (e.g. truncated) file would silently switch every act finding off
        raise ConfigError("empty file; delete it to run without act findings", file=str(path))
    try:
        return ModelsConfig.model_validate(data)
    except ValidationError as exc:
        raise config_error_from_validation(exc, file=str(path)) from None
    except ValueError as exc:  # pragma: no cover - pydantic wraps validator errors
        raise ConfigError(str(exc), file=str(path)) from None
