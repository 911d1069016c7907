"""`mamql local`'s status line as pure functions: hand-made /metrics scrapes in, records and text out."""

import re
from pathlib import Path

import pytest

from mamql.local import RateWindow, StatusLine, duration, format_status, legend, summary


def actor(steps: float, returns: tuple[float, float] = (0.0, 0.0), episodes: float = 0.0) -> dict:
    """An actor's scrape: env steps and the episode-return summary of two agents (cumulative)."""
    out = {("mamql_actor_env_steps_total", ()): steps}
    for agent, value in zip(("agent_0", "agent_1"), returns):
        out[("mamql_actor_episode_return_sum", (("agent", agent),))] = value
        out[("mamql_actor_episode_return_count", (("agent", agent),))] = episodes
    return out


def learner(updates: float, version: float = 0.0, lag_sum: float = 0.0, lag_n: float = 0.0) -> dict:
    return {("mamql_learner_updates_total", ()): updates, ("mamql_learner_weight_version", ()): version,
            ("mamql_learner_policy_lag_sum", ()): lag_sum, ("mamql_learner_policy_lag_count", ()): lag_n}


def replay(inserted: float, sampled: float, size: float) -> dict:
    online = (("table", "online"),)
    return {("mamql_replay_inserted_transitions_total", online): inserted,
            ("mamql_replay_sampled_transitions_total", online): sampled,
            ("mamql_replay_table_size", online): size}


def record(**changes) -> dict:
    base = {"time": 0.0, "elapsed_s": 95.0, "updates": 206.0, "updates_target": 300, "eta_s": 78.0,
            "env_steps": 50_000.0, "env_fps": 950.0, "insert_per_s": 120.0, "sample_per_s": 960.0,
            "updates_per_s": 1.2, "online_size": 5000.0, "min_online": 2000, "policy_lag": 1.3,
            "weight_version": 21.0, "returns": {}, "returns_recent": {"agent_0": 2.14, "agent_1": 2.4},
            "episodes": 60.0, "actors_alive": 1}
    return {**base, **changes}


def test_line_shows_progress_eta_recent_returns_and_named_fields():
    line = format_status(record())
    assert "updates 206/300 (1.2/s, ETA 1m18s)" in line
    assert "return agent_0=2.1 agent_1=2.4" in line  # the recent mean, though no episode ended this interval
    assert "env 950/s" in line and "replay in 120/s out 960/s" in line and "v21 lag 1.3" in line
    assert line.startswith("1m35s | ") and "actors 1" in line


def test_line_while_the_learner_waits_for_its_first_batch():
    line = format_status(record(updates=0.0, online_size=1200.0, eta_s=None, updates_per_s=0.0,
                                returns_recent={}, policy_lag=None))
    assert "updates 0/300 (waiting for 2,000 online transitions in replay, 1,200 so far)" in line
    assert "return - (no episode ended yet)" in line and "lag -" in line
    assert "updates 0/300 (starting) |" in format_status(record(updates=0.0, eta_s=None, updates_per_s=0.0))


def test_line_without_a_target_has_no_eta_and_shows_a_bottleneck_when_given():
    line = format_status(record(updates_target=0, eta_s=None, bottleneck="learner-bound: actors wait 80 %"))
    assert "updates 206 (1.2/s)" in line and "ETA" not in line
    assert line.endswith(" | learner-bound: actors wait 80 %")


def test_legend_explains_every_abbreviation_once():
    text = "\n".join(legend(2.0))
    assert text.startswith("status every 2 s; rates per second over the last 20 s")
    for term in ("updates done/target", "ETA", "return:", "env:", "replay in/out", "vN:", "lag:"):
        assert term in text, term


@pytest.mark.parametrize("seconds, text", [(0.4, "0s"), (45, "45s"), (185, "3m05s"), (3720, "1h02m")])
def test_duration(seconds, text):
    assert duration(seconds) == text


def test_bursty_actors_never_read_zero_and_returns_carry_across_intervals():
    """An actor held back by the rate limiter steps once every 5 intervals of 2 s: the env rate
    stays positive in between, and the returns of its episodes stay on the line."""
    status = StatusLine(target_updates=300, min_online=2000, recent_episodes=4, now=0.0)
    steps = episodes = ret = 0.0
    records = []
    for i in range(1, 41):
        if i % 5 == 0:  # a burst: 2,560 steps, 2 episodes ending with return 3 each
            steps += 2560
            episodes += 2
            ret += 6.0
        scraped = {"actor-0": actor(steps, (ret, ret), episodes), "learner": learner(2.0 * i, i // 5, i, i),
                   "replay": replay(steps, 16.0 * i, min(steps, 5000))}
        records.append(status.observe(scraped, now=2.0 * i, actors_alive=1))
    after_first_burst = records[4:]
    assert all(r["env_fps"] > 0 for r in after_first_burst)
    assert all(r["insert_per_s"] > 0 and r["sample_per_s"] > 0 for r in after_first_burst)
    # in a steady burst pattern the rate over the window is the true mean rate, 2,560 per 10 s
    assert records[-1]["env_fps"] == pytest.approx(256.0, rel=0.3)
    assert records[-1]["updates_per_s"] == pytest.approx(1.0)
    assert records[-1]["eta_s"] == pytest.approx(300 - 80)
    assert all(r["returns_recent"] == {"agent_0": 3.0, "agent_1": 3.0} for r in after_first_burst)
    # the per-interval returns (what experiments.plots draws) stay empty between bursts
    assert [bool(r["returns"]) for r in records[:10]] == [False] * 4 + [True] + [False] * 4 + [True]
    assert records[-1]["episodes"] == 16 and records[-1]["env_steps"] == steps
    assert records[-1]["policy_lag"] == pytest.approx(1.0)
    assert "env 0/s" not in "\n".join(format_status(r) for r in after_first_burst)


def test_recent_returns_cover_the_latest_episodes_and_first_ones_are_kept():
    status = StatusLine(recent_episodes=4, now=0.0)
    total_ret = count = 0.0
    for i, value in enumerate([1.0, 1.0, 5.0, 9.0], start=1):  # 2 episodes of return `value` per interval
        total_ret, count = total_ret + 2 * value, count + 2
        rec = status.observe({"actor-0": actor(100.0 * i, (total_ret, total_ret), count)}, now=float(i), actors_alive=1)
    assert rec["returns_recent"]["agent_0"] == pytest.approx(7.0)  # the latest 4 episodes: 5, 5, 9, 9
    assert status.first_returns["agent_0"] == pytest.approx(1.0)  # the first 4: 1, 1, 1, 1


def test_restarted_actor_counts_from_zero_and_rates_never_go_negative():
    status = StatusLine(now=0.0)
    a = status.observe({"actor-0": actor(5000.0)}, now=2.0, actors_alive=1)
    b = status.observe({"actor-0": actor(300.0)}, now=4.0, actors_alive=1)  # a new process: counter restarted
    assert b["env_steps"] == a["env_steps"] + 300 and b["env_fps"] > 0


def test_rates_read_zero_only_after_the_history_without_work():
    window = RateWindow(window_s=20.0, history_s=120.0)
    window.add(0.0, {"n": 0.0})
    window.add(2.0, {"n": 100.0})
    for t in range(4, 122, 2):
        window.add(float(t), {"n": 100.0})
        assert window.rate("n") > 0, t  # the last change is within the history
    window.add(130.0, {"n": 100.0})
    window.add(132.0, {"n": 100.0})
    assert window.rate("n") == 0.0


def test_summary_names_this_runs_paths_and_shows_learning():
    last = record(updates=296.0, elapsed_s=100.0, returns_recent={"agent_0": 4.0, "agent_1": 5.0})
    lines = summary({"agent_0": 0.3, "agent_1": 0.2}, last, Path("runs/my run"), 300, True, 185.0, updates=300)
    text = "\n".join(lines)
    assert lines[0].startswith("done in 3m05s: 300 updates, 50,000 env steps, 60 episodes")
    assert "agent_0 0.3 -> 4.0, agent_1 0.2 -> 5.0" in text
    assert re.search(r"^  mamql evaluate --run 'runs/my run' ", text, re.M)
    assert re.search(r"^  mamql plot 'runs/my run' .*runs/my run/plots/curve.png", text, re.M)
    assert "mamql local --resume 'runs/my run' --steps 600" in text
    assert "next:" not in "\n".join(summary(None, last, Path("runs/x"), 300, False, 10.0))  # nothing learned
