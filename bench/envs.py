"""Env throughput for actors: steps/s of one env and of VectorEnv(K=16), and expert actions/s.

Prints ONE JSON line. Steps are joint (all agents) env steps; random actions, auto-reset included.
"""

from __future__ import annotations

import json
import time

import numpy as np


def _single(name: str, seconds: float) -> float:
    from mamql.envs.registry import make

    env = make(name)
    rng = np.random.default_rng(0)
    n = [int(env.action_space(a).n) for a in env.possible_agents]
    env.reset(seed=0)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(100):
            if not env.agents:
                env.reset()
            acts = rng.integers(0, n)
            env.step({a: int(x) for a, x in zip(env.possible_agents, acts)})
        steps += 100
    return steps / (time.perf_counter() - start)


def _vector(name: str, k: int, seconds: float) -> float:
    from mamql.envs.vector import VectorEnv, transition_batch

    v = VectorEnv(name, k, seed=0)
    rng = np.random.default_rng(0)
    n = {a: int(v.envs[0].action_space(a).n) for a in v.agents}
    obs = v.reset()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(20):
            acts = {a: rng.integers(0, n[a], size=k) for a in v.agents}
            res = v.step(acts)
            transition_batch(obs, acts, res)
            obs = res.obs
        steps += 20 * k
    return steps / (time.perf_counter() - start)


def _expert(name: str, k: int, seconds: float) -> float:
    from mamql.envs.experts import make_expert
    from mamql.envs.vector import VectorEnv

    v = VectorEnv(name, k, seed=0)
    obs = v.reset()
    policy = make_expert(name)
    samples = [obs]
    for _ in range(20):
        obs = v.step(policy.act(obs)).obs
        samples.append(obs)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for o in samples:
            policy.act(o)
        calls += len(samples)
    return calls * k / (time.perf_counter() - start)  # joint actions (all agents) per second


def main() -> None:
    from mamql.envs.registry import list_envs

    seconds, k = 1.5, 16
    out = {"k": k, "single_steps_per_s": {}, "vector_steps_per_s": {}, "expert_actions_per_s": {}}
    for name in list_envs():
        out["single_steps_per_s"][name] = round(_single(name, seconds))
        out["vector_steps_per_s"][name] = round(_vector(name, k, seconds))
    for name in ("gems", "kitchen"):
        out["expert_actions_per_s"][name] = round(_expert(name, k, seconds))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
