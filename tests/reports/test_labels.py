"""The written-out Traditional labels are exactly OpenCC s2tw of the Simplified ones."""

from __future__ import annotations

from qa_inspect.reports import labels


def test_traditional_labels_are_opencc_of_the_simplified() -> None:
    expected = labels.traditional_labels()
    assert list(labels.ZH_TW) == list(labels.ZH_CN)  # same keys, same order
    assert dict(labels.ZH_TW) == dict(expected), {k: (v, expected[k]) for k, v in labels.ZH_TW.items()
                                                   if v != expected[k]}
    assert labels.labels_for("zh-TW") is labels.ZH_TW and labels.labels_for("zh-CN") is labels.ZH_CN
    assert labels.ZH_TW["agent_report"] == "客服質檢報告"
