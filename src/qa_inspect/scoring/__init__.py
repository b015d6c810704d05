"""Scorecard: findings → per-dimension scores, weighted total, grade, veto, and the trace."""

from qa_inspect.scoring.conversations import build_conversations
from qa_inspect.scoring.scorecard import Scorecard, load_scorecard, score_conversations

__all__ = ["Scorecard", "build_conversations", "load_scorecard", "score_conversations"]
