"""Deployment configuration: where the rules folder is, YAML loading with located errors, shops.

A deployment keeps its configuration in its own folder (``--rules DIR``); the repo's
``rules/`` is only the default and the template ``qa-inspect init`` copies.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from qa_inspect.errors import ConfigError, UserError
from qa_inspect.schema import DIMENSIONS

RULES_ENV = "QA_INSPECT_RULES"
SHOPS_FILE = "shops.yaml"


def default_rules_dir() -> Path:
    """The repo's ``rules/`` next to ``src/`` (editable install) or ``$QA_INSPECT_RULES``."""
    env = os.environ.get(RULES_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "rules"


def resolve_rules_dir(rules: Path | str | None) -> Path:
    path = Path(rules) if rules else default_rules_dir()
    if not path.is_dir():
        raise UserError(
            f"rules folder not found: {path}. Pass --rules DIR, set ${RULES_ENV}, "
            "or create one with 'qa-inspect init DIR'."
        )
    return path


def init_rules_dir(target: Path, *, force: bool = False) -> list[Path]:
    """Copy the default configuration to ``target`` so a deployment can edit its own copy."""
    src = default_rules_dir()
    if not src.is_dir():
        raise UserError(f"default rules folder missing at {src}; reinstall qa-inspect")
    target = Path(target)
    if target.exists() and any(target.iterdir()) and not force:
        raise UserError(f"{target} is not empty; pass --force to overwrite files in it")
    copied: list[Path] = []
    for f in sorted(src.rglob("*")):
        if f.is_file() and "__pycache__" not in f.parts:
            dest = target / f.relative_to(src)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest)
            copied.append(dest)
    return copied


# libyaml's parser when PyYAML was built with it: the rule sets, knowledge bases and profiles are
# parsed in every worker process, and the pure-Python parser was a third of the context load.
_SafeBase: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _UniqueKeyLoader(_SafeBase):  # type: ignore[misc,valid-type]
    """SafeLoader that rejects a key given twice in one mapping (PyYAML keeps the last silently,
    so a second ``points:`` in a rule would quietly win)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _value in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # unhashable: construct_mapping reports it
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{key}'", key_node.start_mark)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_yaml(path: Path) -> Any:
    """Parse a YAML file; syntax errors name the file, line and column."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=str(path)) from None
    except IsADirectoryError:
        raise ConfigError("is a folder, expected a YAML file", file=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", file=str(path)) from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"YAML syntax error: {problem}", file=str(path), key_path=where) from None
    except (ValueError, OverflowError) as exc:
        # PyYAML builds dates while parsing: an unquoted ``2026-02-30`` raises ValueError.
        raise ConfigError(f"invalid value ({exc}); quote it if it is not a date", file=str(path)) from None
    except RecursionError:
        raise ConfigError("nested too deeply to be a configuration file", file=str(path)) from None


def valid_timezone(name: str) -> bool:
    """True for an IANA zone name. ZoneInfo raises OSError for a folder name such as 'America'."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def key_path(loc: tuple[Any, ...]) -> str:
    """Render a pydantic error location as ``rules[3].examples.fail[0]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def config_error_from_validation(exc: ValidationError, *, file: str, rule_id: str | None = None,
                                 prefix: tuple[Any, ...] = ()) -> ConfigError:
    """The most specific pydantic error as a ConfigError with file, rule id and key path.

    A union field (e.g. an example: text, list of lines or a mapping) yields one error per
    alternative; the deepest location is the one that names the offending key.
    """
    errors = exc.errors()
    err = max(errors, key=lambda e: len(e["loc"]))  # max keeps the first of equal depth
    n = len(errors)
    more = f" (and {n - 1} more error{'s' if n > 2 else ''})" if n > 1 else ""
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    return ConfigError(msg + more, file=file, rule_id=rule_id, key_path=key_path((*prefix, *err["loc"])))


_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class BusinessHours(BaseModel):
    """Hours when a human reply is expected; replies outside them are not timed."""

    model_config = ConfigDict(extra="forbid")
    start: str = "09:00"
    end: str = "24:00"

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        if v != "24:00" and not _HHMM.match(v):
            raise ValueError("expected HH:MM (00:00-24:00)")
        return v

    def minutes(self) -> tuple[int, int]:
        def m(s: str) -> int:
            h, mm = s.split(":")
            return int(h) * 60 + int(mm)

        return m(self.start), m(self.end)


class Shop(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    shop_id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    name: str
    platform: Literal["taobao", "tmall", "jd", "pdd", "douyin", "shopee", "weibo", "other"]
    locale: Literal["zh-CN", "zh-TW"] = "zh-CN"
    timezone: str = "Asia/Shanghai"
    currency: str = "CNY"
    business_hours: BusinessHours = Field(default_factory=BusinessHours)
    recipients: list[str] = Field(default_factory=list)
    # Qianniu-style exports name agents "店铺名:客服名"; these are the prefixes that mark an agent.
    account_prefixes: list[str] = Field(default_factory=list)
    scorecard_weights: dict[str, float] | None = None

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        if not valid_timezone(v):
            raise ValueError(f"unknown time zone '{v}'")
        return v

    @field_validator("scorecard_weights")
    @classmethod
    def _weights(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        for k, w in (v or {}).items():
            if k not in DIMENSIONS:
                raise ValueError(f"unknown dimension '{k}'; known: {', '.join(DIMENSIONS)}")
            if w < 0:
                raise ValueError(f"weight of '{k}' must be >= 0")
        return v

    @field_validator("recipients")
    @classmethod
    def _emails(cls, v: list[str]) -> list[str]:
        for addr in v:
            if not re.match(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$", addr):
                raise ValueError(f"not an email address: '{addr}'")
        return v


class ShopsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    shops: list[Shop]


def load_shops(rules_dir: Path) -> dict[str, Shop]:
    """Shops by id from ``<rules>/shops.yaml``; missing file means no per-shop settings."""
    path = Path(rules_dir) / SHOPS_FILE
    if not path.exists():
        return {}
    data = load_yaml(path)
    try:
        parsed = ShopsFile.model_validate(data)
    except ValidationError as exc:
        raise config_error_from_validation(exc, file=str(path)) from None
    shops: dict[str, Shop] = {}
    for i, shop in enumerate(parsed.shops):
        if shop.shop_id in shops:
            raise ConfigError(f"duplicate shop_id '{shop.shop_id}'", file=str(path),
                              key_path=f"shops[{i}].shop_id")
        shops[shop.shop_id] = shop
    return shops
