"""`mamql ablate`: variants side by side on the same demos, through the real CLI and trainer."""

import json
import subprocess
import sys

import pytest
import yaml

from mamql.experiments.ablation import parse_variant

TINY = ["learner.hidden=[16]", "learner.steps=4", "learner.seed_transitions=64",
        "learner.batch_size=16", "learner.expert_transitions=256", "learner.log_every=2", "learner.torch_threads=1",
        "actor.num_envs=2"]


def test_parse_variant_and_its_errors():
    assert parse_variant("base") == ("base", [])
    assert parse_variant("ref learner.value_term=online learner.alpha=0.5") == (
        "ref", ["learner.value_term=online", "learner.alpha=0.5"])
    for bad in ("", "learner.alpha=1", "x alpha=1", "x learner.alpha"):
        with pytest.raises(ValueError):
            parse_variant(bad)


def test_ablate_runs_each_variant_with_its_overrides(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("learner:\n  eval_episodes: 2\n")  # the --config file is every variant's base
    cmd = [sys.executable, "-m", "mamql.cli", "ablate", "--config", str(base), "--env", "gems", "--held-out", "200",
           "--out", str(tmp_path), "--no-progress", "--variant", "iq", "--variant", "clone learner.algo=bc"]
    for item in TINY:
        cmd += ["--set", item]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(x) for x in (tmp_path / "ablation.jsonl").read_text().splitlines()]
    assert [r["variant"] for r in lines] == ["iq", "clone"]
    for record in lines:
        assert record["steps"] == 4
        assert 0.0 <= record["expert_action_agreement"] <= 1.0
        assert record["greedy"] >= 0.0 and record["sample"] >= 0.0
    learners = {name: yaml.safe_load((tmp_path / "runs" / name / "config.yaml").read_text())["learner"]
                for name in ("iq", "clone")}
    assert {n: c["algo"] for n, c in learners.items()} == {"iq": "mamql", "clone": "bc"}  # each its own overrides
    assert all(c["eval_episodes"] == 2 for c in learners.values())  # ... on top of the --config file

    # the variants' run directories are `mamql train` runs: `mamql plot` draws them on one figure
    out = tmp_path / "curves.png"
    runs = [str(tmp_path / "runs" / name) for name in ("iq", "clone")]
    plot = subprocess.run([sys.executable, "-m", "mamql.cli", "plot", *runs, "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert plot.returncode == 0, plot.stderr[-2000:]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_ablate_checks_every_variant_before_training_any(tmp_path):
    cmd = [sys.executable, "-m", "mamql.cli", "ablate", "--env", "gems", "--held-out", "50", "--out", str(tmp_path),
           "--no-progress", "--variant", "fine", "--variant", "typo learner.weight_decy=0.1"]
    for item in TINY:
        cmd += ["--set", item]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "learner.weight_decy" in proc.stderr
    assert not (tmp_path / "runs").exists()  # the good variant was not trained first
