"""How often a policy takes each action, greedy and sampled.

    python -m mamql.experiments.policy_actions CHECKPOINT [CHECKPOINT ...] [--env ENV] [--episodes 8]

Prints one JSON line per checkpoint and mode: each agent's action frequencies over `episodes`
parallel copies stepped for the env's horizon (seeds seed .. seed+episodes-1), and the share of its
most frequent action. Why: a greedy return of 0 does not say whether the policy wanders or ignores
the state; a top share of 1.0 means argmax_a Q(s, a) is the same action in every state visited,
i.e. a per-action offset in the critic outweighs everything the state adds (docs/results.md, kitchen).
Each line also splits the critic's advantages at the visited states, A(s, a) = Q(s, a) - mean_a Q(s, .),
into the per-action offset b(a) = mean_s A(s, a) and the state's part A(s, a) - b(a) (advantage_split):
when the offsets' spread over actions exceeds the typical spread of the state's part, argmax is
state-blind while sampling (which follows every difference, not only the largest) still tracks the state.
And the mean entropy of the Boltzmann policy at those states (entropy_nats): a policy much softer than
its expert's loses return when sampled even where its argmax is right (docs/results.md, Gems).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from mamql.experiments.experts import boltzmann_entropy
from mamql.experiments.soft_results import REPORT_EVAL_SEED as DEFAULT_SEED  # the reported evaluation episodes


def advantage_split(q: np.ndarray) -> dict[str, Any]:
    """Q [N, A] at N states -> the per-action offset b(a) = mean over states of A(s, a) (A = Q minus its
    mean over actions), its spread over actions (std), and the state's part: the mean over states of the
    std over actions of A(s, a) - b(a). offset_to_state = offset_spread / state_spread."""
    adv = q - q.mean(-1, keepdims=True)
    offset = adv.mean(0)
    offset_spread, state_spread = float(offset.std()), float((adv - offset).std(-1).mean())
    return {"offsets": [round(float(b), 4) for b in offset], "offset_spread": round(offset_spread, 4),
            "state_spread": round(state_spread, 4), "offset_to_state": round(offset_spread / max(state_spread, 1e-12), 3)}


def action_frequencies(policy: Any, env_name: str, episodes: int = 8, seed: int = DEFAULT_SEED,
                       advantages: bool = False) -> dict[str, dict]:
    """{agent: {"frequencies": [...], "top_action": a, "top_share": f, "steps": n}} for `policy`
    (anything with act(obs) -> {agent: actions}) over `episodes` copies of `env_name`; with advantages
    (a policy with action_values(obs) and alpha, a BoltzmannPolicy) also advantage_split's figures of
    each agent's Q, as it acts, at the states visited, and the mean entropy (nats) of its Boltzmann
    policy softmax(Q / alpha) there."""
    from mamql.envs.registry import env_spec
    from mamql.envs.vector import VectorEnv

    spec = env_spec(env_name)
    counts = {a: np.zeros(int(spec.num_actions[a]), dtype=np.int64) for a in spec.agents}
    env = VectorEnv(env_name, episodes, seed=seed)
    qs: dict[str, list[np.ndarray]] = {a: [] for a in spec.agents}
    try:
        obs = env.reset()
        for _ in range(int(spec.max_steps)):
            for agent, q in (policy.action_values(obs) if advantages else {}).items():
                qs[agent].append(np.asarray(q, dtype=np.float64))
            actions = policy.act(obs)
            for agent, acts in actions.items():
                np.add.at(counts[agent], np.asarray(acts, dtype=np.int64), 1)
            obs = env.step(actions).obs
    finally:
        env.close()
    out = {}
    for agent, c in counts.items():
        freq = c / max(int(c.sum()), 1)
        out[agent] = {"frequencies": [round(float(f), 4) for f in freq], "top_action": int(freq.argmax()),
                      "top_share": round(float(freq.max()), 4), "steps": int(c.sum())}
        if qs.get(agent):
            q = np.concatenate(qs[agent])
            out[agent]["advantages"] = advantage_split(q)
            out[agent]["entropy_nats"] = round(float(boltzmann_entropy(q, float(policy.alpha)).mean()), 4)
    return out


def main(argv: list[str] | None = None) -> int:
    from mamql.learner.evaluate import load_updater, policy_from

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT")
    parser.add_argument("--env", help="default: the env the checkpoint was trained on")
    parser.add_argument("--episodes", type=int, default=8, help="parallel env copies (default 8)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="first copy's env seed, and the sampling seed")
    args = parser.parse_args(argv)
    for path in args.checkpoints:
        updater = load_updater(path)[0]
        env_name = args.env or updater.spec.name
        for mode in ("greedy", "sample"):
            agents = action_frequencies(policy_from(updater, mode=mode, seed=args.seed), env_name, args.episodes, args.seed,
                                        advantages=True)
            print(json.dumps({"checkpoint": path, "algo": updater.algo, "env": env_name, "mode": mode,
                              "episodes": args.episodes, "seed": args.seed, "agents": agents}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
