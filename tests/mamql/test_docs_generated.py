"""docs/config.md and docs/metrics.md are generated from the code (mamql.docgen) and current; every
config field has a docstring; `mamql config show --explain` prints them; the Grafana dashboards and
Prometheus rules query only metrics that docs/metrics.md lists."""

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mamql import docgen
from mamql.config import Config, to_dict

ROOT = Path(__file__).resolve().parents[2]
CONFIG_MD = ROOT / "docs" / "config.md"
METRICS_MD = ROOT / "docs" / "metrics.md"
SOURCE_FOLDERS = ("actors", "learner", "replay", "envs", "experiments", "protos", "mamql")


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout)


# --------------------------------------------------------------------------- config


def test_every_config_field_has_a_docstring():
    assert docgen.undocumented_fields() == []


def test_sentinel_defaults_say_what_they_mean():
    docs = docgen.field_docs
    from mamql.config import LearnerConfig, ReplayConfig, TableConfig

    assert "< 0" in docs(LearnerConfig)["weight_decay"] and "paper" in docs(LearnerConfig)["weight_decay"]
    assert "Empty" in docs(LearnerConfig)["hidden"]
    assert "0 (the default) = no ratio limit" in docs(TableConfig)["samples_per_insert"]
    assert "Empty" in docs(ReplayConfig)["checkpoint_dir"]


def test_config_md_is_current():
    assert CONFIG_MD.read_text() == docgen.config_markdown(), "run `python -m mamql.docgen config --write`"


def test_config_md_lists_every_field_and_its_default():
    text = CONFIG_MD.read_text()
    for section, values in to_dict(Config()).items():
        for key in values:
            assert f"| `{section}.{key}` |" in text
    assert "| `learner.weight_decay` | float | `-1.0` |" in text
    assert "    - {name: online, capacity: 20000, min_size_to_sample: 2000" in text  # the default tables, as YAML


def test_default_tables_block_loads_back_to_the_defaults(tmp_path):
    """The YAML block of default tables in docs/config.md, as a config file, gives the built-in tables."""
    from mamql.config import load_config

    block = re.search(r"```yaml\n(replay:\n.*?)```", CONFIG_MD.read_text(), re.S).group(1)
    path = tmp_path / "tables.yaml"
    path.write_text(block)
    assert load_config(path).replay.tables == Config().replay.tables


def test_config_show_explain_prints_values_types_and_docs():
    proc = run_cli("-m", "mamql.cli", "config", "show", "--explain", "--set", "learner.lr=0.01",
                   "--set", "replay.tables=[{name: demo, capacity: 3}]", timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for section, values in to_dict(Config()).items():
        for key in values:
            assert f"  {section}.{key} = " in out, f"{section}.{key} missing"
    assert "learner.lr = 0.01  (float; default 0.001)" in out
    assert "learner.weight_decay = -1.0  (float)" in out and "paper's value for the env" in out
    assert "replay.tables[].capacity = demo: 3  (int)" in out
    # explain needs no torch (config show stays quick)
    probe = run_cli("-c", "import sys; from mamql.docgen import explain_config; from mamql.config import Config; "
                          "explain_config(Config()); print('torch' in sys.modules)", timeout=120)
    assert probe.stdout.strip() == "False", probe.stderr


def test_check_mode_fails_on_a_stale_file(tmp_path):
    stale = tmp_path / "config.md"
    stale.write_text(CONFIG_MD.read_text().replace("learner.lr", "learner.learning_rate"))
    proc = run_cli("-m", "mamql.docgen", "config", "--check", "--out", str(stale), timeout=120)
    assert proc.returncode == 1 and "stale" in proc.stderr and "docgen config --write" in proc.stderr
    fresh = tmp_path / "fresh.md"
    assert run_cli("-m", "mamql.docgen", "config", "--write", "--out", str(fresh), timeout=120).returncode == 0
    assert fresh.read_text() == CONFIG_MD.read_text()


# --------------------------------------------------------------------------- metrics


@pytest.fixture(scope="module")
def generated_metrics_md():
    """The metrics reference as `python -m mamql.docgen metrics` prints it (a fresh interpreter: it builds
    a replay, a learner and an actor, which set torch's thread count)."""
    proc = run_cli("-m", "mamql.docgen", "metrics")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def listed_series(text: str) -> set[str]:
    """The names in the first column (series) of the tables in docs/metrics.md."""
    names = set()
    for line in text.splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([A-Za-z_:][A-Za-z0-9_:]*)`", line.split(" | ")[0]))
    return names


def test_metrics_md_is_current(generated_metrics_md):
    assert METRICS_MD.read_text() == generated_metrics_md, "run `python -m mamql.docgen metrics --write`"


def test_metrics_md_lists_each_process_metrics_with_type_and_labels():
    text = METRICS_MD.read_text()
    series = listed_series(text)
    for name in ("mamql_replay_inserted_transitions_total", "mamql_learner_updates_total",
                 "mamql_actor_env_steps_total", "mamql_learner_policy_lag_bucket", "process_cpu_seconds_total"):
        assert name in series
    assert "| `mamql_replay_table_size` | gauge | `table` |" in text
    assert "| `mamql_learner_loss` | gauge | `agent`, `term` |" in text


def test_metric_names_in_the_source_are_listed():
    """Every string literal that is a whole metric name (a metric defined, or a sample read, e.g. by the
    status line) is in docs/metrics.md: catches a metric that the generator's processes did not build."""
    series = listed_series(METRICS_MD.read_text())
    families = {re.sub(r"_(total|bucket|sum|count)$", "", s) for s in series}
    unlisted = []
    for folder in SOURCE_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                        and re.fullmatch(r"mamql_[a-z0-9_]+", node.value) \
                        and node.value not in series and node.value not in families:
                    unlisted.append(f"{path.relative_to(ROOT)}: {node.value}")
    assert not unlisted, unlisted


PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                   "offset", "inf", "nan"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects: identifiers that are not functions, keywords, label
    names (in {...}, by (...), ...), ranges or Grafana variables."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\$\{[^}]*\}|\$\w+", "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\boffset\s+\w+", "", expr)
    expr = re.sub(r"\b\d+(\.\d+)?([eE][+-]?\d+)?[smhdwy]?\b", "", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        if expr[match.end():].lstrip().startswith("(") or match.group(0).lower() in PROMQL_KEYWORDS:
            continue
        names.add(match.group(0))
    return names


def test_promql_name_extraction():
    expr = ('histogram_quantile(0.95, sum by (le) (rate(a_seconds_bucket{table="x|y"}[$__rate_interval]))) '
            '/ on (instance) group_left max(b_total offset 5m) > bool 1e3 and count(up{component="actor"} == 1)')
    assert promql_metric_names(expr) == {"a_seconds_bucket", "b_total", "up"}


def dashboard_exprs() -> list[tuple[str, str]]:
    found = []

    def walk(node, where):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "expr" and isinstance(value, str):
                    found.append((where, value))
                else:
                    walk(value, where)
        elif isinstance(node, list):
            for value in node:
                walk(value, where)

    for path in sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json")):
        walk(json.loads(path.read_text()), path.name)
    return found


def rule_files() -> list[Path]:
    files = sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"))
    return [p for p in files if "groups" in (yaml.safe_load(p.read_text()) or {})]  # not promtool's test files


def test_dashboards_and_rules_query_only_listed_metrics():
    series = listed_series(METRICS_MD.read_text())
    recorded = {rule["record"] for p in rule_files() for group in yaml.safe_load(p.read_text())["groups"]
                for rule in group["rules"] if "record" in rule}
    exprs = dashboard_exprs()
    assert exprs, "no dashboard queries found"
    exprs += [(p.name, rule["expr"]) for p in rule_files() for group in yaml.safe_load(p.read_text())["groups"]
              for rule in group["rules"]]
    unknown = [f"{where}: {name} in {expr!r}" for where, expr in exprs for name in sorted(promql_metric_names(expr))
               if name not in series and name not in recorded and name != "up"]
    assert not unknown, "\n".join(unknown)
