"""TensorBoard logging (learner/tensorboard_log.py): a real `mamql train` run writes an event file in
runs/<name>/tensorboard/ whose scalars, read back with TensorBoard's own EventAccumulator, hold the
losses, returns, throughput and reward recovery; and the key -> tag mapping by hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mamql.learner.tensorboard_log import TensorBoardLog, scalars, tag_of

AGENTS = ("agent_0", "agent_1")


def test_metrics_keys_become_grouped_tags():
    assert tag_of("agent_0/loss", AGENTS) == "losses/loss/agent_0"
    assert tag_of("agent_1/q_gap", AGENTS) == "losses/q_gap/agent_1"
    assert tag_of("rollout_return", AGENTS) == "returns/rollout"
    assert tag_of("rollout_return/agent_1", AGENTS) == "returns/rollout/agent_1"
    assert tag_of("eval/greedy/agent_0", AGENTS) == "returns/eval_greedy/agent_0"
    assert tag_of("recovery/agent_0/epic_pearson", AGENTS) == "reward_recovery/agent_0/epic_pearson"
    assert tag_of("updates_per_s", AGENTS) == "throughput/updates_per_s"
    assert tag_of("phase/update_s", AGENTS) == "phase/update_s"  # not an agent: kept as it is
    record = {"step": 3, "time": 1.0, "event": "eval", "eval/greedy/agent_0": 2.0, "eval/greedy/agent_1": 4.0,
              "rollout_return": None, "recovery/agent_0/pearson": float("nan"), "flag": True}
    assert scalars(record, AGENTS) == {"returns/eval_greedy/agent_0": 2.0, "returns/eval_greedy/agent_1": 4.0,
                                       "returns/eval_greedy": 3.0}


def test_updates_per_second_from_successive_records(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = TensorBoardLog(tmp_path, AGENTS)
    log.write({"step": 10, "time": 100.0, "agent_0/loss": 1.0})
    log.write({"step": 30, "time": 104.0, "agent_0/loss": 0.5, "weight_version": 7})
    log.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("throughput/updates_per_s")] == [(30, 5.0)]
    assert [(e.step, e.value) for e in events.Scalars("losses/loss/agent_0")] == [(10, 1.0), (30, 0.5)]
    assert [e.value for e in events.Scalars("weight_version")] == [7.0]


@pytest.mark.slow
def test_mamql_train_writes_losses_returns_and_recovery_to_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sets = ["learner.network=mlp", "learner.hidden=[16]", "learner.seed_transitions=32", "learner.batch_size=16",
            "learner.eval_episodes=1", "learner.log_every=24", "learner.eval_every=48", "actor.num_envs=2"]
    proc = subprocess.run(
        [sys.executable, "-m", "mamql.cli", "train", "--env", "gems", "--steps", "48", "--expert-transitions", "200",
         "--run-name", "tb", "--no-progress", "--set", f"run.root={tmp_path}", *[a for s in sets for a in ("--set", s)]],
        cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = tmp_path / "tb"
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for agent in AGENTS:
        assert {f"losses/loss/{agent}", f"returns/eval_greedy/{agent}", f"returns/eval_sample/{agent}",
                f"reward_recovery/{agent}/epic_pearson"} <= tags, sorted(tags)
    assert {"returns/rollout", "returns/eval_greedy", "throughput/updates_per_s"} <= tags, sorted(tags)
    assert [e.step for e in events.Scalars("losses/loss/agent_0")] == [24, 48]
    assert events.Scalars("throughput/updates_per_s")[0].value > 0
    # the same numbers as metrics.jsonl, which also gained the recovery figures
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last_eval = [r for r in records if r.get("event") == "eval"][-1]
    assert events.Scalars("returns/eval_greedy/agent_1")[-1].value == pytest.approx(last_eval["eval/greedy/agent_1"])
    assert "recovery/agent_0/epic_pearson" in last_eval
