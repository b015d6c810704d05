"""Engines: local, a process pool and a dask cluster give exactly the same outputs; the
batch-wide template counts survive partitioning; the context loads once per worker; engine
options are checked; run_summary.json carries real timings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from qa_inspect import schema as S
from qa_inspect.cli import app
from qa_inspect.engines import ENGINES, EngineOptions, resolve_engine
from qa_inspect.errors import UsageError
from qa_inspect.pipeline import RunSummary, run_audit

TEMPLATE_RULE = "MEC-001"
SMALL = 15  # conversations per partition in the parallel runs: 8 partitions of night 1
@pytest.fixture(scope="module")
def logs(night1: list[Path]) -> list[Path]:
    return night1


@pytest.fixture(scope="module")
def rules(rules_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A frozen copy (others edit rules/ while tests run) whose template rule fires on the sample
    logs only with batch-wide counts: 5+ conversations sharing a reply in the whole night, which
    no 15-conversation partition reaches on its own."""
    dest = tmp_path_factory.mktemp("rules") / "rules"
    shutil.copytree(rules_dir, dest)
    y = dest / "mechanical.yaml"
    text = y.read_text(encoding="utf-8")
    assert "min_conversations: 20" in text and "min_share: 0.8" in text
    y.write_text(text.replace("min_conversations: 20", "min_conversations: 5")
                 .replace("min_share: 0.8", "min_share: 0.5", 1), encoding="utf-8")
    return dest


def _outputs(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    conv = pd.read_parquet(out / "conversations.parquet")
    conv = conv.sort_values(S.CONVERSATION_ID).reset_index(drop=True)
    f = pd.read_parquet(out / "findings.parquet")
    f = f.sort_values(list(S.FINDING_COLUMNS), na_position="first").reset_index(drop=True)
    return conv, f


def _same(a: Path, b: Path) -> None:
    conv_a, f_a = _outputs(a)
    conv_b, f_b = _outputs(b)
    pd.testing.assert_frame_equal(conv_a, conv_b, check_exact=True)
    pd.testing.assert_frame_equal(f_a, f_b, check_exact=True)


@pytest.fixture(scope="module")
def local_run(logs: list[Path], rules: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RunSummary]:
    """The reference: one partition holding the whole batch, in this process."""
    out = tmp_path_factory.mktemp("local")
    summary = run_audit(logs, out, rules_dir=rules, partition_size=100_000, render=False)
    assert summary.engine == "local" and summary.partitions == 1
    return out, summary


def test_local_summary_has_real_files_seconds_and_stage_times(local_run: tuple[Path, RunSummary],
                                                              logs: list[Path]) -> None:
    out, summary = local_run
    data = json.loads((out / "run_summary.json").read_text(encoding="utf-8"))
    assert data["files"] == len(logs)
    assert data["seconds"] > 0 and data["seconds"] == pytest.approx(summary.seconds)
    stages = data["stage_seconds"]
    for key in ("config", "ingest", "tokenize", "rules", "knowledge", "models", "combine", "score", "store",
                "outputs"):
        assert stages[key] >= 0, key
    assert "reports" not in stages  # render=False
    # in one process the per-stage times fit inside the wall time
    assert sum(stages.values()) <= data["seconds"] + 0.05
    assert data["wall_seconds"]["total"] == pytest.approx(data["seconds"], abs=1e-3)
    assert (f"stage seconds [local, 1 partitions]: config {stages['config']:.2f}"
            in summary.stage_text())
    conv, findings = _outputs(out)
    assert (findings[S.RULE_ID] == TEMPLATE_RULE).sum() > 0  # the template rule is exercised


@pytest.mark.slow
def test_pool_gives_identical_outputs(local_run: tuple[Path, RunSummary], logs: list[Path], rules: Path,
                                      tmp_path: Path) -> None:
    out = tmp_path / "pool"
    summary = run_audit(logs, out, rules_dir=rules, workers=2, partition_size=SMALL, render=False)
    assert summary.engine == "pool" and summary.partitions > 2
    assert 1 <= summary.context_loads <= 2  # once per worker, not once per partition
    assert summary.stage_seconds["worker_config"] > 0
    _same(local_run[0], out)
    # the pool client stored the partitions while the workers scored (store.RunWriter): same store
    assert _store_rows(out / "qa.duckdb") == _store_rows(local_run[0] / "qa.duckdb")


def _store_rows(db: Path) -> dict[str, list[tuple[object, ...]]]:
    import duckdb

    skip = {"run_id", "scored_at", "started_at", "finished_at", "out_dir", "inputs"}
    con = duckdb.connect(str(db), read_only=True)
    try:
        out = {}
        for t in ("conversations", "messages", "findings", "score_trace", "conversation_kpis", "review_queue", "runs"):
            cols = [r[0] for r in con.execute(f"DESCRIBE {t}").fetchall() if r[0] not in skip]
            out[t] = con.execute(f"SELECT {', '.join(cols)} FROM {t} ORDER BY ALL").fetchall()
        return out
    finally:
        con.close()


@pytest.mark.slow
@pytest.mark.parametrize("where", ["add", "finish"])
def test_pool_store_falls_back_to_the_whole_night_when_memory_runs_out(
        local_run: tuple[Path, RunSummary], logs: list[Path], rules: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """A night too big for the connection's cap while storing during the scoring (a partition's
    insert, or the COMMIT): the open transaction is rolled back and the night written whole
    afterwards (write_run retries with more memory), with the same store as a local run."""
    import duckdb

    from qa_inspect import store

    calls: list[str] = []
    real = getattr(store.RunWriter, where)
    oom = duckdb.OutOfMemoryException("Out of Memory Error: could not allocate block (test)")

    def failing(self: store.RunWriter, *args: object, **kw: object) -> object:
        calls.append(where)
        if where == "add" and len(calls) == 2:
            raise oom
        if where == "finish":
            self.abort()
            raise oom
        return real(self, *args, **kw)

    monkeypatch.setattr(store.RunWriter, where, failing)
    out = tmp_path / "pool"
    summary = run_audit(logs, out, rules_dir=rules, workers=2, partition_size=SMALL, render=False)
    assert summary.partitions > 2
    assert calls == ([where] * 2 if where == "add" else [where])  # no more inserts after the failure
    _same(local_run[0], out)
    assert _store_rows(out / "qa.duckdb") == _store_rows(local_run[0] / "qa.duckdb")


@pytest.mark.slow
def test_dask_gives_identical_outputs(local_run: tuple[Path, RunSummary], logs: list[Path], rules: Path,
                                      tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    out = tmp_path / "dask"
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=None) as cluster:
        summary = run_audit(logs, out, rules_dir=rules, partition_size=SMALL, render=False,
                            dask_address=cluster.scheduler_address)
        with distributed.Client(cluster.scheduler_address) as client:
            # the run unregisters its context plugin: nothing stays loaded on a shared cluster
            plugins = client.run(lambda dask_worker: sorted(dask_worker.plugins))
    assert summary.engine == "dask" and summary.workers == 2 and summary.partitions > 2
    assert 1 <= summary.context_loads <= 2
    assert not any(p.startswith("qa-inspect-context") for names in plugins.values() for p in names)
    _same(local_run[0], out)


def test_registry_and_engine_options() -> None:
    assert ENGINES.names() == ["dask", "local", "pool"]
    assert resolve_engine(None, EngineOptions()) == "local"
    assert resolve_engine(None, EngineOptions(workers=3)) == "pool"
    assert resolve_engine(None, EngineOptions(dask_address="tcp://x:8786")) == "dask"
    with pytest.raises(UsageError, match="unknown engine 'spark'; known: dask, local, pool"):
        resolve_engine("spark", EngineOptions())
    for name, opts in (("dask", EngineOptions()), ("local", EngineOptions(workers=2)),
                       ("pool", EngineOptions(dask_address="tcp://x:8786")),
                       (None, EngineOptions(workers=2, dask_address="tcp://x:8786")),
                       (None, EngineOptions(workers=0))):
        with pytest.raises(UsageError):
            resolve_engine(name, opts)


def test_cli_rejects_unknown_engine_before_touching_the_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["run", str(tmp_path), "--out", str(out), "--engine", "spark", "-q"])
    assert res.exit_code == 2 and "unknown engine 'spark'" in res.output
    assert not out.exists()


def test_bounded_keeps_order_and_at_most_window_in_flight() -> None:
    from qa_inspect.engines import bounded

    in_flight: list[int] = []
    peak = 0

    def submit(k: int) -> int:
        nonlocal peak
        in_flight.append(k)
        peak = max(peak, len(in_flight))
        return k

    def result(k: int) -> int:
        in_flight.remove(k)
        return k * 10

    assert list(bounded(submit, result, 7, 3)) == [k * 10 for k in range(7)]
    assert peak == 3 and not in_flight
    assert list(bounded(submit, result, 0, 3)) == []


def test_pool_client_loads_a_light_context_with_the_workers_version(rules: Path) -> None:
    """The pool's client skips knowledge, models and dictionary (its workers load them) but must
    compute the very version the workers are checked against; it can never score a partition."""
    from qa_inspect.errors import BugError
    from qa_inspect.pipeline import load_context, process_partition

    full, light = load_context(rules), load_context(rules, light=True)
    assert light.light and not full.light
    assert light.kbs == {} and light.models is None and light.tokenizer is None
    assert light.version == full.version and light.shops.keys() == full.shops.keys()
    with pytest.raises(BugError, match="light context"):
        process_partition(S.empty_messages(), light)


def test_pool_reports_a_broken_knowledge_base_as_a_config_error(logs: list[Path], rules: Path,
                                                                tmp_path: Path) -> None:
    """Only the workers load the knowledge bases in a pool run: their ConfigError must reach the
    command line as exit 1 with file and line, not as a broken pool (exit 3)."""
    bad = tmp_path / "rules"
    shutil.copytree(rules, bad)
    policies = sorted((bad / "knowledge").rglob("policies.yaml"))[0]
    policies.write_text(policies.read_text(encoding="utf-8") + "  - {oops: [\n", encoding="utf-8")
    res = CliRunner().invoke(app, ["run", *map(str, logs), "--out", str(tmp_path / "out"), "--rules", str(bad),
                                   "--workers", "2", "--no-reports"])
    assert res.exit_code == 1, res.output
    assert str(policies) in res.output and "YAML syntax error" in res.output
