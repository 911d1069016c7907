"""Fixtures for tests/reliability: one tiny expert demo file per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def demos_path(tmp_path_factory):
    """500 scripted-expert Gems transitions in the learner's .npz format (collected in-process)."""
    from mamql.learner.demos import collect_demos, save_demos

    path = tmp_path_factory.mktemp("demos") / "demos.npz"
    batch, summary = collect_demos("gems", 500, seed=0, num_envs=4)
    save_demos(path, batch, summary)
    return str(path)
