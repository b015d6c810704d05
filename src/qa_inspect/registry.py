"""Explicit registries: names are registered in one place and looked up strictly.

No entry-point magic and no import-time side effects: each registry is filled by the module
that owns it, duplicates are a bug and unknown names a user error listing what exists.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from qa_inspect.errors import BugError, UserError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        if not name or not name.strip():
            raise BugError(f"{self.kind} registry: empty name")
        if name in self._items:
            raise BugError(f"{self.kind} registry: duplicate name '{name}'")
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise UserError(f"unknown {self.kind} '{name}'; known: {known}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)
