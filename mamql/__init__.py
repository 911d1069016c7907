"""mamql: distributed actor-learner system for multi-agent inverse RL (Multi-Agent Marginal Q-Learning)."""

__version__ = "0.1.0"
