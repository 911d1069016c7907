"""experiments.imitation_ceiling: the BC cell's network fitted to a teacher's action probabilities moves
towards the teacher (KL falls), and a run writes a JSON and a checkpoint `mamql evaluate` can load."""

from __future__ import annotations

import json

import numpy as np
import torch

from mamql.config import load_config, to_dict
from mamql.envs import env_spec
from mamql.experiments import imitation_ceiling as C
from mamql.experiments import soft_results as S
from mamql.learner.demos import collect_demos, load_demos, save_demos
from mamql.learner.evaluate import load_updater
from mamql.learner.updater import make_updater, save_checkpoint

SMALL = ("learner.batch_size=32", "learner.hidden=[16]")


def _teacher(path):
    """A soft-q checkpoint with a random critic at a low temperature: sharp, state-dependent probabilities."""
    config = load_config(None, ["env.name=gems", "learner.algo=soft-q", "learner.alpha=0.05", *SMALL])
    updater = make_updater(env_spec("gems"), config.learner, "cpu", seed=3)
    save_checkpoint(path, updater, {"config_json": json.dumps(to_dict(config)), "env": "gems", "algo": "soft-q"})
    return str(path)


def _kl(teacher: dict, updater, demos) -> float:
    total = 0.0
    for agent, p in teacher.items():
        with torch.no_grad():
            logq = torch.log_softmax(updater.critics[agent](torch.as_tensor(demos[f"obs/{agent}"])), -1).numpy()
        total += float(np.mean(np.sum(p * (np.log(np.clip(p, 1e-12, None)) - logq), -1)))
    return total


def test_fit_moves_towards_the_teacher(tmp_path, monkeypatch):
    batch, meta = collect_demos("gems", 200, seed=0, num_envs=2)
    save_demos(tmp_path / "demos.npz", batch, meta)
    teacher = _teacher(tmp_path / "teacher.pt")
    cell = S.DATASETS[C.CELL]  # the cell's own settings; its demos and expert replaced by the tiny ones
    monkeypatch.setitem(S.DATASETS, C.CELL, S.Dataset("gems", str(tmp_path / "demos.npz"), teacher, 20.0, 6, cell.overrides))
    demos, _ = load_demos(tmp_path / "demos.npz")
    agents = ["agent_0", "agent_1"]
    probs = C.teacher_probs(demos, agents, teacher)
    assert all(np.allclose(p.sum(-1), 1.0, atol=1e-5) for p in probs.values())
    assert max(float(p.max(-1).mean()) for p in probs.values()) > 0.5  # not uniform: there is something to learn
    before = _kl(probs, make_updater(env_spec("gems"), C.bc_config(0, SMALL).learner, "cpu", seed=0), demos)

    result = C.fit("20k", "probs", 0, 2, tmp_path / "runs", progress=lambda m: None,
                   demos_path=str(tmp_path / "demos.npz"), teacher=teacher, steps=60, extra=SMALL)
    fit = result["fit"]
    assert fit["targets"] == "probs" and fit["teacher"] == teacher and fit["steps"] == 60
    assert "learner.augment=symmetry" in fit["overrides"] and fit["overrides"][-2:] == list(SMALL)
    # scored by the real `mamql evaluate`, as a cell is: returns on the reported episodes, DARD with yardsticks
    assert f"--seed {S.REPORT_EVAL_SEED}" in fit["evaluate_command"]
    assert result["sample"]["episodes"] == 2 and set(result["sample"]["mean_return"]) == set(agents)
    assert result["reward_recovery_metric"]["method"] == "dard"
    assert "expert_implied" in result["reward_recovery_yardsticks"]
    ckpt = tmp_path / "runs" / "20k-probs-s0" / "checkpoints" / "learner_00000060.pt"
    updater, extra = load_updater(ckpt)  # what `mamql evaluate --checkpoint` reads
    assert updater.algo == "bc" and updater.step == 60 and extra["targets"] == "probs"
    after = _kl(probs, updater, demos)
    assert after < 0.5 * before, (before, after)

    # the table: one row per (demos, targets), the share of the expert's return on the same episodes
    out = tmp_path / "ceiling"
    out.mkdir()
    (out / "20k-probs-s0.json").write_text(json.dumps(result))
    experts = tmp_path / "experts"
    experts.mkdir()
    (experts / f"{C.CELL}.json").write_text(json.dumps({"sample": {"mean_return": {"agent_0": 10.0, "agent_1": 30.0}}}))
    table = C.summarize(out, experts).read_text().splitlines()
    row = [x.strip() for x in table[2].split("|")[1:-1]]
    sampled = np.mean(list(result["sample"]["mean_return"].values()))
    assert row[:5] == ["20k", "probs", "(the cell)", "60", "0"] and row[5] == f"{sampled:.2f} ± 0.00"
    assert row[7] == f"{sampled / 20.0:.0%}" and len(table) == 5


def test_bad_input_is_one_line(tmp_path, capsys, monkeypatch):
    assert C.cli(["run", "--seeds", "0", "--set", "learner.nope=1", "--out", str(tmp_path)]) == 2
    assert "unknown key(s) learner.nope" in capsys.readouterr().err
    monkeypatch.setitem(C.DEMOS, "200k", str(tmp_path / "not-collected"))
    assert C.cli(["run", "--demos", "200k", "--targets", "actions", "--seeds", "0", "--out", str(tmp_path)]) == 2
    assert "not-collected" in capsys.readouterr().err
    assert not list(tmp_path.glob("*-s0.json"))  # nothing written
