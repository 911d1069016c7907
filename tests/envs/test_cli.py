"""`mamql envs list` and `mamql envs play` through the real argument parser."""

import argparse

from mamql.envs import cli


def run(argv):
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_list(capsys):
    assert run(["envs", "list"]) == 0
    out = capsys.readouterr().out
    assert "gems" in out and "uint8[5, 15, 15]" in out and "mpe/simple_adversary" in out


def test_play_gems_with_render(capsys):
    assert run(["envs", "play", "--env", "gems", "--episodes", "2", "--render", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count("episode ") == 2 and "mean over 2 episodes: agent_0" in out
    assert "step 0/45" in out  # a rendered frame


def test_play_random_kitchen(capsys):
    assert run(["envs", "play", "--env", "kitchen", "--expert", "random", "--episodes", "1"]) == 0
    assert "mean over 1 episodes" in capsys.readouterr().out
