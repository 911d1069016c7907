"""Watching a local run: the Prometheus targets file `mamql local` keeps current (mamql/targets.py), a
real Prometheus started with deploy/local/prometheus.yml scraping a real run, and the compose file
and Grafana provisioning it mounts (Grafana and Docker are not run here: their files are checked)."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from helpers import free_port, wait_until
from mamql.targets import prune_finished, target_groups, targets_path, write_targets
from system_tools import ensure_debian_packages

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ROOT / "deploy" / "local"
GRAFANA = ROOT / "deploy" / "grafana"


def test_targets_file_lists_metrics_endpoints_with_labels(tmp_path):
    table = {"collect": {"pid": 1, "metrics_port": None}, "replay": {"pid": 2, "metrics_port": 9100},
             "learner": {"pid": 3, "metrics_port": 9200}, "actor-0": {"pid": 4, "metrics_port": 9300},
             "actor-1": {"pid": 5, "metrics_port": 0}}  # a restarted actor not up yet: left out
    path = write_targets(table, tmp_path / "runs" / "r1")
    assert path == tmp_path / "runs" / "prometheus-targets" / "r1.json"
    groups = json.loads(path.read_text())
    assert [(g["targets"], g["labels"]["component"], g["labels"]["process"]) for g in groups] == [
        (["127.0.0.1:9300"], "actor", "actor-0"), (["127.0.0.1:9200"], "learner", "learner"),
        (["127.0.0.1:9100"], "replay", "replay")]
    assert {g["labels"]["run"] for g in groups} == {"r1"}
    assert [p.name for p in path.parent.iterdir()] == ["r1.json"]  # the temp file was renamed away
    assert target_groups(table, "r1", host="node3") [0]["targets"] == ["node3:9300"]


def test_a_write_drops_the_targets_of_finished_runs(tmp_path):
    runs = tmp_path / "runs"
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    for name, pid in (("finished", done.pid), ("live", os.getpid())):
        (runs / name).mkdir(parents=True)
        (runs / name / "processes.json").write_text(json.dumps({"replay": {"pid": pid, "metrics_port": 1}}))
        write_targets({"replay": {"pid": pid, "metrics_port": 1}}, runs / name)
    (runs / "prometheus-targets" / "deleted.json").write_text("[]")  # its run directory is gone
    assert not targets_path(runs / "finished").exists()  # dropped when "live" was written
    assert targets_path(runs / "live").exists()
    assert prune_finished(runs / "prometheus-targets", keep=targets_path(runs / "live")) == [
        runs / "prometheus-targets" / "deleted.json"]


# --------------------------------------------------------------------------- compose and Grafana files

def _default(value: str) -> str:
    """A compose value with its ${VAR:-default} references replaced by the defaults."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def _mounts(service: dict) -> dict[str, str]:
    """container path -> host path (bind mounts relative to the compose file; named volumes as 'volume:NAME')."""
    out = {}
    for spec in service["volumes"]:
        source, target = _default(spec).split(":")[:2]
        out[target] = str((LOCAL / source).resolve()) if source.startswith((".", "/")) else f"volume:{source}"
    return out


def _host_path(mounts: dict[str, str], container_path: str) -> Path:
    for target, source in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
        if container_path == target or container_path.startswith(target + "/"):
            assert not source.startswith("volume:"), container_path
            return Path(source + container_path[len(target):])
    raise AssertionError(f"{container_path} is not mounted")


def test_compose_mounts_the_shipped_config_dashboard_and_provisioning():
    compose = yaml.safe_load((LOCAL / "compose.yaml").read_text())
    prom, grafana = compose["services"]["prometheus"], compose["services"]["grafana"]
    assert prom["network_mode"] == grafana["network_mode"] == "host"  # runs' /metrics listen on 127.0.0.1
    pm = _mounts(prom)
    flags = dict(arg.lstrip("-").split("=", 1) for arg in prom["command"])
    assert _host_path(pm, flags["config.file"]) == LOCAL / "prometheus.yml"
    # the time series go to a named volume, never into the datasets' data/ folder
    assert pm[flags["storage.tsdb.path"]] == "volume:prometheus-data"
    assert "prometheus-data" in compose["volumes"]
    assert pm["/mamql/runs"] == str(ROOT / "runs")  # where prometheus.yml's ../../runs points in the container
    gm = _mounts(grafana)
    provisioning = _host_path(gm, "/etc/grafana/provisioning")
    assert provisioning == GRAFANA / "provisioning"
    providers = yaml.safe_load((provisioning / "dashboards" / "mamql.yml").read_text())["providers"]
    dashboards = _host_path(gm, providers[0]["options"]["path"])
    assert (dashboards / "mamql.json").is_file()
    assert json.loads((dashboards / "mamql.json").read_text())["uid"] == "mamql-overview"
    env = grafana["environment"]
    assert _host_path(gm, env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]) == dashboards / "mamql.json"
    assert _default(env["MAMQL_PROMETHEUS_URL"]) == "http://127.0.0.1:9090"
    assert env["MAMQL_PROMETHEUS_URL"].startswith("${MAMQL_PROMETHEUS_URL:-")  # the user's value wins


def test_grafana_datasource_url_comes_from_the_environment():
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (ds,) = datasources["datasources"]
    assert ds["type"] == "prometheus" and ds["isDefault"]
    assert ds["url"] == "${MAMQL_PROMETHEUS_URL}"  # Grafana expands ${VAR} in provisioning values
    env = {**os.environ, "MAMQL_PROMETHEUS_URL": "http://prom.example:9091"}
    expanded = subprocess.run(["sh", "-c", f'echo "{ds["url"]}"'], env=env, capture_output=True, text=True)
    assert expanded.stdout.strip() == "http://prom.example:9091"


def test_local_prometheus_config_watches_the_targets_folder():
    config = yaml.safe_load((LOCAL / "prometheus.yml").read_text())
    (pattern,) = config["scrape_configs"][0]["file_sd_configs"][0]["files"]
    assert (LOCAL / pattern).resolve().parent == (ROOT / "runs" / "prometheus-targets").resolve()
    for rules in config["rule_files"]:
        assert (LOCAL / rules).is_file(), rules


# --------------------------------------------------------------------------- a real Prometheus, a real run

FAST = ["--set", "learner.hidden=[32]", "--set", "learner.log_every=5", "--set", "learner.batch_size=32", "--set", "weights.publish_every=2",
        "--set", "learner.checkpoint_every=1000", "--set", "actor.num_envs=2", "--set", "actor.send_batch_size=32",
        "--set", "replay.tables=[{name: online, capacity: 5000, min_size_to_sample: 64, samples_per_insert: 2.0, "
                 "error_buffer: 4000.0}]"]


def _query(base: str, expr: str) -> list:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return json.loads(reply.read())["data"]["result"]
    except (urllib.error.URLError, ConnectionError, ValueError, KeyError):  # not up yet
        return []


def _stop(proc: subprocess.Popen, timeout: float) -> int:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=10)


@pytest.mark.cluster
def test_real_prometheus_with_the_local_config_scrapes_a_local_run(tmp_path):
    tools = ensure_debian_packages(["prometheus"], ["prometheus", "promtool"])
    # the repository's layout: deploy/local/prometheus.yml finds ../prometheus/rules and ../../runs
    for part in ("local", "prometheus"):
        shutil.copytree(ROOT / "deploy" / part, tmp_path / "deploy" / part)
    config = tmp_path / "deploy" / "local" / "prometheus.yml"
    check = subprocess.run([tools["promtool"], "check", "config", str(config)], capture_output=True, text=True,
                           timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    runs = tmp_path / "runs"
    local_log = (tmp_path / "local.out").open("w")
    local = subprocess.Popen(
        [sys.executable, "-m", "mamql.cli", "local", "--env", "gems", "--actors", "1", "--steps", "0",
         "--expert-transitions", "500", "--run-name", "watched", "--status-every", "2",
         "--set", f"run.root={runs}", *FAST], stdout=local_log, stderr=subprocess.STDOUT, cwd=tmp_path)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    prom = subprocess.Popen(
        [tools["prometheus"], f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=(tmp_path / "prometheus.log").open("w"), stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        # Prometheus starts before the run has written its targets: file_sd picks the file up when it appears
        wait_until(lambda: (runs / "prometheus-targets" / "watched.json").exists(), 300,
                   "mamql local to write its targets file", [local, prom], interval=1)
        up = 'up{job="mamql", run="watched"} == 1'
        scraped = wait_until(lambda: {r["metric"]["component"] for r in _query(base, up)} >= {"replay", "learner", "actor"}
                             and _query(base, up), 120, "replay, learner and actor targets up", [local, prom], interval=1)
        assert sorted(r["metric"]["process"] for r in scraped) == ["actor-0", "learner", "replay"]
        wait_until(lambda: _query(base, 'mamql_actor_env_steps_total{run="watched"} > 0'), 120,
                   "the actor's env steps scraped", [local, prom], interval=1)
        # the distributed learner's metrics records also go to TensorBoard
        wait_until(lambda: (runs / "watched" / "metrics.jsonl").exists()
                   and (runs / "watched" / "metrics.jsonl").read_text().strip(), 300,
                   "the learner's first metrics record", [local, prom], interval=1)
    finally:
        _stop(prom, 30)
        code = _stop(local, 180)
        local_log.close()
    assert code == 0, (tmp_path / "local.out").read_text()[-3000:]
    assert not (tmp_path / "data").exists()  # Prometheus' storage went where it was told
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(runs / "watched" / "tensorboard"))
    events.Reload()
    assert {"losses/loss/agent_0", "losses/loss/agent_1", "weight_version"} <= set(events.Tags()["scalars"])
