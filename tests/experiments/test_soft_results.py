"""experiments.soft_results: cells trained by the real `mamql train`, scored by the real `mamql evaluate`
(subprocesses, a tiny critic, a tiny dataset), then summary.csv, table.csv and summary.png from the
cells' JSON alone."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mamql.experiments import soft_results as S
from mamql.learner.demos import collect_demos, save_demos

TINY = ("learner.network=mlp", "learner.hidden=[16]", "learner.seed_transitions=64", "learner.batch_size=32",
        "learner.eval_every=3", "learner.eval_episodes=2", "actor.num_envs=2")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, S.Dataset]:
    root = tmp_path_factory.mktemp("soft")
    batch, meta = collect_demos("gems", 200, seed=0, num_envs=2)
    save_demos(root / "demos.npz", batch, meta)
    expert = [sys.executable, "-m", "mamql.cli", "train", "--env", "gems", "--algo", "soft-q", "--steps", "3",
              "--run-name", "expert", "--no-progress", "--set", f"run.root={root / 'runs'}"]
    for item in (*TINY, "learner.eval_every=0"):
        expert += ["--set", item]
    subprocess.run(expert, check=True, capture_output=True, timeout=300)
    ckpt = next((root / "runs" / "expert" / "checkpoints").glob("learner_*.pt"))
    return root, S.Dataset("gems", str(root / "demos.npz"), str(ckpt), 20.0, 6, TINY)


def test_cells_then_summary(tiny, monkeypatch, capsys):
    root, dataset = tiny
    monkeypatch.setattr(S, "DATASETS", {"tiny": dataset})
    out, runs = root / "out", root / "cells"
    common = ["--dataset", "tiny", "--runs", str(runs), "--out", str(out), "--episodes", "2"]
    assert S.main(["run", *common, "--seeds", "0", "1", "--algo", "bc", "--algo", "mamql"]) == 0
    assert S.main(["run", *common, "--seeds", "0", "--algo", "iqlma"]) == 0
    cells = sorted(p.name for p in out.glob("*.json"))
    assert cells == ["tiny-bc-s0.json", "tiny-bc-s1.json", "tiny-iqlma-s0.json", "tiny-mamql-s0.json", "tiny-mamql-s1.json"]
    iqlma = json.loads((out / "tiny-iqlma-s0.json").read_text())
    assert iqlma["algo"] == "iqlma" and iqlma["step"] == 6
    assert iqlma["reward_recovery_metric"]["method"] == "dard"
    # the demos record no discount (scripted expert): the comparison uses the learner's, each critic its own
    assert iqlma["reward_recovery_metric"]["gamma"] == pytest.approx(0.99)
    assert iqlma["reward_recovery_yardsticks"]["bc_log_policy"]["checkpoint"]  # the same seed's BC run
    assert "expert_implied" in iqlma["reward_recovery_yardsticks"] and "mean_pearson" in iqlma["reward_recovery_yardsticks"]["expert_implied"]
    assert iqlma["cell"]["train_command"].startswith("mamql train --env gems") and "--seed 0" in iqlma["cell"]["train_command"]
    curve = [json.loads(x) for x in (out / "curves" / "tiny-mamql-s1.jsonl").read_text().splitlines()]
    assert [c["step"] for c in curve] == [3, 6] and all("eval/sample/agent_0" in c for c in curve)

    capsys.readouterr()
    assert S.main(["run", *common, "--seeds", "0", "--algo", "bc"]) == 0  # a cell with a JSON is not run again
    assert "done already" in capsys.readouterr().out

    assert S.main(["expert", "--dataset", "tiny", "--out", str(out), "--episodes", "2"]) == 0
    expert = json.loads((out / "experts" / "tiny.json").read_text())
    assert expert["algo"] == "soft-q" and expert["sample"]["episodes"] == 2
    assert f"--seed {S.REPORT_EVAL_SEED}" in expert["command"]  # the cells' evaluation episodes

    assert S.main(["summarize", "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert len(rows) == 5
    table = {(r["dataset"], r["algo"]): r for r in csv.DictReader((out / "table.csv").open())}
    sampled = [np.mean(list(json.loads((out / f"tiny-mamql-s{s}.json").read_text())["sample"]["mean_return"].values()))
               for s in (0, 1)]
    assert float(table["tiny", "mamql"]["sampled_mean"]) == pytest.approx(np.mean(sampled), abs=1e-3)
    assert float(table["tiny", "mamql"]["sampled_std"]) == pytest.approx(np.std(sampled, ddof=1), abs=1e-3)
    assert table["tiny", "iqlma"]["sampled_std"] == ""  # one seed: no spread
    agent0 = np.mean([json.loads((out / f"tiny-mamql-s{s}.json").read_text())["sample"]["mean_return"]["agent_0"]
                      for s in (0, 1)])
    per_agent = dict(x.split("=") for x in table["tiny", "mamql"]["sampled_per_agent_mean"].split())
    assert set(per_agent) == {"agent_0", "agent_1"} and float(per_agent["agent_0"]) == pytest.approx(agent0, abs=0.01)
    assert (out / "summary.png").stat().st_size > 10_000
    md = (out / "table.md").read_text().splitlines()
    assert len(md) == 2 + 3 and md[-1].startswith("| tiny | IQL-MA | 0 |")  # header, rule, one row per algo


def test_unknown_dataset_is_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        S.main(["run", "--dataset", "nope"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_tune_keeps_the_curve_and_refuses_reported_seeds(tiny, monkeypatch):
    root, dataset = tiny
    monkeypatch.setattr(S, "DATASETS", {"tiny": dataset})
    out = root / "tune-out"
    common = ["--dataset", "tiny", "--algo", "mamql", "--runs", str(root / "tune-runs"), "--out", str(out)]
    assert S.main(["tune", *common, "--seed", "5", "--name", "wd", "--set", "learner.weight_decay=1e-3"]) == 0
    lines = [json.loads(x) for x in (out / "tuning-s5" / "tiny-mamql-wd.jsonl").read_text().splitlines()]
    head = lines[0]
    assert head["event"] == "tune" and head["overrides"] == ["learner.weight_decay=1e-3"]
    assert "--seed 5" in head["train_command"] and "learner.weight_decay=1e-3" in head["train_command"]
    evals = [r for r in lines[1:] if r.get("event") == "eval"]
    assert [r["step"] for r in evals] == [3, 6]
    final = np.mean([v for k, v in evals[-1].items() if k.startswith("eval/sample/")])
    assert head["final_sampled"] == pytest.approx(final, abs=1e-3)
    # a trial whose training finished but whose file was not written (its tune stopped) is recorded
    # from the run directory without training again
    (out / "tuning-s5" / "tiny-mamql-wd.jsonl").unlink()

    def no_training(*args, **kwargs):
        raise AssertionError(f"trained again: {args}")

    monkeypatch.setattr(S.subprocess, "run", no_training)
    assert S.main(["tune", *common, "--seed", "5", "--name", "wd", "--set", "learner.weight_decay=1e-3"]) == 0
    again = [json.loads(x) for x in (out / "tuning-s5" / "tiny-mamql-wd.jsonl").read_text().splitlines()]
    assert again[1:] == lines[1:] and again[0]["final_sampled"] == head["final_sampled"]
    monkeypatch.undo()
    monkeypatch.setattr(S, "DATASETS", {"tiny": dataset})
    with pytest.raises(SystemExit, match="reported seed"):
        S.main(["tune", *common, "--seed", "1", "--name", "x"])
    assert not (out / "tuning-s1").exists()


def test_a_trial_steps_override_reaches_mamql_train():
    """`mamql train --steps` wins over `--set learner.steps=`, so tune's override must become --steps."""
    cmd = S.train_command("gems-20k-aug", "mamql", 11, Path("runs"), ("learner.steps=8000",))
    assert cmd[cmd.index("--steps") + 1] == "8000"
    cmd = S.train_command("gems-20k-aug", "mamql", 11, Path("runs"))
    assert cmd[cmd.index("--steps") + 1] == str(S.DATASETS["gems-20k-aug"].steps)


def test_a_missing_dataset_is_collected_by_its_recipe_once(tmp_path, monkeypatch, capsys):
    recipe = ("--expert", "scripted", "--transitions", "100", "--actors", "1", "--num-envs", "2")
    monkeypatch.setattr(S, "DATASETS", {
        "has-recipe": S.Dataset("gems", str(tmp_path / "d"), "unused.pt", 1.0, 1, collect=recipe),
        "by-hand": S.Dataset("gems", str(tmp_path / "gone"), "unused.pt", 1.0, 1)})
    out = ["--out", str(tmp_path / "out")]
    assert S.main(["data", "--dataset", "has-recipe", *out]) == 0
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["complete"] and 100 <= manifest["counts"]["transitions"] < 100 + 45
    assert "collecting" in capsys.readouterr().out
    stamp = (tmp_path / "d" / "manifest.json").stat().st_mtime_ns
    assert S.main(["data", "--dataset", "has-recipe", *out]) == 0  # there already: not collected again
    assert (tmp_path / "d" / "manifest.json").stat().st_mtime_ns == stamp and "collecting" not in capsys.readouterr().out

    with pytest.raises(SystemExit, match="no collection recipe"):
        S.main(["run", "--dataset", "by-hand", *out])
    (tmp_path / "gone").mkdir()
    with pytest.raises(SystemExit, match="incomplete .* delete it"):
        S.main(["data", "--dataset", "by-hand", *out])


def test_the_long_gems_cells_collect_from_the_committed_expert():
    d = S.DATASETS["gems-20k-aug-long"]
    assert d.expert_checkpoint == S.GEMS_EXPERT and f"checkpoint:{S.GEMS_EXPERT}" in d.collect
    assert d.collect[d.collect.index("--actors") + 1] == "1"  # one actor: the same rows every time
