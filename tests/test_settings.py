"""Configuration: defaults, precedence, TOML tables, validation in one line, secrets, example files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from balupi.cli import main
from balupi.errors import ConfigError
from balupi.settings import SETTINGS, example_env, example_toml, load_settings

REPO_ROOT = Path(__file__).parent.parent


@pytest.fixture
def load(tmp_path):
    """load_settings with data in tmp_path and nothing from the caller's environment."""

    def _load(env=None, overrides=None, **kwargs):
        env = {"BALUPI_DATA_DIR": str(tmp_path / "data"), **(env or {})}
        return load_settings(env=env, cwd=tmp_path, overrides=overrides, **kwargs)

    return _load


def write_toml(tmp_path: Path, text: str, name: str = "balupi.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def config_error(load, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load(**kwargs)
    return str(info.value)


# -- defaults and precedence ---------------------------------------------------------------------


def test_defaults_named_by_the_issue(load):
    s = load()
    assert s.port == 8000
    assert s.cache_max_size_gb == 200
    assert s.nas_url == "http://192.168.178.53"
    assert s.wol_address == "255.255.255.255" and s.wol_port == 9
    assert s.energy_default_price_cents == 32
    assert s.server_threads >= 32
    assert s.dav_block_size_kib == 1024
    assert s.nas_webdav_url == ""  # no NAS configured by default
    assert s.sources["port"] == "default"


def test_every_environment_variable_the_issue_names_exists():
    names = {setting.env_name for setting in SETTINGS}
    required = {
        "BALUPI_HOST", "BALUPI_PORT", "BALUPI_DATA_DIR", "BALUPI_CACHE_DIR", "BALUPI_CACHE_MAX_SIZE_GB",
        "BALUPI_NAS_URL", "BALUPI_NAS_WEBDAV_URL", "BALUPI_NAS_MAC_ADDRESS", "BALUPI_WOL_ADDRESS",
        "BALUPI_WOL_PORT", "BALUPI_TAPO_USERNAME", "BALUPI_TAPO_PASSWORD", "BALUPI_SECRET_KEY",
        "BALUPI_ENERGY_DEFAULT_PRICE_CENTS",
    }  # fmt: skip
    assert required <= names


def test_data_and_cache_default_to_the_per_user_data_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    s = load_settings(env={}, cwd=tmp_path)
    assert s.data_dir == tmp_path / "xdg" / "balupi"
    assert s.cache_dir == tmp_path / "xdg" / "balupi" / "cache"
    assert s.data_dir.is_dir() and s.cache_dir.is_dir()


def test_precedence_default_then_toml_then_environment_then_override(load, tmp_path):
    toml = write_toml(tmp_path, "port = 8001\nwol_port = 7001\nlog_level = 'DEBUG'\n")
    env = {"BALUPI_CONFIG": str(toml), "BALUPI_WOL_PORT": "7002", "BALUPI_LOG_LEVEL": "WARNING"}
    s = load(env=env, overrides={"log_level": "ERROR"})
    assert (s.port, s.sources["port"]) == (8001, str(toml))
    assert (s.wol_port, s.sources["wol_port"]) == (7002, "environment")
    assert (s.log_level, s.sources["log_level"]) == ("ERROR", "override")
    assert (s.cache_max_size_gb, s.sources["cache_max_size_gb"]) == (200, "default")


def test_toml_in_etc_of_the_working_directory_is_found(load, tmp_path):
    (tmp_path / "etc").mkdir()
    write_toml(tmp_path / "etc", "port = 8123\n")
    assert load().port == 8123


def test_toml_tables_flatten_into_setting_names(load, tmp_path):
    toml = write_toml(
        tmp_path,
        "[nas]\nmac_address = 'AA-BB-CC-DD-EE-FF'\nwebdav_url = 'http://127.0.0.1:8080/'\n"
        "[energy]\ndefault_price_cents = 28.5\n",
    )
    s = load(env={"BALUPI_CONFIG": str(toml)})
    assert s.nas_mac_address == "AA-BB-CC-DD-EE-FF"
    assert s.nas_webdav_url == "http://127.0.0.1:8080/"
    assert s.energy_default_price_cents == 28.5


def test_environment_values_are_parsed_by_type(load):
    s = load(env={"BALUPI_NAS_PROBE_ENABLED": "off", "BALUPI_CACHE_MAX_SIZE_GB": "0.5", "BALUPI_PORT": " 8080 "})
    assert s.nas_probe_enabled is False
    assert s.cache_max_size_gb == 0.5
    assert s.port == 8080


# -- validation ----------------------------------------------------------------------------------


def test_unknown_environment_variable_is_rejected(load):
    assert config_error(load, env={"BALUPI_XYZ": "10"}) == "BALUPI_XYZ: unknown setting"


def test_an_unknown_setting_close_to_a_known_one_gets_a_suggestion(load, tmp_path):
    assert config_error(load, env={"BALUPI_CACHE_SIZE": "10"}) == (
        "BALUPI_CACHE_SIZE: unknown setting, did you mean BALUPI_CACHE_MAX_SIZE_GB?")
    (tmp_path / "suggest.toml").write_text('nas_mac = "aa:bb:cc:dd:ee:ff"\n')
    message = config_error(load, env={"BALUPI_CONFIG": str(tmp_path / "suggest.toml")})
    assert message.endswith("unknown setting 'nas_mac', did you mean 'nas_mac_address'?")


def test_unknown_toml_keys_are_rejected_with_their_table(load, tmp_path):
    toml = write_toml(tmp_path, "colour = 'blue'\n[nas]\nmac = 'aa:bb:cc:dd:ee:ff'\n")
    message = config_error(load, env={"BALUPI_CONFIG": str(toml)})
    assert f"{toml}: unknown setting 'colour'" in message
    assert f"{toml}: unknown setting 'nas_mac'" in message


@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("BALUPI_PORT", "eighty", "BALUPI_PORT: expected an integer, got 'eighty'"),
        ("BALUPI_PORT", "70000", "BALUPI_PORT: must be a port number from 0 to 65535, got 70000"),
        ("BALUPI_CACHE_MAX_SIZE_GB", "lots", "BALUPI_CACHE_MAX_SIZE_GB: expected a number, got 'lots'"),
        ("BALUPI_NAS_PROBE_ENABLED", "maybe", "BALUPI_NAS_PROBE_ENABLED: expected true or false, got 'maybe'"),
        ("BALUPI_HOST", "my-pi", "BALUPI_HOST: expected an IP address, got 'my-pi'"),
        ("BALUPI_NAS_WEBDAV_URL", "ftp://nas/", "BALUPI_NAS_WEBDAV_URL: expected an http:// or https:// URL"),
        ("BALUPI_LOG_LEVEL", "LOUD", "BALUPI_LOG_LEVEL: expected one of DEBUG, INFO, WARNING, ERROR"),
    ],
)
def test_wrong_types_name_the_setting(load, name, value, expected):
    assert config_error(load, env={name: value}).startswith(expected)


def test_wrong_type_in_toml_names_file_and_setting(load, tmp_path):
    toml = write_toml(tmp_path, "port = true\n")
    assert config_error(load, env={"BALUPI_CONFIG": str(toml)}) == f"{toml}: port: expected an integer, got True"


def test_negative_size_is_rejected(load):
    assert config_error(load, env={"BALUPI_CACHE_MAX_SIZE_GB": "-1"}) == (
        "BALUPI_CACHE_MAX_SIZE_GB: must be at least 0, got -1"
    )


def test_malformed_mac_is_rejected(load):
    message = config_error(load, env={"BALUPI_NAS_MAC_ADDRESS": "aa:bb:cc:dd:ee"})
    assert message.startswith("BALUPI_NAS_MAC_ADDRESS: invalid MAC address 'aa:bb:cc:dd:ee'")


def test_unwritable_directory_is_rejected(load, tmp_path):
    # Root ignores file modes, so make the directory impossible instead: a path under a regular file.
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    message = config_error(load, env={"BALUPI_CACHE_DIR": str(blocker / "cache")})
    assert message == f"BALUPI_CACHE_DIR: directory '{blocker / 'cache'}' is not usable: Not a directory"


def test_missing_config_file_is_named(load, tmp_path):
    missing = tmp_path / "nope.toml"
    assert config_error(load, env={"BALUPI_CONFIG": str(missing)}) == f"BALUPI_CONFIG: file not found: {missing}"


def test_malformed_toml_is_one_line(load, tmp_path):
    toml = write_toml(tmp_path, "port = \n")
    message = config_error(load, env={"BALUPI_CONFIG": str(toml)})
    assert message.startswith(f"{toml}: cannot read:") and "\n" not in message


def test_several_errors_are_reported_together_in_one_line(load, tmp_path):
    toml = write_toml(tmp_path, "colour = 1\n")
    env = {
        "BALUPI_CONFIG": str(toml),
        "BALUPI_PORT": "x",
        "BALUPI_NAS_MAC_ADDRESS": "nope",
        "BALUPI_CACHE_MAX_SIZE_GB": "-5",
        "BALUPI_TYPO": "1",
    }
    message = config_error(load, env=env)
    assert "\n" not in message
    for named in ("'colour'", "BALUPI_PORT:", "BALUPI_NAS_MAC_ADDRESS:", "BALUPI_CACHE_MAX_SIZE_GB:", "BALUPI_TYPO:"):
        assert named in message
    assert message.count("; ") == 4


def test_an_unknown_override_is_rejected(load):
    assert config_error(load, overrides={"prot": 1}) == "prot: unknown setting, did you mean 'port'?"


# -- secrets -------------------------------------------------------------------------------------


SECRETS = {"BALUPI_TAPO_PASSWORD": "tapo-hunter2", "BALUPI_NAS_PASSWORD": "nas-hunter2", "BALUPI_SECRET_KEY": "k3y-hunter2"}


def test_secrets_are_masked_in_repr_and_public_dict(load):
    s = load(env=SECRETS)
    assert s.tapo_password == "tapo-hunter2"  # the value itself is there to use
    text = repr(s) + str(s.public_dict())
    for secret in SECRETS.values():
        assert secret not in text
    assert "tapo_password=***" in repr(s)
    assert s.public_dict()["secret_key"] == "***"
    assert load().public_dict()["tapo_password"] == ""  # an unset secret says so


def test_secrets_are_masked_in_config_show(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("BALUPI_DATA_DIR", str(tmp_path / "data"))
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^tapo_password += '\*\*\*'  \(environment\)$", out, re.MULTILINE)
    for secret in SECRETS.values():
        assert secret not in out


# -- example files -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, action", [("etc/balupi.toml.example", "example-toml"), (".env.example", "example-env")]
)
def test_example_files_are_what_the_config_command_prints(path, action, capsys):
    """Regenerate with: balupi config example-toml > etc/balupi.toml.example (and example-env > .env.example)."""
    assert main(["config", action]) == 0
    assert (REPO_ROOT / path).read_text() == capsys.readouterr().out, (
        f"{path} is out of step with balupi.settings.SETTINGS; regenerate it: balupi config {action} > {path}"
    )


def test_example_files_document_every_setting():
    toml, env = example_toml(), example_env()
    for setting in SETTINGS:
        assert f"# {setting.name} = " in toml
        assert f"# {setting.env_name}=" in env


def test_the_example_toml_loads_once_uncommented(load, tmp_path):
    names = {setting.name for setting in SETTINGS}
    lines = [line[2:] for line in example_toml().splitlines() if line[2:].split(" = ")[0] in names]
    assert len(lines) == len(SETTINGS)
    toml = write_toml(tmp_path, "\n".join(lines) + "\n")
    s = load(env={"BALUPI_CONFIG": str(toml)})
    assert s.port == 8000 and s.wol_address == "255.255.255.255"
