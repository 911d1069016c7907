"""Watching the agents: the text render's legend, the rgb_array images of Gems and Kitchen, and
`mamql envs play --gif` writing an animated GIF that Pillow decodes, one frame per step plus the reset."""

from __future__ import annotations

import argparse
import re

import numpy as np
import pytest
from PIL import Image

from mamql.config import InputError
from mamql.envs import cli
from mamql.envs.gems import ANSI_LEGEND as GEMS_LEGEND, COLOURS as GEMS_COLOURS, GemsEnv, GemsState, gems_rgb
from mamql.envs.kitchen import ANSI_LEGEND as KITCHEN_LEGEND, KitchenEnv


def run(argv):
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.mark.parametrize("env_cls, legend", [(GemsEnv, GEMS_LEGEND), (KitchenEnv, KITCHEN_LEGEND)])
def test_text_render_ends_with_a_legend(env_cls, legend):
    env = env_cls(render_mode="ansi")
    env.reset(seed=0)
    assert env.render().splitlines()[-1] == legend
    assert "agent_0" in legend and "agent_1" in legend


def test_play_render_prints_the_legend_with_every_frame(capsys):
    assert run(["envs", "play", "--env", "gems", "--episodes", "1", "--render", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    steps = int(re.search(r"\((\d+) steps\)", out).group(1))
    assert out.count(GEMS_LEGEND) == steps + 1  # the reset frame, then one per step
    assert "A agent_0 (red)" in out and "r/b/p red/blue/purple gem" in out


def test_gems_image_shows_gems_and_agents_where_they_are():
    state = GemsState(agent_pos=np.array([[0, 0], [4, 4]]), gem_pos=np.array([[0, 0], [2, 3], [4, 4]]),
                      gem_color=np.array([0, 2, 1]))
    img = gems_rgb(state, size=5, cell=16)
    assert img.shape == (80, 80, 3) and img.dtype == np.uint8
    centre = lambda r, c: tuple(img[r * 16 + 8, c * 16 + 8])  # noqa: E731
    assert centre(2, 3) == GEMS_COLOURS["purple"]
    assert centre(0, 0) == GEMS_COLOURS["agent_0"]  # the red gem under agent_0 stays visible
    assert tuple(img[1, 8]) == GEMS_COLOURS["agent_0"]  # agent_0's frame, top edge of its cell
    assert tuple(img[4 * 16 + 15, 4 * 16 + 8]) == GEMS_COLOURS["agent_1"]  # agent_1's frame, bottom edge
    assert centre(1, 1) == GEMS_COLOURS["floor"]
    shared = gems_rgb(GemsState(agent_pos=np.array([[1, 1], [1, 1]]), gem_pos=np.array([[3, 3]]),
                                gem_color=np.array([0])), size=5, cell=16)
    assert tuple(shared[17, 24]) == GEMS_COLOURS["agent_0"] and tuple(shared[31, 24]) == GEMS_COLOURS["agent_1"]


@pytest.mark.parametrize("env, episodes", [("gems", 2), ("kitchen", 1)])
def test_play_writes_a_gif_with_one_frame_per_step(tmp_path, capsys, env, episodes):
    out = tmp_path / "sub" / f"{env}.gif"
    assert run(["envs", "play", "--env", env, "--episodes", str(episodes), "--gif", str(out), "--fps", "5"]) == 0
    printed = capsys.readouterr().out
    steps = [int(n) for n in re.findall(r"\((\d+) steps\)", printed)]
    assert len(steps) == episodes and all(n > 0 for n in steps)
    frames = sum(n + 1 for n in steps)  # each episode: its reset frame and one per step
    assert f"gif: {out} ({frames} frames, 5 fps)" in printed
    with Image.open(out) as gif:
        assert gif.format == "GIF" and gif.n_frames == frames and gif.is_animated
        size = gif.size
        first = np.asarray(gif.convert("RGB"))
        for i in range(gif.n_frames):
            gif.seek(i)
            assert gif.size == size and gif.info["duration"] == 200
            gif.convert("RGB").load()
    red = np.array(GEMS_COLOURS["agent_0"])  # both envs draw agent_0 in this red
    assert (np.abs(first.astype(int) - red).sum(-1) < 30).any()
    assert (first[-2] == 255).all()  # the white caption and legend strip under the grid


def test_gif_bad_input_is_one_clear_error(tmp_path):
    with pytest.raises(InputError, match="must end in .gif"):
        run(["envs", "play", "--env", "gems", "--gif", str(tmp_path / "x.png")])
    with pytest.raises(InputError, match="fps"):
        run(["envs", "play", "--env", "gems", "--gif", str(tmp_path / "x.gif"), "--fps", "0"])
    with pytest.raises(SystemExit):  # argparse: --render and --gif exclude each other
        run(["envs", "play", "--env", "gems", "--render", "--gif", str(tmp_path / "x.gif")])
    with pytest.raises(InputError, match="no render mode 'rgb_array'"):
        run(["envs", "play", "--env", "corridor_env:CorridorEnv", "--expert", "random", "--gif", str(tmp_path / "c.gif")])
    assert not list(tmp_path.iterdir())
