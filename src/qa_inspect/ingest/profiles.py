"""Import profiles: how one shop platform's export maps onto the canonical message schema.

A profile is data (``rules/import_profiles/NAME.yaml``), so a merchant with a new export
layout adds a YAML file instead of code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from qa_inspect.config import config_error_from_validation, load_yaml, valid_timezone
from qa_inspect.errors import ConfigError

PROFILES_DIR = "import_profiles"

MessageKind = Literal["text", "auto_reply", "order", "payment", "refund"]
Role = Literal["customer", "agent", "bot", "system"]


class ColumnMap(BaseModel):
    """Canonical field -> the export's own header (or JSON key)."""

    model_config = ConfigDict(extra="forbid")
    shop: str | None = None  # shop display name or shop_id; None -> profile.shop_id
    conversation_id: str | None = None  # None -> sessionise by shop + customer
    agent_id: str | None = None
    customer_id: str
    ts: str
    role: str
    text: str
    sku: str | None = None
    message_type: str | None = None  # e.g. 消息类型: 文本/自动回复/下单/付款/退款
    amount: str | None = None

    def mapped(self) -> dict[str, str]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class ImportProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    description: str = ""
    format: Literal["csv", "tsv", "xlsx", "json", "jsonl"]
    sheet: str | None = None  # xlsx: sheet name; None -> the first sheet
    columns: ColumnMap
    roles: dict[str, Role] = Field(min_length=1)
    message_types: dict[str, MessageKind] = Field(default_factory=dict)
    # Text prefixes that mark a system event, e.g. "[下单]": order (JD exports).
    event_text_prefixes: dict[str, Literal["order", "payment", "refund"]] = Field(default_factory=dict)
    auto_reply_prefixes: list[str] = Field(default_factory=lambda: ["【自动回复】"])
    # strptime format for naive times; None -> ISO 8601 (with or without an offset).
    time_format: str | None = None
    # "shop": naive times are in the shop's timezone from shops.yaml; or an IANA zone name.
    timezone: str = "shop"
    shop_id: str | None = None  # fixed shop when the export has no shop column
    platform: str | None = None  # fallback when the shop is not in shops.yaml

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        if v != "shop" and not valid_timezone(v):
            raise ValueError(f"unknown time zone '{v}' (use 'shop' or an IANA name)")
        return v

    @model_validator(mode="after")
    def _shop_source(self) -> ImportProfile:
        if self.columns.shop is None and self.shop_id is None:
            raise ValueError("either columns.shop or shop_id is required")
        if self.message_types and self.columns.message_type is None:
            raise ValueError("message_types given but columns.message_type is not mapped")
        return self


def load_profiles(rules_dir: Path) -> dict[str, ImportProfile]:
    """All ``<rules>/import_profiles/*.yaml`` by file stem (the ``--profile`` name)."""
    folder = Path(rules_dir) / PROFILES_DIR
    profiles: dict[str, ImportProfile] = {}
    if not folder.is_dir():
        return profiles
    for path in sorted(folder.glob("*.yaml")):
        data = load_yaml(path)
        if not isinstance(data, dict):
            raise ConfigError("expected a mapping at the top level", file=str(path))
        try:
            profiles[path.stem] = ImportProfile.model_validate(data)
        except ValidationError as exc:
            raise config_error_from_validation(exc, file=str(path)) from None
    return profiles
