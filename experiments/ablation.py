"""Side-by-side learner variants on the same demos: `mamql ablate`.

Each variant is the base config plus a few overrides; every variant trains the same number of
updates in one process (learner.trainer, in-process replay) on the SAME demonstrations, then gets
the same evaluation: greedy and sampled mean return per agent on fixed eval seeds, and how often the
greedy action equals the expert's on held-out expert states (fresh demos, a seed disjoint from
training). Variants run one after another, so their figures are comparable on a noisy machine only
as far as the evaluation is; use enough episodes.

This is how the default objective was chosen (docs/results.md, "Which objective"): a question like
"does chi^2 on policy samples help?" is answered by two variants, not by argument.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

HELD_OUT_SEED = 777_001  # held-out expert states; training demos use small seeds


def parse_variant(text: str) -> tuple[str, list[str]]:
    """'NAME section.key=value ...' -> (NAME, overrides). A name alone is the base config."""
    parts = text.split()
    if not parts or "=" in parts[0]:
        raise ValueError(f"a variant is 'NAME [section.key=value ...]', got {text!r}")
    for item in parts[1:]:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ValueError(f"variant {parts[0]!r}: {item!r} is not section.key=value")
    return parts[0], parts[1:]


def expert_agreement(updater: Any, held_out: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Per agent: fraction of held-out expert rows where argmax of the critic is the expert's action
    (iqlma-joint critics are read through their marginal over the agent's own action, iqlma critics
    as they act: without the others' actions)."""
    import torch

    from mamql.learner.losses import marginalize_joint_q

    out = {}
    for i, agent in enumerate(updater.agents):
        critic = updater.critics[agent]
        with torch.no_grad():
            q = critic(torch.as_tensor(held_out[f"obs/{agent}"]).to(updater.device))
            if updater.algo == "iqlma-joint":
                q = marginalize_joint_q(q, updater.num_actions, i, updater.alpha)
        actions = torch.as_tensor(held_out[f"action/{agent}"]).to(q.device).long()
        out[agent] = float((q.argmax(-1) == actions).float().mean())
    return out


def run_variants(
    variants: list[tuple[str, list[str], Any]],
    demos: Mapping[str, np.ndarray],
    held_out: Mapping[str, np.ndarray],
    run_root: str | Path,
    report: Callable[[dict], None] = lambda record: None,
    progress: bool = False,
) -> list[dict]:
    """Train and evaluate every variant, (name, its `--set` overrides, its resolved config); returns
    (and reports as it goes) one record per variant."""
    from mamql.learner.trainer import Trainer
    from mamql.config import with_updates

    records = []
    for name, overrides, config in variants:
        config = with_updates(config, run={"root": str(run_root), "name": name})
        t0 = time.monotonic()
        trainer = Trainer(config, demos, progress=progress)
        try:
            result = trainer.train()
            agreement = expert_agreement(trainer.updater, held_out)
        finally:
            trainer.close()
        evals = result["eval"]
        record = {
            "variant": name,
            "overrides": overrides,
            "steps": result["step"],
            "greedy": float(np.mean(list(evals["greedy"].values()))),
            "sample": float(np.mean(list(evals["sample"].values()))),
            "expert_action_agreement": float(np.mean(list(agreement.values()))),
            "minutes": (time.monotonic() - t0) / 60,
            "checkpoint": result["checkpoint"],
        }
        records.append(record)
        report(record)
    return records


def ablate(args: Any) -> int:
    """`mamql ablate` entry point: prints one JSON line per variant, also appended to OUT/ablation.jsonl."""
    import argparse

    from mamql.learner.demos import collect_demos, load_demos
    from mamql.cli import config_from_args

    def config_for(overrides: list[str]):
        """--config, the shared --set, the variant's overrides, then --env/--steps (flags win, as everywhere)."""
        variant_args = argparse.Namespace(**{**vars(args), "overrides": [*args.overrides, *overrides]})
        return config_from_args(variant_args, {"env": "env.name", "steps": "learner.steps"})

    config = config_for([])
    env = config.env.name
    if args.demos:
        demos, meta = load_demos(args.demos)
        if meta.get("env") and meta["env"] != env:
            raise SystemExit(f"mamql ablate: demos are for env {meta['env']!r}, not {env!r}")
    else:
        demos, _ = collect_demos(env, config.learner.expert_transitions, seed=config.run.seed, env_kwargs=config.env.kwargs)
    held_out, _ = collect_demos(env, args.held_out, seed=HELD_OUT_SEED, env_kwargs=config.env.kwargs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def report(record: dict) -> None:
        line = json.dumps(record)
        print(line, flush=True)
        with open(out / "ablation.jsonl", "a") as f:
            f.write(line + "\n")

    # every variant's config resolved (and its errors raised) before any variant trains
    variants = [(name, overrides, config_for(overrides))
                for name, overrides in ([parse_variant(v) for v in args.variant] or [("base", [])])]
    run_variants(variants, demos, held_out, out / "runs", report, progress=not args.no_progress)
    return 0
