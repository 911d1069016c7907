"""Prometheus rules/config (promtool), the Grafana dashboard as code, and a real Prometheus scraping a
real `mamql local` run: rates > 0, recording rules evaluate, every dashboard query runs."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from helpers import free_port
from system_tools import ensure_debian_packages, find

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "mamql.json"
PROMQL_WORDS = {"sum", "by", "rate", "count", "max", "min", "avg", "histogram_quantile", "le", "and", "on",
                "without", "or", "unless", "bool", "ignoring", "group_left", "group_right", "offset"}


def exported_metric_names() -> set[str]:
    """Series names the code exports, from its metric declarations (counters get _total, histograms
    _bucket/_sum/_count), plus the standard process_* and Prometheus's own `up`."""
    names = {"up", "process_cpu_seconds_total", "process_resident_memory_bytes"}
    decl = re.compile(r"\b(Counter|Gauge|Histogram|counter)\(\s*\"(mamql_\w+)\"", re.S)
    for folder in ("mamql", "replay", "learner", "actors", "envs"):
        for path in (ROOT / folder).rglob("*.py"):
            for kind, name in decl.findall(path.read_text()):
                if kind in ("Counter", "counter"):
                    names.add(name + "_total")
                elif kind == "Histogram":
                    names.update(name + s for s in ("_bucket", "_sum", "_count"))
                else:
                    names.add(name)
    return names


def dashboard_exprs() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    expr = re.sub(r"\{[^}]*\}", "", re.sub(r'"[^"]*"', "", expr))  # drop label matchers and strings
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # and range selectors
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    by_labels = set(re.findall(r"\b(?:by|on|without)\s*\(([^)]*)\)", expr))
    labels = {w.strip() for group in by_labels for w in group.split(",")}
    return {w for w in words - PROMQL_WORDS - labels if not w.startswith("$")}


def test_dashboard_is_generated_and_fresh():
    proc = subprocess.run([sys.executable, str(GRAFANA / "generate.py"), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    dash = json.loads(DASHBOARD.read_text())
    titles = " | ".join(p["title"] for p in dash["panels"])
    for needed in ("Env FPS per actor", "Env FPS (total)", "Replay insert / sample", "Replay fill", "updates/s",
                   "Loss per agent", "Policy lag", "Weight-push latency", "sample wait", "CPU", "memory"):
        assert needed in titles, needed
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    provisioning = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "mamql.yml").read_text())
    assert provisioning["providers"][0]["type"] == "file"


def test_dashboard_queries_name_only_exported_metrics():
    exported = exported_metric_names()
    assert {"mamql_actor_env_steps_total", "mamql_replay_inserted_transitions_total", "mamql_learner_updates_total",
            "mamql_learner_policy_lag_bucket", "mamql_weights_apply_latency_seconds_bucket"} <= exported
    used = set()
    for title, expr in dashboard_exprs():
        names = metric_names(expr)
        assert names, (title, expr)
        assert names <= exported, f"panel {title!r} uses unknown metrics {names - exported}"
        used |= names
    assert len(used) >= 15


def test_rules_name_only_exported_metrics():
    exported = exported_metric_names()
    recorded = set()
    for name in ("recording.yml", "alerts.yml"):
        for group in yaml.safe_load((PROM / "rules" / name).read_text())["groups"]:
            for rule in group["rules"]:
                names = metric_names(rule["expr"])
                assert names <= exported | recorded, (rule, names - exported - recorded)
                if "record" in rule:
                    recorded.add(rule["record"])
    alerts = {r["alert"] for g in yaml.safe_load((PROM / "rules" / "alerts.yml").read_text())["groups"]
              for r in g["rules"] if "alert" in r}
    assert {"MamqlActorDown", "MamqlReplayFullNotSampled", "MamqlLearnerStalled", "MamqlPolicyLagHigh"} <= alerts


def test_targets_from_local(tmp_path):
    processes = {"collect": {"pid": 1, "metrics_port": 0}, "replay": {"pid": 2, "metrics_port": 9100},
                 "learner": {"pid": 3, "metrics_port": 9200}, "actor-0": {"pid": 4, "metrics_port": 9300}}
    run = tmp_path / "r1"
    run.mkdir()
    (run / "processes.json").write_text(json.dumps(processes))
    out = tmp_path / "t.json"
    subprocess.run([sys.executable, str(PROM / "targets_from_local.py"), str(run / "processes.json"), str(out)],
                   check=True)
    groups = json.loads(out.read_text())
    assert [(g["targets"], g["labels"]["component"]) for g in groups] == [
        (["127.0.0.1:9300"], "actor"), (["127.0.0.1:9200"], "learner"), (["127.0.0.1:9100"], "replay")]
    assert all(g["labels"]["run"] == "r1" for g in groups)


@pytest.fixture
def promtool():
    return ensure_debian_packages(["prometheus"], ["promtool", "prometheus"])["promtool"]


@pytest.mark.cluster
def test_promtool_config_rules_and_rule_tests(promtool):
    for args in (["check", "config", str(PROM / "prometheus.yml")],
                 ["check", "rules", str(PROM / "rules" / "recording.yml"), str(PROM / "rules" / "alerts.yml")],
                 ["test", "rules", str(PROM / "rules" / "tests.yml")]):
        proc = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"promtool {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    proc = subprocess.run([promtool, "check", "config", str(PROM / "prometheus-kubernetes.yml")],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        # Debian's build leaves out Kubernetes service discovery: then only that may be what it rejects
        assert "field kubernetes_sd_configs not found" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


@pytest.mark.cluster
def test_promtool_rule_tests_can_fail(promtool, tmp_path):
    """The rule tests check real numbers: a wrong expectation makes promtool fail."""
    rules = tmp_path / "rules"
    shutil.copytree(PROM / "rules", rules)
    text = (rules / "tests.yml").read_text()
    (rules / "tests.yml").write_text(text.replace("value: 30", "value: 31", 1))
    proc = subprocess.run([promtool, "test", "rules", str(rules / "tests.yml")], capture_output=True, timeout=60)
    assert proc.returncode != 0


# --------------------------------------------------------------------------- real Prometheus + mamql local

FAST = [
    "--set", "learner.hidden=[32]", "--set", "learner.batch_size=32", "--set", "weights.publish_every=2",
    "--set", "learner.log_every=5", "--set", "learner.checkpoint_every=1000", "--set", "actor.num_envs=2",
    "--set", "actor.send_batch_size=32",
    "--set", "replay.tables=[{name: online, capacity: 5000, min_size_to_sample: 64, samples_per_insert: 2.0, "
             "error_buffer: 4000.0}]",
]


def query(base: str, expr: str) -> dict:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:  # 400 with an error body for bad PromQL
        return json.loads(exc.read())
    except (urllib.error.URLError, ConnectionError):  # not listening yet
        return {}


def value(base: str, expr: str) -> float:
    result = query(base, expr).get("data", {}).get("result", [])
    return sum(float(r["value"][1]) for r in result) if result else 0.0


def wait_for(predicate, timeout, what, procs=()):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for p in procs:
            assert p.poll() is None, f"{p.args[:4]} exited early ({p.returncode}) while waiting for {what}"
        result = predicate()
        if result:
            return result
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def stop(proc, timeout=120):
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        return proc.wait(timeout=10)


@pytest.mark.cluster
def test_real_prometheus_scrapes_local_run(promtool, tmp_path):
    prometheus = find("prometheus")
    local_out = (tmp_path / "local.out").open("w")
    local = subprocess.Popen(
        [sys.executable, "-m", "mamql.cli", "local", "--env", "gems", "--actors", "2", "--steps", "0",
         "--expert-transitions", "500", "--run-name", "prom", "--status-every", "2",
         "--set", f"run.root={tmp_path}", *FAST], stdout=local_out, stderr=subprocess.STDOUT, cwd=tmp_path)
    prom = None
    try:
        table = tmp_path / "prom" / "processes.json"
        wait_for(table.exists, 180, "mamql local to start its processes", [local])
        conf_dir = tmp_path / "prometheus"
        shutil.copytree(PROM, conf_dir)
        (conf_dir / "targets").mkdir(exist_ok=True)
        subprocess.run([sys.executable, str(conf_dir / "targets_from_local.py"), str(table),
                        str(conf_dir / "targets" / "local.json")], check=True)
        config = yaml.safe_load((conf_dir / "prometheus.yml").read_text())
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        config["scrape_configs"][0]["file_sd_configs"][0]["refresh_interval"] = "1s"
        (conf_dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        prom = subprocess.Popen(
            [prometheus, f"--config.file={conf_dir / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=(tmp_path / "prometheus.log").open("w"), stderr=subprocess.STDOUT, cwd=conf_dir)
        wait_for(lambda: query(base, "up").get("status") == "success", 60, "prometheus to answer", [prom])
        wait_for(lambda: value(base, 'count(up{component=~"actor|replay|learner"} == 1)') == 4, 60,
                 "all 4 targets up", [prom, local])
        wait_for(lambda: value(base, 'sum(rate(mamql_replay_inserted_transitions_total{table="online"}[10s]))') > 0,
                 120, "replay insert rate > 0", [prom, local])
        wait_for(lambda: value(base, "sum(rate(mamql_learner_updates_total[10s]))") > 0, 180,
                 "learner update rate > 0", [prom, local])
        wait_for(lambda: value(base, "sum(rate(mamql_actor_env_steps_total[10s]))") > 0, 60, "env FPS > 0")
        # recording rules (1m windows) have evaluated to positive numbers
        for rule in ("mamql:env_steps:rate1m", "mamql:replay_inserted_transitions:rate1m",
                     "mamql:learner_updates:rate1m"):
            wait_for(lambda: value(base, rule) > 0, 60, f"recording rule {rule} > 0", [prom, local])
        wait_for(lambda: value(base, "mamql:actors_up:count") == 2, 30, "2 actors up (recorded)")
        wait_for(lambda: query(base, "mamql:learner_policy_lag:p95_5m")["data"]["result"], 60,
                 "the policy-lag p95 rule to evaluate")
        wait_for(lambda: 0 < value(base, 'mamql:replay_table_fill:ratio{table="online"}') <= 1, 30, "fill ratio")
        rules = json.loads(urllib.request.urlopen(f"{base}/api/v1/rules", timeout=5).read())["data"]["groups"]
        unhealthy = [r["name"] for g in rules for r in g["rules"] if r.get("health") != "ok"]
        assert not unhealthy, unhealthy
        # every dashboard query parses and runs; the names it uses are really served
        served = set(json.loads(urllib.request.urlopen(f"{base}/api/v1/label/__name__/values", timeout=5)
                                .read())["data"])
        with_data = 0
        for title, expr in dashboard_exprs():
            reply = query(base, expr.replace("$__rate_interval", "15s"))
            assert reply["status"] == "success", (title, expr, reply)
            with_data += bool(reply["data"]["result"])
            missing = metric_names(expr) - served - {"up"}
            # GPU memory is exported only by a CUDA learner; every other name must be scraped for real
            assert missing <= {"mamql_learner_gpu_memory_bytes"}, (title, missing)
        assert with_data >= len(dashboard_exprs()) - 3
    finally:
        if prom is not None:
            stop(prom, 30)
        code = stop(local, 180)
        local_out.close()
    assert code == 0, (tmp_path / "local.out").read_text()[-3000:]
