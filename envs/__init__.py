"""Environments (PettingZoo ParallelEnv), their registry, a vectorised stepper and scripted experts.

`make(name)` builds an env, `env_spec(name)` describes it for the learner, `VectorEnv` steps K
copies for an actor, `make_expert(name)` gives a batched Policy.
"""

from mamql.envs.registry import EnvSpec, canonical_name, env_spec, list_envs, make

__all__ = ["EnvSpec", "canonical_name", "env_spec", "list_envs", "make", "VectorEnv", "make_expert"]


def __getattr__(name: str):
    # Lazy so that `import envs` stays light; vector and experts pull in more code.
    if name == "VectorEnv":
        from mamql.envs.vector import VectorEnv

        return VectorEnv
    if name == "make_expert":
        from mamql.envs.experts import make_expert

        return make_expert
    raise AttributeError(name)
