"""Plots of experiment results (matplotlib, PNG): learning curves, reward recovery, sample efficiency.

Learning curves come from each run's status.jsonl: the mean return of the episodes the actors
finished in each status interval (Boltzmann sampling, i.e. how the policy behaves while training),
averaged over agents, smoothed, put on a common x grid and shown as mean ± std over seeds.

`mamql plot RUN...` overlays run directories on one figure with two reference lines, honest about
where they come from: the expert line is the demonstrator's own mean return, read from the runs'
demos metadata (what collection measured), and the random line is measured on the spot by seeded
uniformly random play in the runs' env; either can be given instead, and neither is drawn when the
runs disagree on demos or env (a note says why).
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

COLORS = {"mamql": "tab:blue", "iqlma": "tab:orange", "bc": "tab:green"}
LABELS = {"mamql": "MAMQL", "iqlma": "IQL-MA", "bc": "BC"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_curve(run_dir: Path, smooth: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(env steps, wall seconds, smoothed mean return) of one run."""
    steps, times, returns = [], [], []
    lines = [json.loads(x) for x in (run_dir / "status.jsonl").read_text().splitlines() if x.strip()]
    t0 = lines[0]["time"] if lines else 0.0
    for rec in lines:
        if rec.get("returns"):
            steps.append(rec["env_steps"])
            times.append(rec["time"] - t0)
            returns.append(float(np.mean(list(rec["returns"].values()))))
    y = np.asarray(returns, dtype=float)
    if len(y) >= smooth > 1:
        kernel = np.ones(smooth) / smooth
        y = np.convolve(np.pad(y, (smooth - 1, 0), mode="edge"), kernel, mode="valid")
    return np.asarray(steps, float), np.asarray(times, float), y


def parse_run_name(name: str) -> tuple[str, int, str, int]:
    """`<env>-<demos>-<algo>-s<seed>` (env may contain '/' replaced by '_')."""
    env, demos, algo, seed = name.rsplit("-", 3)
    return env, int(demos), algo, int(seed[1:])


def group_runs(run_dirs: list[Path]) -> dict[tuple[str, int, str], list[Path]]:
    groups: dict[tuple[str, int, str], list[Path]] = defaultdict(list)
    for run_dir in run_dirs:
        if (run_dir / "status.jsonl").exists():
            env, demos, algo, _ = parse_run_name(run_dir.name)
            groups[(env, demos, algo)].append(run_dir)
    return groups


def _mean_std_on_grid(curves: list[tuple[np.ndarray, np.ndarray]], points: int = 50):
    curves = [(x, y) for x, y in curves if len(x) >= 2]
    if not curves:
        return None
    end = min(x[-1] for x, _ in curves)
    grid = np.linspace(0, end, points)
    ys = np.stack([np.interp(grid, x, y) for x, y in curves])
    return grid, ys.mean(0), ys.std(0)


def learning_curves(results: Path, out_dir: Path) -> list[Path]:
    """One PNG per dataset: return vs env steps and vs wall-clock, one line per algorithm."""
    plt = _pyplot()
    baselines = json.loads((results / "baselines.json").read_text()) if (results / "baselines.json").exists() else {}
    groups = group_runs(sorted((results / "runs").iterdir()))
    written = []
    for env, demos in sorted({(e, d) for e, d, _ in groups}):
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        for algo in sorted(a for e, d, a in groups if (e, d) == (env, demos)):
            curves = [read_curve(r) for r in groups[(env, demos, algo)]]
            for ax, (xi, label) in zip(axes, ((0, "environment steps"), (1, "wall-clock seconds"))):
                stats = _mean_std_on_grid([(c[xi], c[2]) for c in curves])
                if stats is None:
                    continue
                grid, mean, std = stats
                color = COLORS.get(algo)
                ax.plot(grid, mean, color=color, label=f"{LABELS.get(algo, algo)} (n={len(curves)})")
                ax.fill_between(grid, mean - std, mean + std, color=color, alpha=0.2)
                ax.set_xlabel(label)
        base = baselines.get(f"{env}-{demos}", {})
        for ax in axes:
            if "expert" in base:
                ax.axhline(base["expert"], color="black", linestyle="--", label="expert")
            if "random" in base:
                ax.axhline(base["random"], color="gray", linestyle=":", label="random")
            ax.set_ylabel("mean return per agent (training episodes)")
            ax.grid(alpha=0.3)
        axes[0].legend(loc="best")
        fig.suptitle(f"{env}, {demos} expert transitions: learning curves (mean ± std over seeds)")
        fig.tight_layout()
        path = out_dir / f"curves-{env}-{demos}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def reward_scatter(results: Path, out_dir: Path) -> list[Path]:
    """Recovered vs true reward on expert data, per agent, for the first seed of each algorithm."""
    plt = _pyplot()
    written = []
    for run_dir in sorted((results / "runs").iterdir()):
        path = run_dir / "recovery.npz"
        if not path.exists() or not run_dir.name.endswith("-s0"):
            continue
        data = np.load(path, allow_pickle=False)
        agents = sorted({k.split("/", 1)[1] for k in data.files if k.startswith("r_hat/")})
        fig, axes = plt.subplots(1, len(agents), figsize=(5 * len(agents), 4.5), squeeze=False)
        for ax, agent in zip(axes[0], agents):
            r_hat, r_true = data[f"r_hat/{agent}"], data[f"r_true/{agent}"]
            corr = float(np.corrcoef(r_hat, r_true)[0, 1]) if r_hat.std() > 0 and r_true.std() > 0 else float("nan")
            jitter = np.random.default_rng(0).normal(0, 0.05, len(r_true))
            ax.scatter(r_true + jitter, r_hat, s=4, alpha=0.3)
            ax.set_xlabel("true reward (jittered)")
            ax.set_ylabel("recovered reward r̂ = Q(s,a) − γV(s')")
            ax.set_title(f"{agent}: Pearson {corr:.2f}")
            ax.grid(alpha=0.3)
        fig.suptitle(f"reward recovery on expert data: {run_dir.name}")
        fig.tight_layout()
        out = out_dir / f"recovery-{run_dir.name}.png"
        fig.savefig(out, dpi=110)
        plt.close(fig)
        written.append(out)
    return written


def sample_efficiency(results: Path, out_dir: Path) -> list[Path]:
    """Final greedy return vs number of expert transitions, per algorithm (needs >= 2 dataset sizes)."""
    summary = results / "summary.csv"
    if not summary.exists():
        return []
    rows = list(csv.DictReader(summary.open()))
    by: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        by[(row["env"], row["algo"])][int(row["demos"])].append(float(row["greedy_return"]))
    written = []
    plt = _pyplot()
    for env in sorted({e for e, _ in by}):
        sizes = sorted({n for (e, _), d in by.items() if e == env for n in d})
        if len(sizes) < 2:
            continue
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for (e, algo), points in sorted(by.items()):
            if e != env:
                continue
            xs = sorted(points)
            ax.errorbar(xs, [np.mean(points[x]) for x in xs], yerr=[np.std(points[x]) for x in xs],
                        marker="o", capsize=4, color=COLORS.get(algo), label=LABELS.get(algo, algo))
        ax.set_xscale("log")
        ax.set_xlabel("expert transitions")
        ax.set_ylabel("final mean return per agent (greedy)")
        ax.set_title(f"{env}: sample efficiency")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        out = out_dir / f"sample-efficiency-{env}.png"
        fig.savefig(out, dpi=110)
        plt.close(fig)
        written.append(out)
    return written


def plot_results(results: Path, out_dir: Path | None = None) -> list[Path]:
    """Every plot of a results/<suite> directory, into out_dir (default results/plots)."""
    out_dir = out_dir or results / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    return learning_curves(results, out_dir) + reward_scatter(results, out_dir) + sample_efficiency(results, out_dir)


def single_run(run_dir: Path, out: Path | None = None, refs: dict | None = None) -> list[Path]:
    """Learning curve of one run directory (from `mamql local` or an experiment); default
    <run>/plots/curve.png."""
    return local_runs([run_dir], out or run_dir / "plots" / "curve.png", refs)


def local_runs(run_dirs: list[Path], out: Path, refs: dict | None = None) -> list[Path]:
    """Learning curves of `mamql local` runs (status.jsonl) overlaid, one line per run: mean return
    per agent of the training episodes vs env steps and vs wall-clock seconds, with the reference lines."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for run_dir in run_dirs:
        steps, times, returns = read_curve(run_dir)
        for ax, x in zip(axes, (steps, times)):
            ax.plot(x, returns, label=run_dir.name)
    for ax, label in zip(axes, ("environment steps", "wall-clock seconds")):
        draw_references(ax, refs)
        ax.set_xlabel(label)
        ax.set_ylabel("mean return per agent (training episodes)")
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
    title = run_dirs[0].name if len(run_dirs) == 1 else f"{len(run_dirs)} runs"
    fig.suptitle(f"{title}: learning curve{'s' if len(run_dirs) > 1 else ''} (smoothed over 5 status lines)")
    return [_save(fig, out)]


def _save(fig, out: Path) -> Path:
    plt = _pyplot()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


# --------------------------------------------------------------------------- reference lines

def draw_references(ax, refs: dict | None) -> None:
    """Horizontal expert and random lines: refs = {"expert": (value, label), "random": (value, label)}."""
    styles = {"expert": ("black", "--"), "random": ("gray", ":")}
    for kind, (value, label) in (refs or {}).items():
        color, style = styles[kind]
        ax.axhline(value, color=color, linestyle=style, label=f"{label}: {value:.2f}")


def run_demos(run_dir: Path) -> Path | None:
    """The demos a run learned from: `mamql local` records them in local.json; `mamql train` keeps
    the demos it collected as demos.npz (demos given by --demos are not recorded there)."""
    try:
        demos = json.loads((run_dir / "local.json").read_text()).get("demos")
    except (OSError, ValueError):
        demos = None
    if demos and Path(demos).exists():
        return Path(demos)
    return run_dir / "demos.npz" if (run_dir / "demos.npz").exists() else None


def demos_expert_return(path: Path) -> float | None:
    """The demonstrator's mean return per agent, from the demos' metadata (what collect_demos measured
    over the complete episodes it recorded); None when the metadata has none."""
    from mamql.learner.demos import load_demos

    try:
        meta = load_demos(path)[1]
    except Exception:  # noqa: BLE001 - a broken demos file just gets no line
        return None
    returns = meta.get("mean_return") or {}
    return float(np.mean(list(returns.values()))) if returns else None


def run_env(run_dir: Path) -> tuple[str, dict] | None:
    from mamql.config import load_config

    try:
        config = load_config(run_dir / "config.yaml")
    except Exception:  # noqa: BLE001 - no (readable) config: no env to play
        return None
    return config.env.name, dict(config.env.kwargs)


def random_play_return(env: str, env_kwargs: dict, episodes: int) -> float:
    """Mean return per agent of uniformly random play, over `episodes` seeded episodes."""
    from mamql.envs.experts import make_expert
    from mamql.learner.evaluate import run_episodes

    result = run_episodes(make_expert(env, kind="random", seed=0, **env_kwargs), env, episodes, env_kwargs=env_kwargs)
    return float(np.mean(list(result["mean_return"].values())))


def references(run_dirs: list[Path], expert: float | None = None, random: float | None = None,
               random_episodes: int = 32) -> tuple[dict, list[str]]:
    """(refs for draw_references, notes on what was left out and why). Given values win; otherwise
    the expert line is the demonstrator's mean return from the runs' demos (drawn when every run
    names demos and they agree), and the random line is measured: uniformly random play in the runs'
    env (drawn when all runs share one env and kwargs), random_episodes seeded episodes."""
    refs, notes = {}, []
    if expert is not None:
        refs["expert"] = (float(expert), "expert (given)")
    else:
        demos = [run_demos(d) for d in run_dirs]
        values = {demos_expert_return(p) if p else None for p in demos}
        if None in values or not values:
            notes.append("no expert line: a run has no recorded demos with returns (give --expert-return)")
        elif len(values) > 1:
            notes.append("no expert line: the runs' demos have different expert returns (give --expert-return)")
        else:
            refs["expert"] = (values.pop(), "expert (demos)")
    if random is not None:
        refs["random"] = (float(random), "random (given)")
    elif random_episodes > 0:
        envs = [run_env(d) for d in run_dirs]
        if None in envs or any(e != envs[0] for e in envs):
            notes.append("no random line: the runs do not share one env (give --random-return)")
        else:
            name, kwargs = envs[0]
            refs["random"] = (random_play_return(name, kwargs, random_episodes), f"random ({random_episodes} episodes)")
    return refs, notes


def read_evals(run_dir: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Eval records of a `mamql train` run (metrics.jsonl "event": "eval"): updates, and per mode
    ("greedy", "sample") the mean return per agent."""
    return read_eval_records(run_dir / "metrics.jsonl")


def read_eval_records(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """read_evals of any JSONL holding a trainer's records (metrics.jsonl, or a copy of its eval lines)."""
    steps, modes = [], {"greedy": [], "sample": []}
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            rec = json.loads(line)
            if rec.get("event") != "eval":
                continue
            steps.append(rec["step"])
            for mode in modes:
                vals = [v for k, v in rec.items() if k.startswith(f"eval/{mode}/")]
                modes[mode].append(float(np.mean(vals)) if vals else float("nan"))
    return np.asarray(steps), {m: np.asarray(v) for m, v in modes.items()}


def is_trainer_run(run_dir: Path) -> bool:
    path = run_dir / "metrics.jsonl"
    return path.exists() and '"event": "eval"' in path.read_text()


def trainer_runs(run_dirs: list[Path], out: Path, refs: dict | None = None) -> list[Path]:
    """Evaluation curves of several `mamql train` runs on one figure (greedy and sampled panels),
    e.g. MAMQL vs BC vs IQL-MA on the same demos, with the reference lines."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for run_dir in run_dirs:
        steps, modes = read_evals(run_dir)
        for ax, mode in zip(axes, ("greedy", "sample")):
            ax.plot(steps, modes[mode], marker="o", label=run_dir.name)
    for ax, mode in zip(axes, ("greedy", "sampled (Boltzmann)")):
        draw_references(ax, refs)
        ax.set_title(f"{mode} policy")
        ax.set_xlabel("learner updates")
        ax.set_ylabel("mean return per agent (evaluation episodes)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("evaluation return vs learner updates")
    return [_save(fig, out)]
