"""`mamql dataset import`: a user's own .npz in, validated against the env's spaces, demos out."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mamql.learner.demos import collect_demos, load_demos
from mamql.replay.dataset import read_manifest, verify_dataset

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = ("obs", "action", "next_obs", "done", "truncated")


@pytest.fixture(scope="module")
def arrays():
    batch, _ = collect_demos("gems", 200, seed=2, num_envs=4)
    return {k: v for k, v in batch.items() if k.split("/")[0] in (*MINIMAL, "reward")}


def minimal(arrays):
    return {k: v for k, v in arrays.items() if not k.startswith("reward/")}


def mamql_import(tmp_path, arrays, out, *extra):
    src = tmp_path / "in.npz"
    np.savez(src, **arrays)
    return subprocess.run([sys.executable, "-m", "mamql.cli", "dataset", "import", str(src), "--env", "gems",
                           "--out", str(out), *extra], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_import_to_a_dataset_directory_verifies_and_loads(tmp_path, arrays):
    out = tmp_path / "ds"
    p = mamql_import(tmp_path, minimal(arrays), out, "--gamma", "0.9")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["transitions"] == 200
    assert verify_dataset(out).ok
    manifest = read_manifest(out)
    assert manifest["gamma"] == 0.9 and "reward/agent_0" not in manifest["schema"]
    batch, meta = load_demos(out)
    assert meta["gamma"] == 0.9 and np.array_equal(batch["obs/agent_1"], arrays["obs/agent_1"])
    # the last, unfinished episode is marked truncated (cut, not terminal); nothing else changes
    assert batch["truncated"][-1] and not batch["done"][-1]


def test_import_to_npz_keeps_optional_rewards_and_casts_dtypes(tmp_path, arrays):
    given = dict(arrays, **{"action/agent_0": arrays["action/agent_0"].astype(np.int32),
                            "done": arrays["done"].astype(np.uint8)})
    p = mamql_import(tmp_path, given, tmp_path / "d.npz")
    assert p.returncode == 0, p.stderr
    batch, meta = load_demos(tmp_path / "d.npz")
    assert meta["env"] == "gems" and "gamma" not in meta
    assert batch["action/agent_0"].dtype == np.int64 and batch["done"].dtype == bool
    assert np.array_equal(batch["reward/agent_0"], arrays["reward/agent_0"])


@pytest.mark.parametrize("break_it, expected", [
    (lambda a: a.pop("next_obs/agent_1"), "next_obs/agent_1: missing"),
    (lambda a: a.update({"action/agent_0": a["action/agent_0"] + 5}), "outside 0..4"),
    (lambda a: a.update({"obs/agent_0": a["obs/agent_0"][:, :, :14]}), "shape [5, 14, 15]"),
    (lambda a: a.update({"done": a["done"][:-1]}), "done: 199 rows, other fields have 200"),
    (lambda a: a.update({"reward/agent_0": np.full(200, np.nan, np.float32)}), "200 NaN"),
    (lambda a: a.update({"obs/agent_0": a["obs/agent_0"].astype(np.int32) * 300}), "do not fit the env's uint8"),
    (lambda a: a.update({"obs_agent_0": a["obs/agent_0"]}), "obs_agent_0: unknown field"),
])
def test_bad_input_is_one_line_per_problem_and_writes_nothing(tmp_path, arrays, break_it, expected):
    bad = dict(arrays)
    break_it(bad)
    for out in (tmp_path / "ds", tmp_path / "d.npz"):
        p = mamql_import(tmp_path, bad, out)
        assert p.returncode == 2 and p.stdout == ""
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0] and "Traceback" not in p.stderr, p.stderr
        assert not out.exists()


def test_several_problems_are_all_reported_and_existing_output_is_refused(tmp_path, arrays):
    bad = minimal(arrays)
    bad["action/agent_1"] = bad["action/agent_1"] - 1
    del bad["truncated"]
    p = mamql_import(tmp_path, bad, tmp_path / "ds")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 2, p.stderr
    (tmp_path / "d.npz").write_bytes(b"mine")
    p = mamql_import(tmp_path, minimal(arrays), tmp_path / "d.npz")
    assert p.returncode == 2 and "refusing to overwrite" in p.stderr
    assert (tmp_path / "d.npz").read_bytes() == b"mine"
