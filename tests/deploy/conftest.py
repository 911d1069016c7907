"""Shared helpers for the deploy tests: install Debian packages for `cluster` tests when missing."""

import os
import shutil
import subprocess

import pytest


def ensure_debian_packages(packages: list[str], binaries: list[str]) -> None:
    """apt-get install `packages` unless every binary is on PATH (or /usr/sbin); skip if impossible."""
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    if all(shutil.which(b, path=path) for b in binaries):
        return
    if shutil.which("apt-get") is None:
        pytest.skip(f"{binaries} missing and no apt-get to install {packages}")
    if os.geteuid() != 0:
        pytest.skip(f"{binaries} missing and not root to apt-get install {packages}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=300, check=True)
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *packages], env=env,
                       capture_output=True, timeout=600, check=True)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        out = getattr(exc, "stderr", b"") or b""
        pytest.skip(f"apt-get install {packages} failed: {out.decode(errors='replace')[-500:]}")
    missing = [b for b in binaries if not shutil.which(b, path=path)]
    if missing:
        pytest.skip(f"installed {packages} but {missing} still missing")


@pytest.fixture(scope="session")
def debian_packages():
    return ensure_debian_packages
