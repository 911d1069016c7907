"""Tests that need a system tool (Slurm, Prometheus, iproute2): find it, or fail/skip by one policy.

- CI (CI=true): a missing tool fails the test, naming the Debian packages .ci/run must install, so a
  broken install is never a green run of skips.
- Elsewhere: the test skips with the exact `apt-get install ...`, unless MAMQL_TEST_APT=1 lets it
  install them itself (root, apt-get); then a failed install fails the test.
Only what the kernel or the user's permissions cannot provide (no root, no network namespaces, no
sch_netem) is a plain skip everywhere; tests say so with `pytest.skip` themselves.

A uniquely named module on pytest's pythonpath (pyproject), importable from every test folder.
"""

from __future__ import annotations

import os
import shutil
import sys
import subprocess

import pytest

SBIN = ("/usr/sbin", "/sbin")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing(reason: str) -> None:
    """A test dependency is absent: a failure in CI (it must be installed there), a skip elsewhere."""
    if in_ci():
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def find(binary: str) -> str | None:
    """On PATH, in this interpreter's bin/ (a venv's tools without activating it), or in /usr/sbin, /sbin."""
    here = os.path.dirname(sys.executable)
    return shutil.which(binary, path=os.pathsep.join([os.environ.get("PATH", ""), here, *SBIN]))


def _apt_install(packages: list[str]) -> str | None:
    """apt-get install `packages`; None on success, else why not."""
    if shutil.which("apt-get") is None:
        return "no apt-get on this machine"
    if os.geteuid() != 0:
        return "apt-get install needs root"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=300, check=True)
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *packages], env=env,
                       capture_output=True, timeout=600, check=True)
    except subprocess.TimeoutExpired as exc:
        return f"{exc.cmd[:2]} timed out"
    except subprocess.CalledProcessError as exc:
        return f"{' '.join(exc.cmd[:2])} failed: {(exc.stderr or b'').decode(errors='replace')[-500:]}"
    return None


def ensure_debian_packages(packages: list[str], binaries: list[str]) -> dict[str, str]:
    """Paths of `binaries` (PATH, /usr/sbin, /sbin), which the Debian `packages` provide."""
    paths = {b: find(b) for b in binaries}
    absent = [b for b, p in paths.items() if p is None]
    if not absent:
        return paths
    hint = f"apt-get install {' '.join(packages)}"
    if in_ci():
        pytest.fail(f"CI=true but {absent} not installed: .ci/run must {hint}", pytrace=False)
    if os.environ.get("MAMQL_TEST_APT") != "1":
        pytest.skip(f"{absent} not installed: {hint} (or set MAMQL_TEST_APT=1 to let the tests install it)")
    error = _apt_install(packages)
    paths = {b: find(b) for b in binaries}
    absent = [b for b, p in paths.items() if p is None]
    if error or absent:
        pytest.fail(f"MAMQL_TEST_APT=1 but {hint} {'failed: ' + error if error else f'left {absent} missing'}",
                    pytrace=False)
    return paths
