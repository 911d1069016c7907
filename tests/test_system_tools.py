"""tests/system_tools.py's policy: in CI a missing system tool fails the test; elsewhere it skips with
the exact install command, and installing is opt-in (MAMQL_TEST_APT=1)."""

import pytest

from system_tools import ensure_debian_packages, missing

NO_SUCH = "mamql-no-such-tool"  # a binary no package provides


@pytest.fixture
def outside_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("MAMQL_TEST_APT", raising=False)


def test_ci_fails_on_a_missing_binary_naming_the_packages(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception) as info:
        ensure_debian_packages(["mamql-tools"], ["sh", NO_SUCH])
    assert NO_SUCH in str(info.value) and "apt-get install mamql-tools" in str(info.value)
    assert "sh'" not in str(info.value)  # only what is missing is named


def test_outside_ci_skips_with_the_install_hint(outside_ci):
    with pytest.raises(pytest.skip.Exception) as info:
        ensure_debian_packages(["mamql-tools", "other"], [NO_SUCH])
    assert "apt-get install mamql-tools other" in str(info.value) and "MAMQL_TEST_APT=1" in str(info.value)


def test_opt_in_install_that_cannot_run_fails(outside_ci, monkeypatch, tmp_path):
    monkeypatch.setenv("MAMQL_TEST_APT", "1")
    monkeypatch.setenv("PATH", str(tmp_path))  # no apt-get: the install the user asked for cannot happen
    with pytest.raises(pytest.fail.Exception) as info:
        ensure_debian_packages(["mamql-tools"], [NO_SUCH])
    assert "apt-get install mamql-tools failed" in str(info.value)


@pytest.mark.parametrize("ci", ["true", ""])
def test_present_binaries_resolve_to_paths(monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    paths = ensure_debian_packages(["dash"], ["sh"])
    assert paths["sh"].endswith("/sh")


def test_missing_dependency_fails_in_ci_and_skips_elsewhere(monkeypatch, outside_ci):
    with pytest.raises(pytest.skip.Exception, match="hadolint"):
        missing("hadolint is not installed")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true but hadolint"):
        missing("hadolint is not installed")
