#!/usr/bin/env python3
"""Write a Prometheus file_sd target file from a `mamql local` run's processes.json.

    python deploy/prometheus/targets_from_local.py runs/<name>/processes.json deploy/prometheus/targets/local.json

Each target gets `component` (replay | learner | actor), `process` (actor-0, ...) and `run` labels, the
labels the recording rules, alerts and the Grafana dashboard group by.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def targets(processes: dict, run: str, host: str = "127.0.0.1") -> list[dict]:
    out = []
    for name, proc in sorted(processes.items()):
        port = proc.get("metrics_port") or 0
        if not port:
            continue  # e.g. demo collection: no metrics endpoint
        component = "actor" if name.startswith("actor") else name
        out.append({"targets": [f"{host}:{port}"], "labels": {"component": component, "process": name, "run": run}})
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    src, dst = Path(argv[0]), Path(argv[1])
    data = targets(json.loads(src.read_text()), run=src.parent.name)
    tmp = dst.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(dst)  # Prometheus never reads a half-written file
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
