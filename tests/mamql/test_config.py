import subprocess
import sys

import pytest
import yaml

from mamql.config import Config, ConfigError, TableConfig, dump_config, load_config, with_updates


def test_defaults_round_trip_through_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(Config()))
    assert load_config(path) == Config()


def test_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("replay:\n  capacity: 5\nlearner:\n  lr: 0.01\n")
    config = load_config(path, ["replay.capacity=10", "learner.hidden=[64, 64]", "env.kwargs={size: 7}"])
    assert config.replay.capacity == 10
    assert config.learner.lr == 0.01
    assert config.learner.hidden == (64, 64)
    assert config.env.kwargs == {"size": 7}


def test_tables_are_typed():
    config = load_config(None, ["replay.tables=[{name: demo, capacity: 3}]"])
    assert config.replay.tables == (TableConfig(name="demo", capacity=3),)
    with pytest.raises(ConfigError, match=r"tables\[0\].capacty"):
        load_config(None, ["replay.tables=[{name: demo, capacty: 3}]"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("replay.capcity=1", "unknown key.*replay.capcity"),
        ("nosuch.key=1", "unknown key.*nosuch"),
        ("learner.lr=abc", "learner.lr: expected a number"),
        ("replay.capacity=1.5", "replay.capacity: expected an integer"),
        ("replay.reject_nan=yes please", "expected true/false"),
        ("replay=3", "must name a section and a key"),
        ("replay.capacity", "section.key=value"),
        ("replay.capacity.x=1", "not a section"),
    ],
)
def test_bad_overrides_have_clear_messages(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_int_is_accepted_for_float_but_bool_is_not_int():
    assert load_config(None, ["learner.lr=1"]).learner.lr == 1.0
    with pytest.raises(ConfigError):
        load_config(None, ["replay.capacity=true"])


def test_exponent_without_dot_is_a_number(tmp_path):
    """YAML 1.1 (PyYAML) reads 1e-3 as a string; a float field takes it as the number it means."""
    path = tmp_path / "c.yaml"
    path.write_text("learner:\n  lr: 3e-4\n")
    config = load_config(path, ["learner.weight_decay=1e-3"])
    assert config.learner.lr == 3e-4 and config.learner.weight_decay == 1e-3
    with pytest.raises(ConfigError, match="expected an integer"):
        load_config(None, ["replay.capacity=1e3"])


def test_bad_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_config(path)
    path.write_text("replay: {capacity: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_with_updates_validates():
    config = with_updates(Config(), replay={"port": 0})
    assert config.replay.port == 0 and config.replay.capacity == Config().replay.capacity
    with pytest.raises(ConfigError):
        with_updates(Config(), replay={"prt": 0})


def test_cli_config_show_prints_resolved_config():
    out = subprocess.run(
        [sys.executable, "-m", "mamql.cli", "config", "show", "--set", "replay.capacity=10"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert yaml.safe_load(out)["replay"]["capacity"] == 10


def test_cli_reports_config_errors_with_exit_2():
    proc = subprocess.run(
        [sys.executable, "-m", "mamql.cli", "config", "show", "--set", "replay.capcity=10"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert "unknown key" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_version():
    out = subprocess.run([sys.executable, "-m", "mamql.cli", "version"], capture_output=True, text=True, check=True)
    import mamql

    assert out.stdout.strip() == f"mamql {mamql.__version__}"
