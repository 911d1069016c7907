"""`mamql envs list` and `mamql envs play`: inspect the envs and watch or score a policy.

Watching: `--render` prints every frame as text (a header, the grid and a legend line); `--gif
out.gif` writes the episodes as an animated GIF (Pillow), each frame the env's rgb_array image with
the episode, step and returns so far and a colour legend under it. Gems and Kitchen have both render
modes; any env with rgb_array (MPE) makes a GIF, without its legend.
"""

from __future__ import annotations

import argparse

from mamql.envs.experts import add_checkpoint_expert_args


def register(sub: argparse._SubParsersAction) -> None:
    envs_parser = sub.add_parser("envs", help="list environments, play experts")
    envs_sub = envs_parser.add_subparsers(dest="envs_command", metavar="ACTION", required=True)
    lst = envs_sub.add_parser("list", help="name, agents, observation shapes and actions of each env",
                              epilog="examples:\n  mamql envs list")
    lst.set_defaults(func=_list)
    play = envs_sub.add_parser(
        "play", help="play episodes with an expert, print returns; --render / --gif to watch them",
        epilog="examples:\n  mamql envs play --env gems --expert scripted --episodes 1 --render\n"
               "  mamql envs play --env kitchen --expert checkpoint:runs/r/checkpoints/learner/latest.pt "
               "--episodes 1 --gif kitchen.gif\n"
               "  mamql envs play --env mpe/simple_spread --expert random --episodes 10 --quiet")
    play.add_argument("--env", default="gems", help="a name from `mamql envs list`, or package.module:ClassOrFactory")
    add_checkpoint_expert_args(play)
    play.add_argument("--episodes", type=int, default=5, help="episodes to play")
    play.add_argument("--seed", type=int, default=0, help="episode i is reset with seed + i")
    play.add_argument("--epsilon", type=float, default=0.0,
                      help="probability of a uniformly random action instead of the expert's, per agent and step")
    watch = play.add_mutually_exclusive_group()
    watch.add_argument("--render", action="store_true",
                       help="print every frame as text: header, grid, legend (envs with render mode ansi: gems, kitchen)")
    watch.add_argument("--gif", default=None, metavar="OUT.gif",
                       help="write the episodes as an animated GIF with a legend (envs with render mode rgb_array)")
    play.add_argument("--fps", type=float, default=4.0, help="GIF frames per second")
    play.add_argument("--quiet", action="store_true", help="print only the summary, not one line per episode")
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
    from mamql.config import InputError

    if args.gif is not None and not args.gif.lower().endswith(".gif"):
        raise InputError(f"--gif {args.gif}: the file name must end in .gif")
    if args.fps <= 0:
        raise InputError(f"--fps must be > 0, got {args.fps}")
    render = {"render_mode": "ansi"} if args.render else {"render_mode": "rgb_array"} if args.gif else {}
    try:
        return _play_episodes(args, render)
    except ValueError as exc:  # an env without the render mode asked for
        if render and "render_mode" in str(exc) and not isinstance(exc, InputError):
            raise InputError(f"env {args.env!r} cannot render that way: {exc}") from None
        raise


def _play_episodes(args: argparse.Namespace, render: dict) -> int:
    import numpy as np

    from mamql.envs.experts import checkpoint_path, load_checkpoint_expert, make_expert
    from mamql.envs.registry import make

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
    modes = list(getattr(env, "metadata", {}).get("render_modes", []))
    if render and render["render_mode"] not in modes:
        from mamql.config import InputError

        raise InputError(f"env {args.env!r} has no render mode {render['render_mode']!r} "
                         f"(its render_modes: {', '.join(modes) or 'none'})")
    agents = list(env.possible_agents)
    returns, terminated, frames = [], [], []
    for ep in range(args.episodes):
        obs, _ = env.reset(seed=args.seed + ep)
        total = dict.fromkeys(agents, 0.0)
        steps = 0
        while True:
            if args.render:
                print(env.render(), end="\n\n")
            elif args.gif:
                caption = [f"{args.env}  episode {ep}  step {steps}",
                           "return  " + "  ".join(f"{a} {total[a]:.1f}" for a in agents)]
                frames.append(gif_frame(env.render(), caption, getattr(env, "rgb_legend", ())))
            if not env.agents:  # the final frame shows where the episode ended
                break
            acts = policy.act({a: o[None] for a, o in obs.items()})
            obs, rew, term, _, _ = env.step({a: int(acts[a][0]) for a in env.agents})
            steps += 1
            for a, r in rew.items():
                total[a] += r
        terminated.append(any(term.values()))
        returns.append([total[a] for a in agents])
        if not args.quiet:
            print(f"episode {ep}: " + "  ".join(f"{a} {total[a]:.2f}" for a in agents) + f"  ({steps} steps)")
    if args.gif:
        save_gif(frames, args.gif, args.fps)
        print(f"gif: {args.gif} ({len(frames)} frames, {args.fps:g} fps)")
    returns = np.array(returns)
    mean = returns.mean(axis=0)
    print(f"mean over {args.episodes} episodes: " + "  ".join(f"{a} {m:.2f}" for a, m in zip(agents, mean)))
    done = returns[np.array(terminated, dtype=bool)]
    if len(done):  # the paper's expert figure counts only episodes that reached the gem limit
        per_agent = "  ".join(f"{a} {m:.2f}" for a, m in zip(agents, done.mean(axis=0)))
        print(f"terminated {len(done)}/{args.episodes}, mean over those: {per_agent}")
    return 0


GIF_MIN_SIDE = 320  # px: small grids are scaled up by a whole factor (crisp cells) to at least this


def gif_frame(image, caption: list[str], legend=()):
    """One GIF frame: the env's RGB image scaled up, with the caption lines and the legend (label,
    colour, "frame" | "fill") under it."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    image = np.asarray(image, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"render_mode rgb_array must give an [H, W, 3] image, got shape {image.shape}")
    scale = max(1, -(-GIF_MIN_SIDE // min(image.shape[:2])))
    grid = Image.fromarray(image.repeat(scale, axis=0).repeat(scale, axis=1))
    font = ImageFont.load_default(size=13)
    line = 18
    frame = Image.new("RGB", (grid.width, grid.height + line * (len(caption) + len(legend)) + 8), "white")
    frame.paste(grid, (0, 0))
    draw = ImageDraw.Draw(frame)
    y = grid.height + 4
    for text in caption:
        draw.text((6, y), text, fill="black", font=font)
        y += line
    for label, colour, kind in legend:
        box = (6, y + 2, 19, y + 15)
        if kind == "frame":
            draw.rectangle(box, outline=tuple(colour), width=3)
        else:
            draw.rectangle(box, fill=tuple(colour))
        draw.text((26, y), label, fill="black", font=font)
        y += line
    return frame


def save_gif(frames: list, path: str, fps: float) -> None:
    """An animated GIF that loops; every frame shown 1/fps s."""
    from pathlib import Path

    if not frames:
        raise ValueError("no frames to write")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=round(1000 / fps), loop=0,
                   optimize=False, disposal=1)
