#!/usr/bin/env python3
"""Generate the mamql Grafana dashboard (dashboards/mamql.json) from this file: dashboards as code.

    python deploy/grafana/generate.py          # rewrite dashboards/mamql.json
    python deploy/grafana/generate.py --check  # exit 1 if the committed JSON is stale

Plain dicts, no external library. Every panel's PromQL uses only metrics the services export
(tests/deploy checks that) and the `component` label the scrape configs attach.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards" / "mamql.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
W = 24  # Grafana grid width


def panel(title: str, targets: list[tuple[str, str]], unit: str = "short", kind: str = "timeseries",
          width: int = 12, description: str = "", stacked: bool = False) -> dict:
    defaults: dict = {"unit": unit}
    if stacked:  # areas stacked to the whole: the phases of one loop add up to 100 %
        defaults["custom"] = {"stacking": {"mode": "normal", "group": "A"}, "fillOpacity": 60, "lineWidth": 1}
        if unit == "percentunit":
            defaults["max"] = 1
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(targets)
        ],
        "gridPos": {"w": width, "h": 8},
    }


def row(title: str) -> dict:
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "gridPos": {"w": W, "h": 1}}


R = "[$__rate_interval]"


def phase_share(family: str) -> str:
    """Each phase's share of all phases' time in a family, summed over the processes exporting it."""
    return f"sum by (phase) (rate({family}{R})) / on() group_left sum(rate({family}{R}))"


PANELS = [
    row("Throughput"),
    panel("Env FPS (total)", [(f"sum(rate(mamql_actor_env_steps_total{R}))", "total")], "short", "stat", 6,
          "Environment transitions per second, all actors"),
    panel("Learner updates/s", [(f"sum(rate(mamql_learner_updates_total{R}))", "updates/s")], "short", "stat", 6),
    panel("Actors up", [('count(up{component="actor"} == 1)', "actors")], "short", "stat", 6),
    panel("Weight version", [("max(mamql_learner_weight_version)", "learner"),
                             ("min(mamql_actor_weight_version)", "slowest actor")], "short", "stat", 6),
    panel("Env FPS per actor", [(f"sum by (instance) (rate(mamql_actor_env_steps_total{R}))", "{{instance}}"),
                                (f"sum(rate(mamql_actor_env_steps_total{R}))", "total")], "short"),
    panel("Learner updates/s", [(f"sum(rate(mamql_learner_updates_total{R}))", "updates/s"),
                                (f"sum(rate(mamql_learner_online_transitions_consumed_total{R}))", "online transitions/s")],
          "short"),
    row("Replay"),
    panel("Replay insert / sample rate", [
        (f"sum by (table) (rate(mamql_replay_inserted_transitions_total{R}))", "insert {{table}}"),
        (f"sum by (table) (rate(mamql_replay_sampled_transitions_total{R}))", "sample {{table}}"),
    ], "short", width=8),
    panel("Replay fill", [("sum by (table) (mamql_replay_table_size) / sum by (table) (mamql_replay_table_capacity)",
                           "{{table}}")], "percentunit", width=8),
    panel("Replay latency p95", [
        (f"histogram_quantile(0.95, sum by (le) (rate(mamql_replay_insert_latency_seconds_bucket{R})))", "insert"),
        (f"histogram_quantile(0.95, sum by (le) (rate(mamql_replay_sample_latency_seconds_bucket{R})))", "sample"),
    ], "s", width=8),
    panel("Actor send queue depth", [("sum by (instance) (mamql_replay_writer_queue_depth)", "{{instance}}")],
          "short", width=12),
    panel("Actor blocked on replay", [(f"sum by (instance) (rate(mamql_actor_send_blocked_seconds_total{R}))",
                                       "{{instance}}")], "percentunit", width=12),
    row("Time by phase (where is the bottleneck?)"),
    panel("Actor time by phase", [(phase_share("mamql_actor_phase_seconds_total"), "{{phase}}")], "percentunit",
          width=8, stacked=True,
          description="Share of the actors' loop time: act (policy forward), env_step, send_wait (back-pressure "
                      "from replay: the rate limiter or a slow replay), weight_apply, other. High send_wait: "
                      "learner- or replay-bound; high env_step: env-bound."),
    panel("Learner time by phase", [(phase_share("mamql_learner_phase_seconds_total"), "{{phase}}")], "percentunit",
          width=8, stacked=True,
          description="Share of the learner loop's time: sample_wait (no online batch ready: actor-bound), "
                      "host_to_device, update, publish, other. On CUDA, GPU time shows where the host next "
                      "waits for it (update, publish, or other on the steps that log losses)."),
    panel("Replay time by phase", [(f"sum by (phase) (rate(mamql_replay_phase_seconds_total{R}))", "{{phase}}")],
          "short", width=8, stacked=True,
          description="Seconds per second of replay RPC time, summed over concurrent calls: insert and sample "
                      "work, and insert_blocked / sample_blocked waits on the rate limiter. Inserts mostly "
                      "blocked: actors are held back for the learner (samples_per_insert)."),
    row("Learning"),
    panel("Loss per agent", [("sum by (agent, term) (mamql_learner_loss)", "{{agent}} {{term}}")], "short"),
    panel("Episode return per agent", [("avg by (agent) (mamql_actor_last_episode_return)", "{{agent}}")], "short"),
    panel("Policy lag (versions)", [
        (f"histogram_quantile(0.5, sum by (le) (rate(mamql_learner_policy_lag_bucket{R})))", "p50"),
        (f"histogram_quantile(0.95, sum by (le) (rate(mamql_learner_policy_lag_bucket{R})))", "p95"),
    ], "short", width=8),
    panel("Weight-push latency (publish → applied on actor)", [
        (f"histogram_quantile(0.5, sum by (le) (rate(mamql_weights_apply_latency_seconds_bucket{R})))", "p50"),
        (f"histogram_quantile(0.95, sum by (le) (rate(mamql_weights_apply_latency_seconds_bucket{R})))", "p95"),
    ], "s", width=8),
    panel("Learner sample wait / update time", [
        (f"histogram_quantile(0.95, sum by (le) (rate(mamql_learner_sample_wait_seconds_bucket{R})))", "sample wait p95"),
        (f"histogram_quantile(0.95, sum by (le) (rate(mamql_learner_update_seconds_bucket{R})))", "update p95"),
    ], "s", width=8),
    row("Processes"),
    panel("CPU (cores)", [(f"sum by (component, instance) (rate(process_cpu_seconds_total{R}))",
                           "{{component}} {{instance}}")], "short", width=8),
    panel("Resident memory", [("sum by (component, instance) (process_resident_memory_bytes)",
                               "{{component}} {{instance}}")], "bytes", width=8),
    panel("Learner GPU memory", [("max by (instance) (mamql_learner_gpu_memory_bytes)", "{{instance}}")],
          "bytes", width=8),
]


def layout(panels: list[dict]) -> list[dict]:
    """Assign ids and grid positions left to right, top to bottom."""
    x = y = row_h = 0
    out = []
    for i, p in enumerate(panels, start=1):
        pos = dict(p["gridPos"])
        if p["type"] == "row" or x + pos["w"] > W:
            x, y, row_h = 0, y + row_h, 0
        pos.update(x=x, y=y)
        x, row_h = x + pos["w"], max(row_h, pos["h"])
        if p["type"] == "row":
            x, y, row_h = 0, y + pos["h"], 0
        out.append({**p, "id": i, "gridPos": pos})
    return out


def dashboard() -> dict:
    return {
        "uid": "mamql-overview",
        "title": "mamql: actors, replay, learner",
        "tags": ["mamql"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "templating": {"list": [{
            "name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0,
        }]},
        "annotations": {"list": []},
        "panels": layout(PANELS),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if argv == ["--check"]:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is stale: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
