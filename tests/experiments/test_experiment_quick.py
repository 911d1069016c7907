"""The quick suite through the real distributed system (replay, learner, actor processes), 1 seed."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from mamql.experiments.plots import read_curve

pytestmark = pytest.mark.slow


def test_quick_suite_learns_above_random_with_a_rising_curve(tmp_path):
    out = tmp_path / "quick"
    proc = subprocess.run(
        [sys.executable, "-m", "mamql.cli", "experiment", "--suite", "quick", "--seeds", "1", "--algos", "mamql",
         "--out", str(out)],
        capture_output=True, text=True, timeout=1500,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (row,) = list(csv.DictReader((out / "summary.csv").open()))
    assert row["algo"] == "mamql" and int(row["updates"]) > 0
    assert -1.0 <= float(row["reward_dard_pearson"]) <= 1.0  # the shaping-invariant figure of `mamql evaluate`
    random_return = float(row["random_return"])
    assert float(row["greedy_return"]) > random_return + 1.0, row
    steps, _, returns = read_curve(out / "runs" / "gems-20000-mamql-s0", smooth=1)
    third = len(returns) // 3
    assert third >= 3, f"too few status intervals with finished episodes: {len(returns)}"
    assert np.mean(returns[-third:]) > np.mean(returns[:third]) + 0.5, returns
    assert (out / "plots" / "curves-gems-20000.png").exists()
    assert json.loads((out / "baselines.json").read_text())["gems-20000"]["expert"] > 20
