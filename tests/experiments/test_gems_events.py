"""experiments/gems_events: counting own-gem and purple collections tells Gems' equilibria apart."""

from mamql.experiments.gems_events import count_events


def test_scripted_expert_collects_purple_and_random_play_does_not():
    scripted = count_events("scripted", episodes=4, seed=1000)
    random = count_events("random", episodes=4, seed=1000)
    assert scripted["purple_collections_per_agent_episode"] >= 2.0  # the cooperative equilibrium
    assert random["purple_collections_per_agent_episode"] <= 0.25
    assert random["mean_episode_length"] == 45.0  # random play rarely ends an episode by gems
