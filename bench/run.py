#!/usr/bin/env python3
"""Benchmark: end-to-end ``qa-inspect run`` on N generated messages against plain jieba.

One invocation, one data file, several measurements (see bench/README.md for what each means):

1. data: bench/data/m<N>.csv from bench/gen.py (reused when its sidecar .json says it was generated
   with the same parameters);
2. reference: plain ``jieba.lcut`` over the same message texts in this process (texts loaded first;
   the dictionary load is timed separately; only the lcut loop counts);
3. end-to-end: ``qa-inspect run <file> --out <tmp>`` with reports and, when the command has
   ``--no-reports``, without; wall time, messages/s, peak RSS of the whole process tree (VmRSS of the
   child and all its descendants, polled every ``--poll`` s and summed), ru_maxrss of the child as
   returned by wait4 (the largest single process of the tree), and ``stage_seconds`` from
   ``<out>/run_summary.json`` when the run writes it.

A failing run does not stop the benchmark: its exit code and stderr tail are reported.
Results are printed as a table and written to bench/out/results-<N>.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
import gen  # noqa: E402  (bench/ is not a package)

TEXT_COLUMN = "消息内容"


# ------------------------------------------------------------------------------------------
# Machine
# ------------------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    """What the figures were measured on; the load average matters on a shared machine."""
    cpu = ""
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        for ln in Path("/proc/meminfo").read_text().splitlines():
            if ln.startswith("MemTotal:"):
                mem_kib = int(ln.split()[1])
    except OSError:
        pass
    commit = ""
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return {"nproc": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)), "mem_gib": round(mem_kib / 2**20, 1),
            "cpu_model": cpu, "python": platform.python_version(), "platform": platform.platform(),
            "git_commit": commit, "loadavg_start": list(os.getloadavg())}


# ------------------------------------------------------------------------------------------
# Process-tree memory
# ------------------------------------------------------------------------------------------
def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        # comm (field 2) may contain spaces/parens: ppid is the 2nd field after the last ')'
        ppid = int(stat[stat.rfind(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def _vmrss_kib(pid: int) -> int:
    try:
        for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    except OSError:
        pass
    return 0  # exited, or a zombie (no VmRSS line)


def tree_rss_kib(root: int) -> tuple[int, int]:
    """(sum of VmRSS in KiB, number of processes) of ``root`` and all its descendants right now."""
    kids = _children_map()
    stack, seen, total = [root], set(), 0
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += _vmrss_kib(pid)
        stack.extend(kids.get(pid, []))
    return total, len(seen)


class TreeSampler(threading.Thread):
    """Polls the tree's summed RSS until stopped; keeps the peak and the most processes seen."""

    def __init__(self, pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_kib = self.max_procs = self.samples = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            kib, n = tree_rss_kib(self.pid)
            self.peak_kib = max(self.peak_kib, kib)
            self.max_procs = max(self.max_procs, n)
            self.samples += 1
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


# ------------------------------------------------------------------------------------------
# End-to-end run
# ------------------------------------------------------------------------------------------
def qa_inspect_cmd() -> list[str]:
    """The console script beside this interpreter (the venv), else the one on PATH."""
    beside = Path(sys.executable).parent / "qa-inspect"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("qa-inspect")
    if found:
        return [found]
    return [sys.executable, "-c", "from qa_inspect.cli import main; main()"]


def run_help(cmd: list[str]) -> str:
    try:
        p = subprocess.run([*cmd, "run", "--help"], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "COLUMNS": "200"})
        return p.stdout + p.stderr
    except (OSError, subprocess.SubprocessError) as exc:
        return f"<could not run qa-inspect run --help: {exc}>"


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_e2e(cmd: list[str], data: Path, out: Path, *, workers: int, reports: bool, extra: list[str],
            poll: float, timeout: float | None, messages: int) -> dict[str, Any]:
    """Time one ``qa-inspect run``; wait4 gives ru_maxrss of exactly this child (and its reaped children)."""
    argv = [*cmd, "run", str(data), "--out", str(out), "--workers", str(workers), *extra]
    if not reports:
        argv.append("--no-reports")
    out.parent.mkdir(parents=True, exist_ok=True)
    log_out, log_err = out.parent / (out.name + ".stdout"), out.parent / (out.name + ".stderr")
    res: dict[str, Any] = {"label": "with reports" if reports else "without reports", "argv": argv,
                           "loadavg_before": list(os.getloadavg())}
    with log_out.open("wb") as fo, log_err.open("wb") as fe:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=fo, stderr=fe, start_new_session=True)  # own group: killable
        sampler = TreeSampler(proc.pid, poll)
        sampler.start()
        timed_out = False
        status, ru = 0, None
        deadline = None if timeout is None else t0 + timeout
        try:
            while True:
                pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
                if pid == proc.pid:
                    break
                if deadline is not None and time.perf_counter() > deadline:
                    timed_out = True
                    os.killpg(proc.pid, signal.SIGKILL)
                    _, status, ru = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.02)
        except BaseException:  # Ctrl-C etc.: do not leave our run (and its workers) behind
            os.killpg(proc.pid, signal.SIGKILL)
            os.wait4(proc.pid, 0)
            proc.returncode = -9
            raise
        finally:
            wall = time.perf_counter() - t0
            sampler.stop()
    rc = os.waitstatus_to_exitcode(status)
    proc.returncode = rc  # already reaped by wait4; keep Popen from waiting again
    res.update(exit_code=rc, timed_out=timed_out, wall_s=round(wall, 2),
               msgs_per_s=round(messages / wall, 1) if wall > 0 and rc == 0 and not timed_out else None,
               peak_tree_rss_mib=round(sampler.peak_kib / 1024, 1), max_processes=sampler.max_procs,
               rss_samples=sampler.samples, ru_maxrss_mib=round(ru.ru_maxrss / 1024, 1) if ru else None,
               cpu_user_s=round(ru.ru_utime, 2) if ru else None, cpu_sys_s=round(ru.ru_stime, 2) if ru else None)
    summary_path = out / "run_summary.json"
    summary: dict[str, Any] = {}
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            res["run_summary_error"] = str(exc)
    res["run_summary"] = bool(summary)
    stages = summary.get("stage_seconds")
    res["stage_seconds"] = stages if isinstance(stages, dict) else None
    cpu = summary.get("stage_cpu_seconds")
    res["stage_cpu_seconds"] = cpu if isinstance(cpu, dict) else None
    res["wall_seconds"] = summary.get("wall_seconds") if isinstance(summary.get("wall_seconds"), dict) else None
    for key in ("messages", "rejects", "conversations", "findings", "mean_total", "ruleset_version", "seconds"):
        if key in summary:
            res[f"run_{key}"] = summary[key]
    if summary and reports:  # a run can exit 0 yet skip rendering (reports stage unavailable)
        res["reports_rendered"] = bool(summary.get("reports"))
    if rc != 0 or timed_out:
        res["stderr_tail"] = _tail(log_err) or _tail(log_out)
    return res


# ------------------------------------------------------------------------------------------
# jieba reference
# ------------------------------------------------------------------------------------------
def load_texts(path: Path, encoding: str) -> list[str]:
    with path.open(encoding=encoding, newline="") as fh:
        rd = csv.reader(fh)
        col = next(rd).index(TEXT_COLUMN)
        return [row[col] for row in rd]


def jieba_reference(path: Path, encoding: str) -> dict[str, Any]:
    """Plain jieba.lcut over every message text, one process: the floor any Chinese pipeline pays."""
    t0 = time.perf_counter()
    texts = load_texts(path, encoding)
    load_s = time.perf_counter() - t0
    import jieba

    jieba.setLogLevel(logging.WARNING)
    cache = Path(tempfile.gettempdir()) / "jieba.cache"
    cached = cache.exists()
    t0 = time.perf_counter()
    jieba.initialize()
    dict_s = time.perf_counter() - t0
    lcut = jieba.lcut
    tokens = 0
    c0, t0 = time.process_time(), time.perf_counter()
    for t in texts:
        tokens += len(lcut(t))
    cut_s, cut_cpu = time.perf_counter() - t0, time.process_time() - c0
    chars = sum(len(t) for t in texts)
    return {"texts": len(texts), "chars": chars, "tokens": tokens, "load_texts_s": round(load_s, 2),
            "dict_load_s": round(dict_s, 2), "dict_cache_existed": cached, "lcut_s": round(cut_s, 2),
            "lcut_cpu_s": round(cut_cpu, 2),
            "msgs_per_s": round(len(texts) / cut_s, 1) if cut_s > 0 else None,
            "jieba_version": getattr(jieba, "__version__", "")}


# ------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------
def ensure_data(messages: int, path: Path, *, seed: int, encoding: str, agents: int) -> dict[str, Any]:
    """Reuse ``path`` when its sidecar says it was generated with these parameters; else generate."""
    meta_path = path.with_name(path.name + ".json")
    want = {"messages": messages, "seed": seed, "encoding": encoding, "agents": agents,
            "generator_mtime": int(Path(gen.__file__).stat().st_mtime)}
    if path.is_file() and meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except ValueError:
            meta = {}
        if all(meta.get(k) == v for k, v in want.items()):
            return {**meta, "reused": True}
    if path.exists() and not meta_path.is_file():  # never overwrite a file gen.py did not write
        raise SystemExit(f"{path} exists but was not generated by bench/gen.py (no {meta_path.name}); "
                         "delete it or pass another --data path")
    st = gen.generate(path, messages, seed=seed, encoding=encoding, agents=agents)
    meta = {**want, **{k: v for k, v in asdict(st).items() if k != "path"}, "path": str(path),
            "bytes": path.stat().st_size}
    meta["seconds"] = round(meta["seconds"], 2)
    meta_path.write_text(json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf-8")
    return {**meta, "reused": False}


# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------
def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.2f}{unit}" if v < 100 else f"{v:,.0f}{unit}"
    return f"{v}{unit}"


def consistency_notes(runs: list[dict[str, Any]]) -> list[str]:
    """Same data + same rule set must give the same results, with or without reports, any --workers."""
    groups: dict[str, set[tuple[Any, ...]]] = {}
    for r in runs:
        if r["exit_code"] == 0 and "run_findings" in r:
            key = (r.get("run_messages"), r.get("run_rejects"), r.get("run_conversations"), r.get("run_findings"),
                   None if r.get("run_mean_total") is None else round(float(r["run_mean_total"]), 6))
            groups.setdefault(str(r.get("run_ruleset_version")), set()).add(key)
    return [f"runs with rule set {v} disagree (messages, rejects, conversations, findings, mean total): "
            f"{sorted(map(str, ks))}" for v, ks in groups.items() if len(ks) > 1]


def render_table(res: dict[str, Any]) -> str:
    n = res["messages"]
    lines = [f"qa-inspect benchmark: {n:,} messages, workers={res['workers']}, "
             f"{res['machine']['nproc']} CPUs ({res['machine']['cpu_model']}), {res['machine']['mem_gib']} GiB, "
             f"Python {res['machine']['python']}, load avg at start {res['machine']['loadavg_start'][0]:.1f}",
             f"data: {res['data']['path']} ({'reused' if res['data'].get('reused') else 'generated in ' + _fmt(res['data'].get('seconds'), ' s')}, "
             f"{res['data'].get('conversations', '?')} conversations, {res['data'].get('agents', '?')} agents)", ""]
    head = (f"{'measurement':<36}{'wall s':>10}{'CPU s':>10}{'msg/s':>12}{'peak tree RSS MiB':>19}"
            f"{'ru_maxrss MiB':>15}{'x jieba':>9}  status")
    lines += [head, "-" * len(head)]
    j = res.get("jieba")
    if j:
        lines.append(f"{'jieba.lcut reference (1 process)':<36}{_fmt(j['lcut_s']):>10}{_fmt(j['lcut_cpu_s']):>10}"
                     f"{_fmt(j['msgs_per_s']):>12}"
                     f"{'-':>19}{'-':>15}{'1.00':>9}  dict load {j['dict_load_s']} s"
                     f"{' (cached)' if j['dict_cache_existed'] else ''}, texts load {j['load_texts_s']} s")
    for r in res.get("runs", []):
        status = "ok" if r["exit_code"] == 0 else f"FAILED exit {r['exit_code']}" + (" (timeout)" if r["timed_out"] else "")
        if r["exit_code"] == 0 and r.get("reports_rendered") is False:
            status += ", but run_summary.json lists no reports"
        cpu = None if r["cpu_user_s"] is None else round(r["cpu_user_s"] + r["cpu_sys_s"], 2)
        lines.append(f"{'qa-inspect run, ' + r['label']:<36}{_fmt(r['wall_s']):>10}{_fmt(cpu):>10}"
                     f"{_fmt(r['msgs_per_s']):>12}"
                     f"{_fmt(r['peak_tree_rss_mib']):>19}{_fmt(r['ru_maxrss_mib']):>15}"
                     f"{_fmt(r.get('ratio_to_jieba')):>9}  {status}")
    for note in res.get("notes", []):
        lines.append(f"note: {note}")
    for r in res.get("runs", []):
        lines.append("")
        lines.append(f"[{r['label']}] processes seen: {r['max_processes']}, CPU user {r['cpu_user_s']} s, "
                     f"sys {r['cpu_sys_s']} s (x jieba CPU: {_fmt(r.get('cpu_ratio_to_jieba'))}), "
                     f"load avg before {r['loadavg_before'][0]:.1f}")
        if "run_messages" in r:
            lines.append(f"    imported {r['run_messages']:,} messages + {r.get('run_rejects', '?')} rejects "
                         f"(file: {n:,} rows, {res['data'].get('bad_rows', '?')} planted bad rows); "
                         f"{r.get('run_conversations', '?')} conversations, {r.get('run_findings', '?')} findings")
        if r.get("stage_seconds"):
            total = sum(float(v) for v in r["stage_seconds"].values()) or 1.0
            cpu = r.get("stage_cpu_seconds") or {}
            lines.append(f"    {'stage':<28}{'seconds':>9}   share {'CPU s':>9}  (CPU of the process that ran it)")
            for stage, sec in r["stage_seconds"].items():
                c = f"{float(cpu[stage]):>9.2f}" if stage in cpu else f"{'-':>9}"
                lines.append(f"    {stage:<28}{float(sec):>9.2f} s {100 * float(sec) / total:5.1f} % {c}")
            if r.get("wall_seconds"):
                lines.append("    client wall clock per phase: " + ", ".join(
                    f"{k} {float(v):.1f}" for k, v in r["wall_seconds"].items()))
        elif r["exit_code"] == 0:
            lines.append("    stage times: missing (run_summary.json has no stage_seconds mapping)"
                         if r["run_summary"] else "    stage times: missing (no run_summary.json)")
        if r.get("stderr_tail"):
            lines.append("    stderr tail:")
            lines += ["      " + ln for ln in r["stderr_tail"].splitlines()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", "-n", type=int, default=1_000_000, help="messages to generate and process")
    ap.add_argument("--workers", "-j", type=int, nargs="+", default=[1],
                    help="passed to qa-inspect run --workers; several values (e.g. -j 1 2) time each")
    ap.add_argument("--keep", action="store_true", help="keep the run output folders (default: deleted)")
    ap.add_argument("--data", type=Path, default=None, help="data CSV (default bench/data/m<N>.csv)")
    ap.add_argument("--encoding", choices=sorted(gen.ENCODINGS), default="utf-8-sig", help="data file encoding")
    ap.add_argument("--seed", type=int, default=gen.SEED, help="generator seed")
    ap.add_argument("--agents", type=int, default=60, help="agent accounts in the generated data")
    ap.add_argument("--results", type=Path, default=None, help="results JSON (default bench/out/results-<N>.json)")
    ap.add_argument("--work-dir", type=Path, default=None, help="where run outputs go (default: a temp folder)")
    ap.add_argument("--reports", choices=["both", "with", "without"], default="both",
                    help="which end-to-end runs to time ('without' needs run --no-reports)")
    ap.add_argument("--skip-run", action="store_true", help="only generate the data and time the jieba reference")
    ap.add_argument("--skip-jieba", action="store_true", help="do not time the jieba reference")
    ap.add_argument("--run-arg", action="append", default=[], metavar="ARG",
                    help="extra argument for qa-inspect run (repeatable), e.g. --run-arg=--partition-size=5000")
    ap.add_argument("--repeat", type=int, default=1, help="time each end-to-end variant this many times")
    ap.add_argument("--timeout", type=float, default=None, help="kill a run after this many seconds")
    ap.add_argument("--poll", type=float, default=0.1, help="RSS polling interval in seconds")
    args = ap.parse_args(argv)

    data = args.data or BENCH / "data" / f"m{args.messages}.csv"
    res: dict[str, Any] = {"messages": args.messages, "workers": args.workers, "machine": machine_info(),
                           "started_at": datetime.now(UTC).isoformat(timespec="seconds"), "notes": []}
    print(f"data: {data}", flush=True)
    res["data"] = ensure_data(args.messages, data, seed=args.seed, encoding=args.encoding, agents=args.agents)

    if not args.skip_jieba:
        print("jieba reference ...", flush=True)
        res["jieba"] = jieba_reference(data, args.encoding)

    res["runs"] = []
    if not args.skip_run:
        cmd = qa_inspect_cmd()
        helptext = run_help(cmd)
        has_no_reports = "--no-reports" in helptext
        variants = {"both": [True, False], "with": [True], "without": [False]}[args.reports]
        if not has_no_reports and False in variants:
            res["notes"].append("qa-inspect run has no --no-reports option: only the run with reports is timed")
            variants = [True]
        work = args.work_dir or Path(tempfile.mkdtemp(prefix="qa-bench-"))
        try:
            plan = [(i, w, rep) for i in range(1, max(args.repeat, 1) + 1) for w in args.workers for rep in variants]
            for i, workers, reports in plan:
                out = work / f"run-{'reports' if reports else 'noreports'}-j{workers}-{i}"
                if out.exists():
                    shutil.rmtree(out)
                print(f"qa-inspect run ({'with' if reports else 'without'} reports) -> {out} ...", flush=True)
                r = run_e2e(cmd, data, out, workers=workers, reports=reports, extra=args.run_arg,
                            poll=args.poll, timeout=args.timeout, messages=args.messages)
                r["workers"] = workers
                if len(args.workers) > 1:
                    r["label"] += f", -j {workers}"
                if args.repeat > 1:
                    r["label"] += f" #{i}"
                if res.get("jieba") and r["exit_code"] == 0 and res["jieba"]["lcut_s"] > 0:
                    r["ratio_to_jieba"] = round(r["wall_s"] / res["jieba"]["lcut_s"], 2)
                    if r["cpu_user_s"] is not None and res["jieba"]["lcut_cpu_s"] > 0:
                        r["cpu_ratio_to_jieba"] = round((r["cpu_user_s"] + r["cpu_sys_s"])
                                                        / res["jieba"]["lcut_cpu_s"], 2)
                res["runs"].append(r)
                if not args.keep:
                    shutil.rmtree(out, ignore_errors=True)
        finally:
            if args.keep:
                res["notes"].append(f"run outputs kept in {work}")
            elif args.work_dir is None:
                shutil.rmtree(work, ignore_errors=True)

    res["notes"] += consistency_notes(res["runs"])
    res["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    results = args.results or BENCH / "out" / f"results-{args.messages}.json"
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(res, ensure_ascii=False, indent=2), encoding="utf-8")
    print()
    print(render_table(res))
    print(f"\nresults: {results}")
    return 0 if all(r["exit_code"] == 0 for r in res["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
