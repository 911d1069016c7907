#!/usr/bin/env python3
"""Write a Prometheus file_sd target file from a `mamql local` run's processes.json.

    python deploy/prometheus/targets_from_local.py runs/<name>/processes.json deploy/prometheus/targets/local.json

`mamql local` already keeps runs/prometheus-targets/<name>.json current while it runs (mamql/targets.py;
deploy/local/ watches that folder); this script copies a run's targets elsewhere, e.g. into the
targets/ folder that prometheus.yml here watches. Each target gets `component` (replay | learner |
actor), `process` (actor-0, ...) and `run` labels, the labels the recording rules, alerts and the
Grafana dashboard group by.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mamql.targets import target_groups, write_atomic


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    src, dst = Path(argv[0]), Path(argv[1])
    write_atomic(dst, target_groups(json.loads(src.read_text()), run=src.parent.name))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
