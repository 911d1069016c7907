"""Prometheus file_sd targets of a `mamql local` run, kept current while the run lives.

`mamql local` calls write_targets each time its process table changes (the processes started, an
actor restarted on a new metrics port). The file is `<run.root>/prometheus-targets/<run>.json`: one
folder for all runs because file_sd globs only a file name, never a folder (deploy/local/prometheus.yml
watches `runs/prometheus-targets/*.json`). Each target carries the labels the recording rules, alerts
and the Grafana dashboard group by: component (replay | learner | actor), process (actor-0, ...), run.

Writes are atomic (temp file + rename), so Prometheus never reads half a file. A finished run's file
would keep its targets listed as down (up == 0) forever, so every write also drops the files of runs
none of whose processes is still alive; `remove_targets` drops a run's own file at its end.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

TARGETS_DIR = "prometheus-targets"


def target_groups(processes: Mapping[str, Mapping[str, Any]], run: str, host: str = "127.0.0.1") -> list[dict]:
    """file_sd target groups from a process table (processes.json: name -> {metrics_port, ...});
    processes without a metrics endpoint (demo collection, one not up yet) are left out."""
    groups = []
    for name, proc in sorted(processes.items()):
        port = proc.get("metrics_port") or 0
        if not port:
            continue
        component = "actor" if name.startswith("actor") else name
        groups.append({"targets": [f"{host}:{port}"], "labels": {"component": component, "process": name, "run": run}})
    return groups


def targets_path(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    return run_dir.parent / TARGETS_DIR / f"{run_dir.name}.json"


def write_atomic(path: Path, groups: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")  # not *.json: file_sd never picks it up
    tmp.write_text(json.dumps(groups, indent=1))
    tmp.replace(path)


def write_targets(processes: Mapping[str, Mapping[str, Any]], run_dir: str | Path, host: str = "127.0.0.1") -> Path:
    """Write the run's targets file and drop those of finished runs beside it; returns its path."""
    path = targets_path(run_dir)
    write_atomic(path, target_groups(processes, Path(run_dir).name, host))
    prune_finished(path.parent, keep=path)
    return path


def remove_targets(run_dir: str | Path) -> None:
    targets_path(run_dir).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def prune_finished(folder: Path, keep: Path) -> list[Path]:
    """Remove the targets files in `folder` whose run (the sibling run directory's processes.json)
    has no live process left, or no longer exists; returns what was removed."""
    removed = []
    for path in folder.glob("*.json"):
        if path == keep:
            continue
        try:
            table = json.loads((folder.parent / path.stem / "processes.json").read_text())
            pids = [int(p["pid"]) for p in table.values()]
        except FileNotFoundError:
            pids = []
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # unreadable: not ours to judge
        if not any(_alive(pid) for pid in pids):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
