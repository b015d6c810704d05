"""Real research sets (skipped without ../shared/data): counts verified independently of the importer."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from qa_inspect import schema as S
from qa_inspect.ingest import ingest_paths, stc3_labels

pytestmark = pytest.mark.realdata


def test_jddc_counts_roles_and_warnings(shared_data: Path, rules_dir: Path) -> None:
    path = shared_data / "jddc" / "chat_sample.tsv"
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    sessions = {r[0] for r in rows}
    roles = Counter(r[2] for r in rows)
    per_session = Counter(r[0] for r in rows)
    assert len(sessions) == 994 and len(rows) == 12136  # README figures, checked against the raw file

    res = ingest_paths([path], rules_dir=rules_dir)
    m = res.messages
    assert res.files[0].format == "jddc"
    assert len(m) == len(rows) and len(res.rejects) == 0
    assert m[S.CONVERSATION_ID].nunique() == len(sessions)
    assert (m[S.ROLE] == "customer").sum() == roles["0"]
    assert (m[S.ROLE] == "agent").sum() == roles["1"]
    got = m.groupby(S.CONVERSATION_ID).size()
    assert {k.removeprefix("jddc:"): v for k, v in got.items()} == dict(per_session)
    assert m[S.TS].isna().all() and m[S.AGENT_ID].isna().all()
    assert m[S.SKU].notna().sum() == sum(1 for r in rows if r[5] != "nan")
    # seq keeps the file order inside a session
    first = rows[0][0]
    conv = m[m[S.CONVERSATION_ID] == f"jddc:{first}"].sort_values(S.SEQ)
    assert conv[S.TEXT].tolist() == [r[6] for r in rows if r[0] == first]
    warnings = " ".join(res.summary()["warnings"])
    assert "no timestamps" in warnings and "no agent ids" in warnings


def test_stc3_counts_and_labels(shared_data: Path, rules_dir: Path) -> None:
    path = shared_data / "stc3" / "dialogues_dev.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    n_utt = sum(len(t["utterances"]) for d in data for t in d["turns"])
    n_empty = sum(1 for d in data for t in d["turns"] for u in t["utterances"] if not u.strip())
    helpdesk = sum(1 for d in data for t in d["turns"] for u in t["utterances"]
                   if t["sender"] == "helpdesk" and u.strip())
    assert len(data) == 2764

    res = ingest_paths([path], rules_dir=rules_dir)
    m = res.messages
    assert res.files[0].format == "stc3"
    assert m[S.CONVERSATION_ID].nunique() == len(data)
    assert len(m) == n_utt - n_empty
    assert len(res.rejects) == n_empty
    assert set(res.rejects[S.REJECT_REASON]) == {"empty text"}
    assert (m[S.ROLE] == "agent").sum() == helpdesk
    assert m[S.PLATFORM].unique().tolist() == ["weibo"]

    labels = stc3_labels(path)
    assert list(labels.columns) == [S.CONVERSATION_ID, "S", "A", "E"]
    assert len(labels) == len(data)
    d0 = data[0]
    row = labels[labels[S.CONVERSATION_ID] == f"stc3:{d0['id']}"].iloc[0]
    for k in ("S", "A", "E"):
        vals = [a["quality"][k] for a in d0["annotations"]]
        assert row[k] == pytest.approx(sum(vals) / len(vals))
    assert set(labels[S.CONVERSATION_ID]) == set(m[S.CONVERSATION_ID])
