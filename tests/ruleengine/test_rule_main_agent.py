"""``main_agent`` counts with a dict instead of a Counter: same agent, ties to the first seen."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from qa_inspect.ruleengine.conversation import main_agent


def reference_main_agent(agent_id: list[str | None], human_agent: list[int]) -> str | None:
    ids = [agent_id[i] for i in human_agent if agent_id[i]]
    if not ids:
        ids = [a for a in agent_id if a]
    return Counter(ids).most_common(1)[0][0] if ids else None


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c", "", None]), max_size=12), st.data())
def test_main_agent_equals_counter(agent_id: list[str | None], data: st.DataObject) -> None:
    human = sorted(data.draw(st.sets(st.integers(0, max(len(agent_id) - 1, 0)))) if agent_id else set())
    assert main_agent(agent_id, human) == reference_main_agent(agent_id, human)


def test_ties_go_to_the_first_seen() -> None:
    assert main_agent(["b", "a", "a", "b"], [0, 1, 2, 3]) == "b"
    assert main_agent(["b", "a", "a"], [0, 1, 2]) == "a"
    assert main_agent(["x", "b", "a"], [1, 2]) == "b"
    assert main_agent(["x", None, ""], [1, 2]) == "x"  # no human id: any message's
    assert main_agent([None, ""], [0]) is None
