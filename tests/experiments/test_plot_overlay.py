"""`mamql plot` over several run directories: one overlaid figure written where --out says, with the
expert line from the runs' demos and the random line measured in the runs' env (or given)."""

import json

import numpy as np
import pytest

from mamql.cli import main
from mamql.config import dump_config, load_config
from mamql.experiments.plots import draw_references, references
from mamql.learner.demos import collect_demos, save_demos


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    path = tmp_path_factory.mktemp("demos") / "demos.npz"
    batch, meta = collect_demos("gems", 200, seed=0)
    save_demos(path, batch, meta)
    return path, float(np.mean(list(meta["mean_return"].values())))


def local_run(root, name, slope, demos_path, env="gems"):
    run = root / name
    run.mkdir(parents=True)
    lines = [json.dumps({"time": 100.0 + i, "env_steps": 500.0 * i,
                         "returns": {"agent_0": slope * i, "agent_1": slope * i}}) for i in range(20)]
    (run / "status.jsonl").write_text("\n".join(lines) + "\n")
    (run / "config.yaml").write_text(dump_config(load_config(None, [f"env.name={env}"])))
    (run / "local.json").write_text(json.dumps({"actors": 1, "demos": str(demos_path)}))
    return run


def train_run(root, name, demos_path):
    run = root / name
    run.mkdir(parents=True)
    evals = [{"step": s, "time": 1.0, "event": "eval", "eval/greedy/agent_0": s / 10, "eval/greedy/agent_1": s / 10,
              "eval/sample/agent_0": s / 20, "eval/sample/agent_1": s / 20} for s in (10, 20, 30)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evals))
    (run / "config.yaml").write_text(dump_config(load_config(None, ["env.name=gems"])))
    (run / "demos.npz").write_bytes(demos_path.read_bytes())
    return run


def is_png(path):
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_several_local_runs_make_one_figure_at_out(tmp_path, demos, capsys):
    runs = [local_run(tmp_path / "runs", f"r{i}", 0.1 * (i + 1), demos[0]) for i in range(3)]
    out = tmp_path / "figs" / "compare.png"
    assert main(["plot", *map(str, runs), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out.split() == [str(out)] and "no expert line" not in captured.err
    assert is_png(out)
    assert not any((r / "plots").exists() for r in runs)  # --out honoured: nothing written elsewhere


def test_references_from_the_runs_demos_and_random_play(tmp_path, demos):
    runs = [local_run(tmp_path, f"r{i}", 1.0, demos[0]) for i in range(2)]
    refs, notes = references(runs, random_episodes=8)
    assert notes == []
    assert refs["expert"] == (pytest.approx(demos[1]), "expert (demos)") and demos[1] > 5  # the scripted expert
    random_value, label = refs["random"]
    assert 0 <= random_value < 2 and label == "random (8 episodes)"
    assert references(runs, random_episodes=8) == (refs, [])  # seeded: the same number every time
    given, _ = references(runs, expert=13.2, random=0.3)
    assert given == {"expert": (13.2, "expert (given)"), "random": (0.3, "random (given)")}
    # runs that disagree get no line, and a note saying why
    other = local_run(tmp_path, "k", 1.0, demos[0], env="kitchen")
    (other / "local.json").write_text(json.dumps({"demos": None}))
    refs, notes = references([runs[0], other], random_episodes=8)
    assert refs == {} and len(notes) == 2


def test_reference_lines_are_drawn_at_their_values():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    draw_references(ax, {"expert": (25.8, "expert (demos)"), "random": (0.28, "random (32 episodes)")})
    assert sorted(line.get_ydata()[0] for line in ax.lines) == [0.28, 25.8]
    assert sorted(line.get_label() for line in ax.lines) == ["expert (demos): 25.80", "random (32 episodes): 0.28"]
    plt.close(fig)


def test_train_runs_into_an_out_folder_and_defaults(tmp_path, demos, capsys):
    trained = [train_run(tmp_path, f"t{i}", demos[0]) for i in range(2)]
    local = local_run(tmp_path, "l0", 1.0, demos[0])
    folder = tmp_path / "out"
    assert main(["plot", *map(str, trained), str(local), "--out", str(folder), "--random-episodes", "0"]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["curves.png", "eval-curves.png"]
    assert all(is_png(p) for p in folder.iterdir())
    capsys.readouterr()
    assert main(["plot", str(local), "--no-references"]) == 0  # one local run: its own plots/curve.png
    assert capsys.readouterr().out.split() == [str(local / "plots" / "curve.png")] and is_png(local / "plots" / "curve.png")
    # one .png for what makes two figures is refused in one line, and nothing is written
    assert main(["plot", str(trained[0]), str(local), "--out", str(tmp_path / "x.png")]) == 2
    assert "give a folder" in capsys.readouterr().err and not (tmp_path / "x.png").exists()
