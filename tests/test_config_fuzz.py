"""Broken configuration files, generated: every one must be a located UserError, never a traceback.

Each case copies the bundled ``rules/`` folder to a temporary folder and breaks exactly one file,
so whatever error comes out is about that one change. The property for every config kind: the
loader either accepts the file or raises ``qa_inspect.errors.UserError`` (normally ConfigError)
whose message names the file, and — for rule files — the rule index and id. A few fixed cases go
through the real CLI (exit 1, the message on stderr, no traceback).
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qa_inspect.config import load_shops
from qa_inspect.errors import ConfigError, UserError
from qa_inspect.ingest.profiles import load_profiles
from qa_inspect.knowledge.base import load_shop_kb
from qa_inspect.models.thresholds import load_thresholds
from qa_inspect.ruleengine.check import ExampleError, example_messages
from qa_inspect.ruleengine.ruleset import NOT_RULE_FILES, load_ruleset, parse_rule
from qa_inspect.scoring.scorecard import load_scorecard

RULES = Path(__file__).resolve().parents[1] / "rules"
SHOP = "tmall_yuejia"

# config kind -> (file to break, relative to the rules folder; loader that must report it)
KINDS: dict[str, tuple[str, Callable[[Path], Any]]] = {
    "rules": ("attitude.yaml", load_ruleset),
    "scorecard": ("scorecard.yaml", load_scorecard),
    "shops": ("shops.yaml", load_shops),
    "profiles": ("import_profiles/taobao_csv.yaml", load_profiles),
    "models": ("models.yaml", load_thresholds),
    "policies": (f"knowledge/{SHOP}/policies.yaml", lambda d: load_shop_kb(d / "knowledge" / SHOP, SHOP)),
}
CSV_KINDS: dict[str, str] = {"catalog": f"knowledge/{SHOP}/catalog.csv", "faq": f"knowledge/{SHOP}/faq.csv"}

FUZZ = settings(max_examples=30, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FEW = settings(max_examples=15, deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.too_slow])


RULE_FILES = tuple(sorted(p.name for p in RULES.glob("*.yaml") if p.name not in NOT_RULE_FILES))


@contextmanager
def rules_copy(rule_files: tuple[str, ...] = RULE_FILES) -> Iterator[Path]:
    """A fresh copy of the bundled rules folder (hypothesis examples cannot share tmp_path).

    ``rule_files``: the rule set files to keep. Dropping the others keeps each example fast
    (PyYAML parses ~1 MB/s) and breaks nothing: one valid rule file is a valid rule set.
    """
    with tempfile.TemporaryDirectory(prefix="qa-cfg-fuzz-") as tmp:
        d = Path(tmp) / "rules"
        skip = [n for n in RULE_FILES if n not in rule_files]
        shutil.copytree(RULES, d, ignore=shutil.ignore_patterns("__pycache__", *skip))
        yield d


def load_outcome(kind: str, write: Callable[[Path], None],
                 rule_files: tuple[str, ...] = ("attitude.yaml",)) -> tuple[UserError | None, Path]:
    """Break one file of a fresh rules copy with ``write`` and load it: the error (or None).

    Any exception that is not a UserError propagates and fails the test: that is the bug class.
    """
    rel, loader = KINDS[kind] if kind in KINDS else (CSV_KINDS[kind], KINDS["policies"][1])
    with rules_copy(rule_files) as d:
        target = d / rel
        write(target)
        try:
            loader(d)
        except UserError as err:
            return err, target
        return None, target


def assert_names_file(err: UserError, target: Path) -> None:
    msg = str(err)
    assert str(target) in msg or str(target.parent) in msg, f"error does not name {target}: {msg}"
    assert "Traceback" not in msg


@functools.cache
def _parsed_text(rel: str) -> str:
    return json.dumps(yaml.safe_load((RULES / rel).read_text(encoding="utf-8")), default=str)


def parsed(kind: str, rel: str | None = None) -> Any:
    """A fresh copy of the bundled file's parsed YAML (dates as ISO strings, as pydantic accepts)."""
    return json.loads(_parsed_text(rel or KINDS[kind][0]))


def dump(data: Any) -> str:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


def paths_of(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (keys / list indices) into a parsed YAML tree, root excluded."""
    out: list[tuple[Any, ...]] = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for k, v in items:
        out.append((*prefix, k))
        out.extend(paths_of(v, (*prefix, k)))
    return out


def get(node: Any, path: tuple[Any, ...]) -> Any:
    for k in path:
        node = node[k]
    return node


def rule_location(kind: str, data: Any, path: tuple[Any, ...]) -> tuple[str, str | None] | None:
    """('rules[i]', rule id) when ``path`` is inside one rule of a rule file."""
    if kind != "rules" or len(path) < 3 or path[0] != "rules":
        return None
    rid = data["rules"][path[1]].get("id")
    return f"rules[{path[1]}]", rid if isinstance(rid, str) else None


# --- strategies ----------------------------------------------------------------------------------

WRONG_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**18, max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True), st.floats(max_value=-1e-6, allow_infinity=False),
    st.text(max_size=12), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(min_size=1, max_size=5), st.integers(), max_size=2),
    st.sampled_from(["2026-13-45", "2026-02-30", "1e999", "-.inf", ".nan", "[", "{a: 1", "*x", "&a b"]),
)
YAML_NOISE = st.text(alphabet=st.sampled_from(list("{}[]:,-?&*!|>'\"%@` \n\t#abc中文0.9")), max_size=80)


# --- whole-file garbage --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [*KINDS, *CSV_KINDS])
@FUZZ
@given(blob=st.one_of(st.binary(max_size=200), YAML_NOISE.map(str.encode), st.text(max_size=60).map(str.encode)))
def test_garbage_bytes_are_config_errors(kind: str, blob: bytes) -> None:
    """Random bytes, YAML punctuation soup or random text: accepted, or an error naming the file."""
    err, target = load_outcome(kind, lambda p: p.write_bytes(blob))
    if err is not None:
        assert_names_file(err, target)


@pytest.mark.parametrize("kind", [*KINDS, *CSV_KINDS])
@FEW
@given(pos=st.integers(min_value=0, max_value=10**6), bad=st.sampled_from([b"\xff", b"\xc3\x28", b"\xe4\xb8", b"\x80"]))
def test_non_utf8_is_a_config_error(kind: str, pos: int, bad: bytes) -> None:
    """A valid file with one invalid UTF-8 sequence spliced in is rejected as 'not UTF-8'."""
    def write(p: Path) -> None:
        raw = p.read_bytes()
        text = raw.decode("utf-8")
        cut = len(text[: pos % (len(text) + 1)].encode("utf-8"))  # on a character boundary
        p.write_bytes(raw[:cut] + bad + raw[cut:])

    err, target = load_outcome(kind, write)
    assert isinstance(err, ConfigError), f"{kind}: non-UTF-8 file accepted"
    assert_names_file(err, target)
    assert "UTF-8" in str(err)


@pytest.mark.parametrize("kind", [*KINDS, *CSV_KINDS])
def test_empty_file_is_a_config_error(kind: str) -> None:
    """An empty (truncated) file is an error, not silently 'no rules / no policies / defaults'."""
    err, target = load_outcome(kind, lambda p: p.write_text("", encoding="utf-8"))
    assert isinstance(err, ConfigError), f"{kind}: empty file accepted"
    assert_names_file(err, target)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("text", ["[" * 1000 + "]" * 1000, "a: 2026-02-30\n", "- 1\n- 2\n", "just text\n",
                                  "? [a]\n: 1\n", "a: !!python/object:os.system x\n"])
def test_fixed_yaml_traps(kind: str, text: str) -> None:
    """YAML that used to escape as RecursionError/ValueError: deep nesting, impossible dates, tags."""
    err, target = load_outcome(kind, lambda p: p.write_text(text, encoding="utf-8"))
    assert isinstance(err, ConfigError), f"{kind}: {text[:20]!r} accepted"
    assert_names_file(err, target)


@pytest.mark.parametrize("kind", ["rules", "profiles"])
def test_folder_named_like_a_config_file(kind: str) -> None:
    """A folder called x.yaml among rule files / profiles is a ConfigError, not IsADirectoryError."""
    def write(p: Path) -> None:
        (p.parent / "zz_folder.yaml").mkdir()

    err, target = load_outcome(kind, write)
    assert isinstance(err, ConfigError)
    assert "zz_folder.yaml" in str(err)


# --- structural mutations of the parsed default ---------------------------------------------------


@st.composite
def mutation(draw: st.DrawFn, kind: str) -> tuple[str, tuple[Any, ...], Any]:
    data = parsed(kind)
    path = draw(st.sampled_from(paths_of(data)))
    op = draw(st.sampled_from(["unknown_key", "wrong_type", "delete", "list_for_mapping"]))
    value = draw(WRONG_VALUES) if op == "wrong_type" else None
    return op, path, value


def apply(data: Any, op: str, path: tuple[Any, ...], value: Any) -> tuple[Any, tuple[Any, ...]]:
    """Apply one mutation; returns the new tree and the path of the changed node."""
    data = copy.deepcopy(data)
    parent, key = get(data, path[:-1]), path[-1]
    if op == "unknown_key":
        # the nearest mapping at or above path gets an unknown key
        while not isinstance(get(data, path), dict):
            path = path[:-1]
        node = get(data, path) if path else data
        node["zz_unknown_key"] = "bogus_value"
        return data, (*path, "zz_unknown_key")
    if op == "wrong_type":
        parent[key] = value
    elif op == "delete":
        del parent[key]
    elif op == "list_for_mapping":
        node = parent[key]
        parent[key] = list(node.values()) if isinstance(node, dict) else [node]
    return data, path


@pytest.mark.parametrize("kind", list(KINDS))
@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_structural_mutations(kind: str, data: st.DataObject) -> None:
    """Unknown keys, wrong types, missing fields, lists for mappings: located errors only.

    Unknown keys must always be rejected and named; inside a rule the error names ``rules[i]``
    and the rule id.
    """
    original = parsed(kind)
    op, path, value = data.draw(mutation(kind))
    broken, changed = apply(original, op, path, value)
    err, target = load_outcome(kind, lambda p: p.write_text(dump(broken), encoding="utf-8"))
    if op == "unknown_key":
        assert err is not None, f"{kind}: unknown key at {changed} accepted"
        assert "zz_unknown_key" in str(err), str(err)
    if op == "list_for_mapping" and isinstance(get(original, path), dict) and "examples" not in path:
        assert err is not None, f"{kind}: list instead of mapping at {path} accepted"
    if err is None:
        return
    assert_names_file(err, target)
    where = rule_location(kind, original, path)
    if where is not None and isinstance(err, ConfigError) and "duplicate" not in str(err):
        index, rid = where
        assert index in str(err), str(err)
        if rid and path[2] != "id":
            assert f"rule {rid}" in str(err), str(err)


KEY_LINE = re.compile(r"^( *)([A-Za-z_]\w*): \S")


@pytest.mark.parametrize("kind", list(KINDS))
@FEW
@given(data=st.data())
def test_duplicate_yaml_keys(kind: str, data: st.DataObject) -> None:
    """A key written twice in one mapping (PyYAML silently keeps the last) is a located error."""
    lines = yaml.safe_dump(parsed(kind), allow_unicode=True, sort_keys=False,
                           default_flow_style=False).splitlines()
    candidates = [i for i, line in enumerate(lines) if KEY_LINE.match(line)]
    i = data.draw(st.sampled_from(candidates))
    key = KEY_LINE.match(lines[i]).group(2)  # type: ignore[union-attr]
    text = "\n".join([*lines[: i + 1], lines[i], *lines[i + 1:]]) + "\n"
    err, target = load_outcome(kind, lambda p: p.write_text(text, encoding="utf-8"))
    assert isinstance(err, ConfigError), f"{kind}: duplicate key '{key}' on line {i + 2} accepted"
    assert_names_file(err, target)
    assert f"duplicate key '{key}'" in str(err) and f"line {i + 2}" in str(err), str(err)


# --- targeted field values ------------------------------------------------------------------------


def rule_file_with(field: str, value: Any, index: int = 0, file: str = "attitude.yaml") -> Callable[[Path], None]:
    def write(p: Path) -> None:
        target = p.parent / file
        data = parsed("rules", file)
        data["rules"][index][field] = value
        target.write_text(dump(data), encoding="utf-8")
    return write


@FUZZ
@given(field=st.sampled_from(["type", "dimension", "severity", "polarity"]),
       value=st.text(max_size=12).filter(lambda s: s not in {"phrase", "regex", "timing", "unanswered",
                                                             "partial_answer", "sequence", "template",
                                                             "attitude", "selling", "responsiveness",
                                                             "product_knowledge", "info", "minor",
                                                             "major", "critical", "+", "-"}))
def test_unknown_type_dimension_severity(field: str, value: str) -> None:
    err, target = load_outcome("rules", rule_file_with(field, value))
    assert isinstance(err, ConfigError)
    assert_names_file(err, target)
    assert "rule ATT-INSULT-001" in str(err) and f"rules[0].{field}" in str(err), str(err)


@FUZZ
@given(field=st.sampled_from(["points"]),
       value=st.one_of(st.floats(max_value=-1e-9), st.just(float("inf")), st.just(float("nan"))))
def test_negative_or_infinite_points(field: str, value: float) -> None:
    err, target = load_outcome("rules", rule_file_with(field, value))
    assert isinstance(err, ConfigError) and "rules[0].points" in str(err), str(err)


BAD_REGEX_ALPHABET = st.sampled_from(list("()[]{}*+?|\\^$.ab中1,-"))


@FUZZ
@given(pattern=st.text(alphabet=BAD_REGEX_ALPHABET, min_size=1, max_size=10))
def test_regex_patterns(pattern: str) -> None:
    """Random patterns in a regex rule: an invalid one names rules[i].patterns and the rule."""
    def write(p: Path) -> None:
        data = parsed("rules")
        data["rules"][1].update(type="regex", patterns=[pattern])
        p.write_text(dump(data), encoding="utf-8")

    rid = parsed("rules")["rules"][1]["id"]
    err, target = load_outcome("rules", write)
    try:
        re.compile(pattern)
        valid = True
    except re.error:
        valid = False
    if not valid:
        assert isinstance(err, ConfigError), f"invalid regex {pattern!r} accepted"
        assert "rules[1].patterns" in str(err) and f"rule {rid}" in str(err), str(err)
    elif err is not None:  # a valid pattern may still break something else: must be located
        assert_names_file(err, target)


@FUZZ
@given(template=st.text(alphabet=st.sampled_from(list("{}0.:!r[]name ab")), max_size=12))
def test_explanation_templates(template: str) -> None:
    """Explanations are format_map'ed per finding: a template that cannot render is a config error."""
    class Fields(dict):  # like the engine: an unknown {field} renders as itself
        def __missing__(self, key: str) -> str:
            return "{" + key + "}"

    err, _ = load_outcome("rules", rule_file_with("explanation", template))
    try:
        template.format_map(Fields(name="n", evidence="e", phrase="p"))
        ok = not re.search(r"\{[^{}]*[.\[:!][^{}]*\}", template.replace("{{", "").replace("}}", ""))
    except (ValueError, KeyError, IndexError, AttributeError, TypeError):
        ok = False
    if not ok:
        assert isinstance(err, ConfigError) and "rules[0].explanation" in str(err), (template, err)


@FEW
@given(day=st.sampled_from(["2026-13-01", "2026-02-30", "2026-00-10", "2026-11-31", "99999-01-01"]),
       key=st.sampled_from(["start", "end"]), quoted=st.booleans())
def test_bad_promotion_dates(day: str, key: str, quoted: bool) -> None:
    def write(p: Path) -> None:
        text = p.read_text(encoding="utf-8")
        value = f'"{day}"' if quoted else day
        p.write_text(re.sub(rf"\b{key}: 2026-\d\d-\d\d", f"{key}: {value}", text, count=1), encoding="utf-8")

    err, target = load_outcome("policies", write)
    assert isinstance(err, ConfigError), f"{key}: {day} accepted"
    assert_names_file(err, target)
    if quoted:
        assert "promotions[0]" in str(err), str(err)


@FEW
@given(weight=st.one_of(st.floats(max_value=-1e-9), st.just(float("inf"))),
       where=st.sampled_from(["dimension", "shop_weights", "shops.yaml"]))
def test_negative_or_infinite_weights(weight: float, where: str) -> None:
    def write(p: Path) -> None:
        if where == "shops.yaml":
            target = p.parent / "shops.yaml"
            data = yaml.safe_load(target.read_text(encoding="utf-8"))
            data["shops"][0]["scorecard_weights"] = {"attitude": weight}
        else:
            target = p
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
            if where == "dimension":
                data["dimensions"]["selling"]["weight"] = weight
            else:
                data["shop_weights"]["tw_meiyan"]["selling"] = weight
        target.write_text(dump(data), encoding="utf-8")

    err, _ = load_outcome("scorecard" if where != "shops.yaml" else "shops", write)
    assert isinstance(err, ConfigError), f"{where}: weight {weight} accepted"
    assert ("shops[0].scorecard_weights" if where == "shops.yaml" else "scorecard.yaml") in str(err)


@FEW
@given(tz=st.sampled_from(["America", "Asia", "", "Mars/Base", "../etc", "/etc/passwd", "UTC\x00"]),
       kind=st.sampled_from(["shops", "profiles"]))
def test_bad_time_zones(tz: str, kind: str) -> None:
    """A folder name like 'America' used to escape ZoneInfo as IsADirectoryError."""
    def write(p: Path) -> None:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
        (data["shops"][0] if kind == "shops" else data)["timezone"] = tz
        p.write_text(dump(data), encoding="utf-8")

    err, _ = load_outcome(kind, write)
    assert isinstance(err, ConfigError) and "timezone" in str(err), str(err)


# --- duplicates --------------------------------------------------------------------------------


@FEW
@given(i=st.integers(min_value=0, max_value=5), across=st.booleans())
def test_duplicate_rule_ids(i: int, across: bool) -> None:
    def write(p: Path) -> None:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
        rule = copy.deepcopy(data["rules"][i])
        target = p.parent / "selling.yaml" if across else p
        other = yaml.safe_load(target.read_text(encoding="utf-8")) if across else data
        other["rules"].append(rule)
        target.write_text(dump(other), encoding="utf-8")

    rid = parsed("rules")["rules"][i]["id"]
    err, _ = load_outcome("rules", write, ("attitude.yaml", "selling.yaml"))
    assert isinstance(err, ConfigError)
    msg = str(err)
    assert "duplicate rule id" in msg and f"rule {rid}" in msg, msg
    assert ("selling.yaml" in msg and "attitude.yaml" in msg) if across else "attitude.yaml" in msg


@FEW
@given(i=st.integers(min_value=0, max_value=2), j=st.integers(min_value=0, max_value=2))
def test_duplicate_shop_ids(i: int, j: int) -> None:
    def write(p: Path) -> None:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
        dup = copy.deepcopy(data["shops"][i])
        dup["name"] = "另一家"
        data["shops"].insert(j, dup)
        p.write_text(dump(data), encoding="utf-8")

    err, _ = load_outcome("shops", write)
    assert isinstance(err, ConfigError) and "duplicate shop_id" in str(err) and ".shop_id" in str(err)


# --- knowledge CSVs ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(CSV_KINDS))
@FUZZ
@given(row=st.lists(st.text(alphabet=st.sampled_from(list('ab中,"|=？-.0123 \n')), max_size=15), max_size=18))
def test_csv_rows(kind: str, row: list[str]) -> None:
    """A random extra row in catalog.csv / faq.csv: accepted, or an error naming file and row."""
    def write(p: Path) -> None:
        with p.open("a", encoding="utf-8", newline="") as f:
            import csv
            csv.writer(f).writerow(row)

    err, target = load_outcome(kind, write)
    if err is not None:
        assert_names_file(err, target)


def test_faq_without_words_is_a_config_error() -> None:
    """Only punctuation questions left scikit-learn's 'empty vocabulary' ValueError escape."""
    err, target = load_outcome("faq", lambda p: p.write_text("问题,答案,关键信息\n？？,！！,\n", encoding="utf-8"))
    assert isinstance(err, ConfigError) and "faq.csv" in str(err), err


XLSX_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"


@pytest.mark.parametrize("cell", ["<c r='A1' t='n'><v>abc</v></c>", "<c r='A1' t='s'><v>99</v></c>",
                                  "<c r='A1' t='d'><v>2026-13-45</v></c>", None])
def test_corrupt_xlsx_catalog(cell: str | None) -> None:
    """openpyxl reads read-only sheets lazily: a bad cell used to raise ValueError/IndexError."""
    import io
    import zipfile

    import openpyxl

    def write(p: Path) -> None:
        p.unlink()
        buf = io.BytesIO()
        wb = openpyxl.Workbook()
        wb.active.append(["sku", "name", "price"])
        wb.active.append(["A1", "x", 10])
        wb.save(buf)
        src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
        sheet = (f"<worksheet xmlns='{XLSX_NS}'><sheetData><row r='1'>{cell}</row></sheetData></worksheet>"
                 if cell else "not xml")
        with zipfile.ZipFile(p.with_suffix(".xlsx"), "w") as z:
            for n in src.namelist():
                z.writestr(n, sheet if n == "xl/worksheets/sheet1.xml" else src.read(n))

    err, target = load_outcome("catalog", write)
    assert isinstance(err, ConfigError) and "catalog.xlsx" in str(err), err


# --- examples -----------------------------------------------------------------------------------


@FEW
@given(seconds=st.integers(min_value=10**12, max_value=10**30))
def test_huge_example_offsets(seconds: int) -> None:
    """'@1e20 客服: ...' used to raise OverflowError out of rules check."""
    rule = parse_rule(parsed("rules")["rules"][0], file="attitude.yaml", index=0)
    with pytest.raises(ExampleError, match="too large"):
        example_messages(rule, ["买家: 在吗", f"@{seconds} 客服: 在的"])


# --- the CLI ------------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "QA_INSPECT_DEBUG"}
    code = "import sys; from qa_inspect.cli import main; sys.argv[0] = 'qa-inspect'; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, timeout=120)


CLI_CASES = [
    ("rules", "attitude.yaml", lambda t: t.replace("severity: critical", "severity: fatal", 1),
     ["attitude.yaml", "rule ATT-INSULT-001", "rules[0].severity"]),
    ("kb", f"knowledge/{SHOP}/policies.yaml", lambda t: t.replace("start: 2026-11-20", "start: 2026-02-30", 1),
     ["policies.yaml", "invalid value"]),
    ("run", "scorecard.yaml", lambda t: t.replace("weight: 0.30", "weight: -1", 1),
     ["scorecard.yaml", "dimensions.product_knowledge.weight"]),
    ("run", "shops.yaml", lambda t: t.replace("timezone: Asia/Shanghai", "timezone: America", 1),
     ["shops.yaml", "shops[0].timezone"]),
    ("run", "models.yaml", lambda t: t + "\nzz_unknown_key: 1\n", ["models.yaml", "zz_unknown_key", "unknown key"]),
    ("run", "import_profiles/taobao_csv.yaml", lambda t: t + "\nformat_typo: csv\n",
     ["taobao_csv.yaml", "format_typo"]),
]


@pytest.mark.parametrize(("command", "rel", "mutate", "expected"), CLI_CASES,
                         ids=[c[1].split("/")[-1] for c in CLI_CASES])
def test_cli_reports_config_errors(tmp_path: Path, command: str, rel: str, mutate: Callable[[str], str],
                                   expected: list[str], sample_logs_dir: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    target = rules / rel
    before = target.read_text(encoding="utf-8")
    after = mutate(before)
    assert after != before, "the mutation did not apply: the bundled file changed"
    target.write_text(after, encoding="utf-8")
    if command == "rules":
        res = _cli("rules", "check", "--rules", str(rules))
    elif command == "kb":
        res = _cli("kb", "check", "--rules", str(rules))
    else:
        res = _cli("run", str(sample_logs_dir), "--out", str(tmp_path / "out"), "--rules", str(rules),
                   "--no-reports", "--quiet")
    assert res.returncode == 1, (res.returncode, res.stderr[-2000:])
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.stderr[-2000:]
    for s in expected:
        assert s in res.stderr, (s, res.stderr[-2000:])
