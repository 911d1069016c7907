"""One import namespace: a wheel holds exactly one top-level package, `mamql`, and a user's own folders
named like our components (envs/, replay/, ...) cannot shadow them."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPONENTS = ("replay", "learner", "actors", "envs", "experiments", "protos")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (path,) = out.glob("mamql-*.whl")
    return path


def test_wheel_installs_one_top_level_package_and_the_console_script(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"mamql"}
    for component in COMPONENTS:  # the symlinked folders are real files in the wheel
        assert f"mamql/{component}/__init__.py" in names, component
    assert "mamql/protos/replay_pb2.py" in names and "mamql/replay/server.py" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "mamql = mamql.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_wheel_imports_mamql_components_and_no_top_level_ones(wheel, tmp_path):
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in site.iterdir() if not p.name.endswith(".dist-info") and p.name != "bin") == ["mamql"]
    code = ("import importlib.util, mamql.replay.table, mamql.protos.replay_pb2, mamql.envs.registry; "
            "print(mamql.replay.table.__file__); "
            f"print([n for n in {COMPONENTS!r} if importlib.util.find_spec(n)])")
    out = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); {code}"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    table_file, found = out.stdout.splitlines()
    assert table_file.startswith(str(site))
    assert found == "[]", f"top-level component packages importable next to the wheel: {found}"


def test_a_users_own_envs_and_replay_folders_do_not_shadow_ours(tmp_path):
    for name in ("envs", "replay", "learner"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('the user\\'s own {name} package was imported')\n")
    for cmd in ([sys.executable, "-m", "mamql.cli", "envs", "list"], [str(Path(sys.executable).parent / "mamql"), "envs", "list"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "gems" in proc.stdout and "user's own" not in proc.stderr
