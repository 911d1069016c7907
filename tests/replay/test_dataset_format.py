"""replay.dataset in process: writer, atomic shards and resume, loader subsampling, verify, tampering."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from mamql.actors.collect import EpisodeAssembler, rerun_expert
from mamql.envs.registry import env_spec
from mamql.learner.demos import load_demos
from mamql.replay.dataset import (MANIFEST, DatasetError, DatasetWriter, check_episodes, iter_shards, load_dataset,
                            read_manifest, spec_to_dict, verify_dataset)

ENV = {"name": "gems", "kwargs": {}, "spec": spec_to_dict(env_spec("gems"))}
AGENTS = ENV["spec"]["agents"]


def expert_episodes(n_episodes: int, actor_id: int = 0, shuffle_seed: int | None = None) -> list[dict]:
    """Complete episodes from the scripted expert, passed through the assembler (optionally with
    every batch shuffled and half of it sent twice, as an at-least-once writer may)."""
    assembler, out = EpisodeAssembler(env_seed=0), []
    rng = np.random.default_rng(shuffle_seed)
    for batch in rerun_expert("gems", 0, actor_id, 4):
        if shuffle_seed is not None:
            rows = rng.permutation(len(batch["step"]))
            rows = np.concatenate([rows, rows[: len(rows) // 2]])
            batch = {k: v[rows] for k, v in batch.items()}
        out.extend(assembler.add(batch))
        if len(out) >= n_episodes:
            return out[:n_episodes]


def write(path, episodes, shard_transitions=200):
    writer = DatasetWriter.open(path, ENV, shard_transitions=shard_transitions, info={"expert": {"kind": "scripted"}})
    for ep in episodes:
        writer.add_episode(ep)
    return writer.close(complete=True)


def test_assembler_restores_episodes_from_shuffled_duplicated_rows():
    clean = expert_episodes(12)
    messy = expert_episodes(12, shuffle_seed=3)
    key = lambda e: (int(e["actor_id"][0]), int(e["episode_id"][0]))  # noqa: E731
    by_key = {key(e): e for e in messy}
    assert set(by_key) == {key(e) for e in clean}
    for e in clean:
        m = by_key[key(e)]
        assert set(m) == set(e)
        for k in e:
            np.testing.assert_array_equal(m[k], e[k], err_msg=k)
        assert np.array_equal(e["step"], np.arange(len(e["step"])))
        assert (e["done"] | e["truncated"]).sum() == 1 and (e["done"] | e["truncated"])[-1]


def test_write_verify_and_roundtrip(tmp_path):
    episodes = expert_episodes(20)
    manifest = write(tmp_path / "ds", episodes)
    total = sum(len(e["step"]) for e in episodes)
    assert manifest["counts"] == {"transitions": total, "episodes": 20, "shards": len(manifest["shards"])}
    assert len(manifest["shards"]) >= 3 and all(s["transitions"] >= 200 for s in manifest["shards"][:-1])
    report = verify_dataset(tmp_path / "ds")
    assert report.ok, report.errors
    assert (report.transitions, report.episodes) == (total, 20)
    batch = load_dataset(tmp_path / "ds")
    for k in batch:
        np.testing.assert_array_equal(batch[k], np.concatenate([e[k] for e in episodes]), err_msg=k)
    returns = np.array([e["reward/agent_0"].sum() for e in episodes])
    assert manifest["returns"]["agent_0"]["mean"] == pytest.approx(returns.mean())
    assert manifest["returns"]["agent_0"]["std"] == pytest.approx(returns.std(), abs=1e-6)
    assert not [p for p in os.listdir(tmp_path / "ds") if p.endswith(".tmp")]


def test_subsampling(tmp_path):
    episodes = expert_episodes(20)
    write(tmp_path / "ds", episodes)
    cut = load_dataset(tmp_path / "ds", max_transitions=100)
    assert len(cut["step"]) == 100
    assert not cut["done"][-1] and not cut["truncated"][-1]  # a cut is not a terminal
    first_len = len(episodes[0]["step"])
    np.testing.assert_array_equal(cut["obs/agent_0"][:first_len], episodes[0]["obs/agent_0"])
    three = load_dataset(tmp_path / "ds", max_episodes=3)
    assert (three["step"] == 0).sum() == 3 and len(three["step"]) == sum(len(e["step"]) for e in episodes[:3])
    rand = load_dataset(tmp_path / "ds", max_episodes=5, seed=7)
    assert (rand["step"] == 0).sum() == 5 and check_episodes(rand, AGENTS) == []
    assert len(set(rand["episode_id"].tolist())) == 5
    first5 = {int(e["episode_id"][0]) for e in episodes[:5]}
    assert set(rand["episode_id"].tolist()) != first5  # a random subset, not the prefix
    rand_again = load_dataset(tmp_path / "ds", max_episodes=5, seed=7)
    np.testing.assert_array_equal(rand["episode_id"], rand_again["episode_id"])
    assert len(load_dataset(tmp_path / "ds", max_transitions=150, seed=1)["step"]) == 150
    assert len(load_dataset(tmp_path / "ds", max_episodes=0)["step"]) == 0


def test_tampered_shard_fails_naming_it(tmp_path):
    manifest = write(tmp_path / "ds", expert_episodes(12))
    victim = manifest["shards"][1]["file"]
    data = bytearray((tmp_path / "ds" / victim).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "ds" / victim).write_bytes(bytes(data))
    report = verify_dataset(tmp_path / "ds")
    assert not report.ok
    assert len(report.errors) == 1 and report.errors[0].startswith(f"{victim}: sha256 mismatch")
    with pytest.raises(DatasetError, match=victim):
        list(iter_shards(tmp_path / "ds", check=True))


def test_integrity_checks_catch_broken_episodes():
    ep = expert_episodes(2)
    batch = {k: np.concatenate([e[k] for e in ep]) for k in ep[0]}
    assert check_episodes(batch, AGENTS) == []
    broken = {k: v.copy() for k, v in batch.items()}
    broken["next_obs/agent_1"][3] ^= 1
    assert any("next_obs/agent_1" in e for e in check_episodes(broken, AGENTS))
    broken = {k: v.copy() for k, v in batch.items()}
    broken["done"][-1] = broken["truncated"][-1] = False
    assert any("done/truncated" in e for e in check_episodes(broken, AGENTS))
    broken = {k: v.copy() for k, v in batch.items()}
    broken["step"][5] = 9
    assert any("row 5" in e for e in check_episodes(broken, AGENTS))


def test_crash_mid_shard_leaves_consistent_dataset_and_resume_dedupes(tmp_path, monkeypatch):
    episodes = expert_episodes(16)
    writer = DatasetWriter.open(tmp_path / "ds", ENV, shard_transitions=200)
    for ep in episodes[:8]:
        writer.add_episode(ep)
    committed = read_manifest(tmp_path / "ds")
    real_replace = os.replace

    def crash(src, dst):
        if str(src).endswith(".npz.tmp"):
            raise OSError("simulated crash before the rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        for ep in episodes[8:]:
            writer.add_episode(ep)
    monkeypatch.undo()
    assert read_manifest(tmp_path / "ds") == committed  # the failed shard is not listed
    (tmp_path / "ds" / "shard-000099.npz").write_bytes(b"renamed but never committed")
    assert verify_dataset(tmp_path / "ds").ok
    with pytest.raises(DatasetError, match="--resume"):
        DatasetWriter.open(tmp_path / "ds", ENV)
    resumed = DatasetWriter.open(tmp_path / "ds", ENV, resume=True, shard_transitions=200)
    assert sorted(os.listdir(tmp_path / "ds")) == sorted([MANIFEST] + [s["file"] for s in committed["shards"]])
    added = [resumed.add_episode(ep) for ep in episodes]  # all 16 again: the committed ones are skipped
    on_disk = committed["counts"]["episodes"]
    assert added == [False] * on_disk + [True] * (16 - on_disk)
    manifest = resumed.close(complete=True)
    assert manifest["counts"]["episodes"] == 16 and verify_dataset(tmp_path / "ds").ok
    keys = list(zip(*(load_dataset(tmp_path / "ds")[k][...] for k in ("actor_id", "episode_id"))))
    assert len(set(keys)) == 16


def test_load_demos_accepts_dataset_dir_and_npz_still_works(tmp_path):
    episodes = expert_episodes(6)
    write(tmp_path / "ds", episodes)
    batch, meta = load_demos(tmp_path / "ds")
    assert meta["env"] == "gems" and meta["transitions"] == len(batch["step"]) == sum(len(e["step"]) for e in episodes)
    assert "shards" not in meta and json.dumps(meta)
    from mamql.learner.demos import save_demos

    save_demos(tmp_path / "d.npz", {"step": batch["step"]}, {"env": "gems"})
    npz, meta = load_demos(tmp_path / "d.npz")
    assert meta == {"env": "gems"} and np.array_equal(npz["step"], batch["step"])


def test_refuses_unknown_format_and_stray_shards(tmp_path):
    write(tmp_path / "ds", expert_episodes(2))
    m = json.loads((tmp_path / "ds" / MANIFEST).read_text())
    m["format_version"] = 99
    (tmp_path / "ds" / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(DatasetError, match="format_version 99"):
        read_manifest(tmp_path / "ds")
    assert not verify_dataset(tmp_path / "ds").ok
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "shard-000000.npz").write_bytes(b"")
    with pytest.raises(DatasetError, match="no manifest"):
        DatasetWriter.open(tmp_path / "x", ENV)


@pytest.mark.slow
def test_mamql_train_accepts_a_dataset_dir(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    write(tmp_path / "ds", expert_episodes(30))
    res = subprocess.run(
        [sys.executable, "-m", "mamql.cli", "train", "--env", "gems", "--demos", str(tmp_path / "ds"), "--steps", "2",
         "--no-progress", "--set", f"run.root={tmp_path}", "--set", "learner.eval_every=0",
         "--set", "learner.eval_episodes=1", "--set", "learner.seed_transitions=64", "--set", "actor.num_envs=2"],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert res.returncode == 0, res.stderr[-2000:]
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result["step"] == 2 and result["demos"] == str(tmp_path / "ds")
