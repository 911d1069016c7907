"""Layering rules from STYLE.md, checked on the source (a fresh interpreter per package)."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE_MODULES = ["mamql.config", "mamql.batch", "mamql.codec", "mamql.metrics", "mamql.log", "mamql.policy"]
# What actors may take from learner/: network and policy definitions only.
ACTOR_ALLOWED_FROM_LEARNER = {"mamql.learner", "mamql.learner.networks", "mamql.learner.policy"}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def loaded_after_import(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return set(out.stdout.split())


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_imports_neither_torch_nor_grpc(module):
    loaded = loaded_after_import(module)
    assert "torch" not in loaded
    assert "grpc" not in loaded


def test_replay_never_imports_torch():
    sources = sorted((ROOT / "replay").rglob("*.py"))
    assert sources, "replay/ has no modules"
    offenders = [str(p) for p in sources if any(m == "torch" or m.startswith("torch.") for m in imported_modules(p))]
    assert not offenders
    modules = [f"mamql.replay.{p.stem}" for p in sources if p.stem != "__init__"]
    loaded = loaded_after_import(", ".join(["mamql.replay"] + modules))
    assert "torch" not in loaded


def test_actors_take_only_networks_and_policy_from_learner():
    offenders = []
    for path in sorted((ROOT / "actors").rglob("*.py")):
        for name in imported_modules(path):
            if not (name == "mamql.learner" or name.startswith("mamql.learner.")):
                continue
            module = name if name in ACTOR_ALLOWED_FROM_LEARNER else name.rsplit(".", 1)[0]
            if module not in ACTOR_ALLOWED_FROM_LEARNER:
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, offenders


def test_rule_checker_detects_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\nfrom mamql.learner.trainer import Trainer\n")
    names = imported_modules(bad)
    assert "torch" in names and "mamql.learner.trainer" in names


COMPONENTS = ("replay", "learner", "actors", "envs", "experiments", "protos")


def test_components_are_imported_only_under_the_mamql_namespace():
    """`import replay` would load a second copy of our modules (or someone else's package of that name)."""
    offenders = []
    for folder in ("mamql", *COMPONENTS, "tests", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for name in imported_modules(path):
                if name.split(".")[0] in COMPONENTS:
                    offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, offenders


def test_no_module_is_run_under_a_bare_component_name():
    """Running `-m <component>.cli` from the repository root would load a second copy of our modules."""
    pattern = re.compile(r"""(?:["']-m["'],\s*["']|python -m )(%s)\.""" % "|".join(COMPONENTS))
    offenders = []
    for folder in ("mamql", *COMPONENTS, "tests", "bench", "deploy", "docs"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and path.suffix in (".py", ".md", ".sbatch", ".yaml", ""):
                offenders += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in pattern.finditer(path.read_text(errors="replace"))]
    assert not offenders, offenders


def test_every_component_folder_is_exposed_inside_mamql():
    for name in COMPONENTS:
        link = ROOT / "mamql" / name
        assert link.is_symlink() and link.resolve() == (ROOT / name).resolve(), f"mamql/{name} -> ../{name} missing"
