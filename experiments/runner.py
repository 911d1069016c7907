"""`mamql experiment --suite NAME`: run every (dataset, algo, seed) of a suite, evaluate, summarise.

Layout written under `--out` (default results/<suite>/):
    demos/<env>-<n>.npz            expert demonstrations, collected once per dataset
    runs/<env>-<n>-<algo>-s<seed>/ one run directory each (config, status.jsonl, metrics.jsonl,
                                   checkpoints/, logs/, eval.json, recovery.npz)
    baselines.json                 expert and random-policy returns per dataset
    summary.csv                    one row per run
    plots/*.png                    learning curves, reward recovery, sample efficiency
A run that already has eval.json is skipped, so an interrupted suite resumes where it stopped.
"""

from __future__ import annotations

import csv
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from mamql.experiments.suites import SUITES, Suite
from mamql.config import Config, load_config

SUMMARY_FIELDS = [
    "suite", "env", "demos", "algo", "seed", "updates", "env_steps", "wall_s",
    "greedy_return", "sampled_return", "expert_return", "random_return",
    "reward_dard_pearson", "reward_pearson", "reward_mse_affine", "reward_epic_pearson",
]


def run_name(env: str, demos: int, algo: str, seed: int) -> str:
    return f"{env}-{demos}-{algo}-s{seed}"


def run_config(suite: Suite, env: str, demos: int, algo: str, seed: int, out: Path, extra: list[str]) -> Config:
    return load_config(None, [
        *suite.overrides_for(env, demos), f"env.name={env}", f"learner.algo={algo}", f"learner.steps={suite.steps}",
        f"run.seed={seed}", f"env.seed={1000 * seed}", f"run.root={out / 'runs'}",
        f"run.name={run_name(env, demos, algo, seed)}", *extra,  # the user's overrides win
    ])


def collect(env: str, transitions: int, path: Path, seed: int = 0) -> dict:
    """Expert demos for one dataset (in this process: it is fast and needs no server)."""
    from mamql.learner.demos import collect_demos, load_demos, save_demos

    if not path.exists():
        batch, meta = collect_demos(env, transitions, seed=seed)
        save_demos(path, batch, meta)
    return load_demos(path)[1]


def random_return(env: str, episodes: int) -> float:
    from mamql.envs.experts import make_expert
    from mamql.learner.evaluate import run_episodes

    result = run_episodes(make_expert(env, kind="random", seed=0), env, episodes)
    return float(np.mean(list(result["mean_return"].values())))


def evaluate_run(run_dir: Path, demos_path: Path, episodes: int, env: str, recovery_states: int = 128) -> dict[str, Any]:
    """Greedy and sampled returns and reward recovery from the run's final learner checkpoint: the
    shaping-invariant DARD figure of `mamql evaluate` ("dard": its reward_recovery* keys) and the raw
    per-row fit on the demos ("recovery", secondary; its arrays go to recovery.npz for the plots)."""
    from mamql.learner.demos import load_demos
    from mamql.learner.evaluate import evaluate, load_updater, recovery_report, reward_recovery

    updater, _ = load_updater(run_dir / "checkpoints" / "learner" / "latest.pt")
    demos, meta = load_demos(demos_path)
    greedy = evaluate(updater, episodes=episodes, mode="greedy")
    sampled = evaluate(updater, episodes=episodes, mode="sample")
    dard = recovery_report(updater, env, {}, None, meta, states=recovery_states)
    recovery = reward_recovery(updater, demos, max_rows=4096, keep_rows=2000)
    arrays = {}
    for agent, result in recovery.items():  # arrays go to recovery.npz, figures to eval.json
        arrays[f"r_hat/{agent}"] = result.pop("r_hat")
        arrays[f"r_true/{agent}"] = result.pop("r_true")
    np.savez(run_dir / "recovery.npz", **arrays)
    return {"step": updater.step, "greedy": greedy, "sampled": sampled, "dard": dard, "recovery": recovery}


def status_totals(run_dir: Path) -> tuple[float, float]:
    """(env steps, wall seconds) from the run's status.jsonl."""
    lines = [json.loads(line) for line in (run_dir / "status.jsonl").read_text().splitlines() if line.strip()]
    if not lines:
        return 0.0, 0.0
    return float(lines[-1]["env_steps"]), float(lines[-1]["time"] - lines[0]["time"])


def mean_over_agents(values: dict[str, float]) -> float:
    return float(np.mean(list(values.values()))) if values else float("nan")


def summary_row(suite: Suite, env: str, demos: int, algo: str, seed: int, run_dir: Path,
                result: dict, baselines: dict) -> dict[str, Any]:
    env_steps, wall = status_totals(run_dir)
    recovery = result["recovery"]
    epic = [r["epic_pearson"] for r in recovery.values() if r["epic_pearson"] is not None]
    key = f"{env}-{demos}"
    return {
        "suite": suite.name, "env": env, "demos": demos, "algo": algo, "seed": seed,
        "updates": result["step"], "env_steps": int(env_steps), "wall_s": round(wall, 1),
        "greedy_return": round(mean_over_agents(result["greedy"]), 3),
        "sampled_return": round(mean_over_agents(result["sampled"]), 3),
        "expert_return": round(baselines[key]["expert"], 3),
        "random_return": round(baselines[key]["random"], 3),
        "reward_dard_pearson": _round4(result.get("dard", {}).get("reward_recovery_metric", {}).get("mean_pearson")),
        "reward_pearson": round(float(np.mean([r["raw"]["pearson"] for r in recovery.values()])), 4),
        "reward_mse_affine": round(float(np.mean([r["raw"]["mse"] for r in recovery.values()])), 4),
        "reward_epic_pearson": round(float(np.mean(epic)), 4) if epic else "",
    }


def _round4(x: float | None) -> float | str:
    return "" if x is None else round(float(x), 4)


def run_suite(suite: Suite, out: Path, seeds: int | None = None, extra: list[str] | None = None,
              stop: threading.Event | None = None, algos: tuple[str, ...] | None = None) -> list[dict]:
    from mamql.local import run_system

    stop = stop or threading.Event()
    out.mkdir(parents=True, exist_ok=True)
    (out / "demos").mkdir(exist_ok=True)
    baselines: dict[str, dict] = {}
    rows: list[dict] = []
    for env, n in suite.datasets:
        path = out / "demos" / f"{env}-{n}.npz"
        meta = collect(env, n, path)
        baselines[f"{env}-{n}"] = {"expert": mean_over_agents(meta["mean_return"]),
                                   "random": random_return(env, suite.eval_episodes), "demos": str(path)}
        (out / "baselines.json").write_text(json.dumps(baselines, indent=1))
        for algo in algos or suite.algos:
            for seed in range(seeds if seeds is not None else suite.seeds):
                if stop.is_set():
                    return rows
                name = run_name(env, n, algo, seed)
                config = run_config(suite, env, n, algo, seed, out, list(extra or []))
                run_dir = out / "runs" / name
                eval_path = run_dir / "eval.json"
                if not eval_path.exists():
                    started = time.time()
                    print(f"[{suite.name}] {name}: training {suite.steps} updates", flush=True)
                    code = run_system(config, suite.actors, str(path), n, stop, status_every=2.0, quiet=True)
                    if code != 0:
                        raise RuntimeError(f"run {name} failed with exit code {code}; logs in {run_dir / 'logs'}")
                    result = evaluate_run(run_dir, path, suite.eval_episodes, env)
                    result["wall_s"] = time.time() - started
                    eval_path.write_text(json.dumps(result, indent=1))
                result = json.loads(eval_path.read_text())
                row = summary_row(suite, env, n, algo, seed, run_dir, result, baselines)
                rows.append(row)
                print(f"[{suite.name}] {name}: greedy {row['greedy_return']} sampled {row['sampled_return']} "
                      f"(expert {row['expert_return']}, random {row['random_return']})", flush=True)
                write_summary(out / "summary.csv", rows)
    return rows


def write_summary(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SUMMARY_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def suite_by_name(name: str) -> Suite:
    if name not in SUITES:
        raise KeyError(f"unknown suite {name!r}; known: {', '.join(SUITES)}")
    return SUITES[name]
