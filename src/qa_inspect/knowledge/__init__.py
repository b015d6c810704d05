"""Product-knowledge accuracy: per-shop knowledge base, claim extraction and verification.

Public API (docs/architecture.md): ``load_knowledge(rules_dir)``, ``verify_knowledge(partition,
kbs)``, ``catalog_words(kbs)``; ``check_knowledge(rules_dir)`` backs ``qa-inspect kb check``.
"""

from __future__ import annotations

from qa_inspect.knowledge.base import (
    KbSummary,
    KnowledgeBase,
    catalog_words,
    check_knowledge,
    load_knowledge,
)
from qa_inspect.knowledge.verify import analyse_message, message_verdict, verify_knowledge

__all__ = [
    "KbSummary",
    "KnowledgeBase",
    "analyse_message",
    "catalog_words",
    "check_knowledge",
    "load_knowledge",
    "message_verdict",
    "verify_knowledge",
]
