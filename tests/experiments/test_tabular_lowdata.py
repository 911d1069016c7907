"""experiments.tabular_lowdata at a reduced size: what a table learns from few demos under each objective."""

import numpy as np
import torch

from mamql.experiments import tabular_lowdata as low


def test_demo_rows_are_episodes_of_the_grid():
    game = low.grid_game(3)
    policy = np.full(game.reward.shape, 0.2)
    rows = low.demo_rows(game, policy, 40, horizon=10, seed=1)
    s, a, s2 = (rows[k].numpy() for k in ("s", "a", "s2"))
    assert len(s) == 40 and (rows["b"] == 0).all()
    assert (game.transition[s, a, s2] == 1.0).all()  # every row is a move of the deterministic grid
    # rows are step-major over 4 parallel episodes: row t + 4 continues row t's episode
    assert (s[4:] == s2[:-4]).all()


def test_mamql_acts_uniformly_where_the_demos_never_went_and_bc_leads_on_a_table():
    torch.set_num_threads(1)
    result = low.lowdata(seed=5, counts=(15, 150), steps=600)
    few, more = result["15"], result["150"]
    assert few["coverage"] < more["coverage"] < 1.0
    for cell in (few, more):
        for method in low.METHODS:
            assert cell[method]["max_dev_unvisited"] < 1e-12  # exactly uniform at unvisited cells
    assert more["bc"]["return_share"] > few["bc"]["return_share"] > 0.1
    assert more["bc"]["return_share"] >= more["mamql"]["return_share"] - 0.02
