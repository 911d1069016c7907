"""Plots and summaries from synthetic run directories (the real suite runs in test_experiment_quick)."""

import json

import numpy as np

from mamql.experiments.plots import parse_run_name, plot_results, read_curve, single_run
from mamql.experiments.runner import SUMMARY_FIELDS, run_name, write_summary


def fake_run(root, name, slope, points=30):
    run = root / "runs" / name
    run.mkdir(parents=True)
    lines = []
    for i in range(points):
        rec = {"time": 1000.0 + i, "env_steps": 1000.0 * i, "returns": {"agent_0": slope * i, "agent_1": slope * i}}
        if i % 7 == 3:
            rec["returns"] = {}  # an interval with no finished episode is skipped
        lines.append(json.dumps(rec))
    (run / "status.jsonl").write_text("\n".join(lines) + "\n")
    rng = np.random.default_rng(0)
    true = rng.integers(0, 2, 200).astype(np.float32)
    np.savez(run / "recovery.npz", **{"r_hat/agent_0": true + rng.normal(0, 0.1, 200), "r_true/agent_0": true,
                                     "r_hat/agent_1": true, "r_true/agent_1": true})
    return run


def test_run_names_round_trip():
    assert parse_run_name(run_name("gems", 2000, "iqlma", 2)) == ("gems", 2000, "iqlma", 2)


def test_dataset_overrides_reach_only_their_dataset_and_the_user_still_wins(tmp_path):
    from mamql.experiments.runner import run_config
    from mamql.experiments.suites import SUITES

    suite = SUITES["paper-gems"]
    small = run_config(suite, "gems", 1_000, "bc", 0, tmp_path, [])
    large = run_config(suite, "gems", 20_000, "bc", 0, tmp_path, [])
    assert (small.learner.augment, small.learner.weight_decay) == ("symmetry", 1e-3)
    assert (large.learner.augment, large.learner.weight_decay) == ("none", -1.0)
    assert run_config(suite, "gems", 1_000, "bc", 0, tmp_path, ["learner.augment=none"]).learner.augment == "none"


def test_read_curve_skips_empty_intervals_and_smooths():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        run = fake_run(Path(tmp), "gems-100-mamql-s0", 1.0)
        steps, times, returns = read_curve(run, smooth=1)
        assert len(steps) == 30 - len([i for i in range(30) if i % 7 == 3])
        np.testing.assert_allclose(returns, steps / 1000.0)
        _, _, smoothed = read_curve(run, smooth=5)
        assert smoothed[-1] < returns[-1]  # a trailing mean lags a rising curve


def test_plot_results_writes_every_kind_of_png(tmp_path):
    for seed in range(2):
        fake_run(tmp_path, f"gems-1000-mamql-s{seed}", 1.0 + seed)
        fake_run(tmp_path, f"gems-1000-iqlma-s{seed}", 0.5)
        fake_run(tmp_path, f"gems-100-mamql-s{seed}", 0.2)
    (tmp_path / "baselines.json").write_text(json.dumps({"gems-1000": {"expert": 25.0, "random": 0.3}}))
    rows = [dict(zip(SUMMARY_FIELDS, ["quick", "gems", n, algo, s, 10, 100, 1.0, r, r, 25, 0.3, 0.5, 0.9, 0.1, 0.8]))
            for n, algo, r in [(1000, "mamql", 10.0), (100, "mamql", 5.0), (1000, "iqlma", 3.0), (100, "iqlma", 1.0)]
            for s in range(2)]
    write_summary(tmp_path / "summary.csv", rows)
    written = plot_results(tmp_path)
    names = sorted(p.name for p in written)
    assert "curves-gems-1000.png" in names and "curves-gems-100.png" in names
    assert "sample-efficiency-gems.png" in names
    assert "recovery-gems-1000-mamql-s0.png" in names
    assert not any("-s1" in n for n in names if n.startswith("recovery"))
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_single_run_plot(tmp_path):
    run = fake_run(tmp_path, "gems-10-bc-s0", 1.0)
    (path,) = single_run(run)
    assert path.exists() and path.stat().st_size > 10_000


def test_plot_cli_rejects_unknown_directories(tmp_path):
    from mamql.cli import main

    assert main(["plot", str(tmp_path)]) == 2
