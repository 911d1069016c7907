"""`mamql envs list` and `mamql envs play`: inspect the envs and watch or score a policy."""

from __future__ import annotations

import argparse

from mamql.envs.experts import add_checkpoint_expert_args


def register(sub: argparse._SubParsersAction) -> None:
    envs_parser = sub.add_parser("envs", help="list environments, play experts")
    envs_sub = envs_parser.add_subparsers(dest="envs_command", metavar="ACTION", required=True)
    lst = envs_sub.add_parser("list", help="name, agents, observation shapes and actions of each env")
    lst.set_defaults(func=_list)
    play = envs_sub.add_parser("play", help="play episodes with an expert, print returns")
    play.add_argument("--env", default="gems", help="a name from `mamql envs list`, or package.module:ClassOrFactory")
    add_checkpoint_expert_args(play)
    play.add_argument("--episodes", type=int, default=5)
    play.add_argument("--seed", type=int, default=0)
    play.add_argument("--epsilon", type=float, default=0.0, help="random-action rate mixed into the expert")
    play.add_argument("--render", action="store_true", help="print text frames (env must support ansi)")
    play.add_argument("--quiet", action="store_true", help="print only the summary")
    play.set_defaults(func=_play)


def _list(args: argparse.Namespace) -> int:
    from mamql.envs.experts import SCRIPTED
    from mamql.envs.registry import ENTRY_POINT_GROUP, env_spec, list_envs

    for name in list_envs():
        try:
            s = env_spec(name)
        except Exception as exc:  # noqa: BLE001 - a broken plugin env must not hide the others
            print(f"{name:22s} unavailable: {' '.join(str(exc).split())}")
            continue
        agents = ", ".join(
            f"{a} obs {s.obs_dtype[a]}{list(s.obs_shape[a])} actions {s.num_actions[a]}" for a in s.agents
        )
        limit = f"{s.max_steps:4d}" if s.max_steps else "   -"  # 0: the env truncates by itself
        expert = "scripted" if name in SCRIPTED else "random  "
        print(f"{name:22s} max_steps {limit}  expert {expert}  {agents}")
    print(f"(also: any PettingZoo ParallelEnv as --env package.module:ClassOrFactory, or a name in the "
          f"{ENTRY_POINT_GROUP!r} entry-point group; docs/environments.md)")
    return 0


def _play(args: argparse.Namespace) -> int:
    import numpy as np

    from mamql.envs.experts import checkpoint_path, load_checkpoint_expert, make_expert
    from mamql.envs.registry import make

    render = {"render_mode": "ansi"} if args.render else {}
    if checkpoint_path(args.expert) is not None:  # played in the env (and env.kwargs) it was trained on
        expert = load_checkpoint_expert(args.env, args.expert)
        env = make(args.env, **expert.env_kwargs, **render)
        policy = expert.policy(args.temperature, "greedy" if args.greedy else "sample", args.epsilon, args.seed)
        info = expert.info(args.temperature, policy.mode)
        print(f"expert: checkpoint {info['checkpoint']} ({info['algo']} step {info['step']}, {info['sampling']} at alpha "
              f"{info['alpha']:g}, gamma {info['gamma']:g}, sha256 {info['sha256'][:12]})")
    else:
        env = make(args.env, **render)
        policy = make_expert(args.env, args.expert, seed=args.seed, epsilon=args.epsilon)
    agents = list(env.possible_agents)
    returns, terminated = [], []
    for ep in range(args.episodes):
        obs, _ = env.reset(seed=args.seed + ep)
        total = dict.fromkeys(agents, 0.0)
        while env.agents:
            if args.render:
                print(env.render(), end="\n\n")
            acts = policy.act({a: o[None] for a, o in obs.items()})
            obs, rew, term, _, _ = env.step({a: int(acts[a][0]) for a in env.agents})
            for a, r in rew.items():
                total[a] += r
        terminated.append(any(term.values()))
        returns.append([total[a] for a in agents])
        if not args.quiet:
            print(f"episode {ep}: " + "  ".join(f"{a} {total[a]:.2f}" for a in agents))
    returns = np.array(returns)
    mean = returns.mean(axis=0)
    print(f"mean over {args.episodes} episodes: " + "  ".join(f"{a} {m:.2f}" for a, m in zip(agents, mean)))
    done = returns[np.array(terminated, dtype=bool)]
    if len(done):  # the paper's expert figure counts only episodes that reached the gem limit
        per_agent = "  ".join(f"{a} {m:.2f}" for a, m in zip(agents, done.mean(axis=0)))
        print(f"terminated {len(done)}/{args.episodes}, mean over those: {per_agent}")
    return 0
