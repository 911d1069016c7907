"""What a Gems policy collects: own-colour gems and purple collections per agent and episode.

    python -m mamql.experiments.gems_events EXPERT [--episodes 32] [--seed 1000]

EXPERT is `scripted`, `random` or `checkpoint:PATH` (sampling Boltzmann(Q/alpha)). Prints one JSON
line. Why: a return per agent does not say WHICH soft equilibrium a policy plays; Gems has one where
each agent collects its own gems (+1 each) and one where both stand on purple together (+6 each),
and the count of purple collections tells them apart (docs/results.md, "Soft experts").
"""

from __future__ import annotations

import argparse
import json

from mamql.envs.gems import OWN_GEM_REWARD, PURPLE_BONUS


def count_events(expert_spec: str, episodes: int, seed: int) -> dict:
    from mamql.envs.experts import make_expert
    from mamql.envs.gems import GemsEnv

    expert = make_expert("gems", kind=expert_spec, seed=seed)
    own = purple = steps = 0
    for episode in range(episodes):
        env = GemsEnv()
        obs, _ = env.reset(seed=seed + episode)
        while env.agents:
            actions = expert.act({a: o[None] for a, o in obs.items()})
            obs, rewards, _, _, _ = env.step({a: int(actions[a][0]) for a in env.agents})
            steps += 1
            for reward in rewards.values():
                purple += reward >= PURPLE_BONUS
                own += reward in (OWN_GEM_REWARD, OWN_GEM_REWARD + PURPLE_BONUS)
    per = episodes * 2  # agent-episodes
    return {"expert": expert_spec, "episodes": episodes, "seed": seed,
            "own_gems_per_agent_episode": own / per, "purple_collections_per_agent_episode": purple / per,
            "mean_episode_length": steps / episodes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("expert", help="scripted | random | checkpoint:PATH")
    parser.add_argument("--episodes", type=int, default=32, help="episodes, seeded seed .. seed+episodes-1")
    parser.add_argument("--seed", type=int, default=1000, help="first episode seed (and the expert's sampling seed)")
    args = parser.parse_args()
    print(json.dumps(count_events(args.expert, args.episodes, args.seed)))


if __name__ == "__main__":
    main()
