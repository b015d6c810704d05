"""Fixtures for the knowledge tests: the bundled KBs loaded once (the message-frame builder is in
chats.py: a module, not a conftest, so importing it does not depend on which conftest pytest loaded
first)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qa_inspect.knowledge import KnowledgeBase, load_knowledge


@pytest.fixture(scope="session")
def kbs(rules_dir: Path) -> dict[str, KnowledgeBase]:
    return load_knowledge(rules_dir)
