"""Settings: environment variables, the TOML file, and errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from dispatchd.errors import DispatchError
from dispatchd.settings import (
    CONFIG_VAR,
    Settings,
    SettingsError,
    defaults,
    env_var,
    field_docs,
    field_names,
)


def write_toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "dispatchd.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_defaults_without_environment() -> None:
    s = Settings.from_env({})
    assert s == Settings()
    assert s.redis_url is None
    assert s.data_dir == ".dispatchd"
    assert s.embedded_port == 0
    assert (s.admin_host, s.admin_port) == ("127.0.0.1", 8080)
    assert (s.log_level, s.log_format) == ("INFO", "json")
    assert s.shutdown_grace_s == 10.0


def test_every_field_has_a_docstring_and_an_env_var() -> None:
    assert set(field_docs()) == set(field_names())
    assert all(doc.strip() for doc in field_docs().values())
    assert env_var("shutdown_grace_s") == "DISPATCHD_SHUTDOWN_GRACE_S"
    assert set(defaults()) == set(field_names())


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(AttributeError):
        s.admin_port = 1  # type: ignore[misc]


def test_environment_values_are_converted() -> None:
    s = Settings.from_env(
        {
            "DISPATCHD_REDIS_URL": "redis://cache:6380/2",
            "DISPATCHD_DATA_DIR": "/var/lib/dispatchd",
            "DISPATCHD_EMBEDDED_PORT": "16400",
            "DISPATCHD_ADMIN_HOST": "0.0.0.0",
            "DISPATCHD_ADMIN_PORT": "9000",
            "DISPATCHD_LOG_LEVEL": "debug",
            "DISPATCHD_LOG_FORMAT": "text",
            "DISPATCHD_SHUTDOWN_GRACE_S": "2.5",
        }
    )
    assert s == Settings(
        redis_url="redis://cache:6380/2",
        data_dir="/var/lib/dispatchd",
        embedded_port=16400,
        admin_host="0.0.0.0",
        admin_port=9000,
        log_level="debug",
        log_format="text",
        shutdown_grace_s=2.5,
    )


def test_empty_variable_counts_as_unset() -> None:
    assert Settings.from_env({"DISPATCHD_REDIS_URL": "", "DISPATCHD_ADMIN_PORT": ""}) == Settings()


def test_other_variables_are_ignored() -> None:
    assert Settings.from_env({"DISPATCHD_TEST_REDIS_URL": "redis://x", "HOME": "/"}) == Settings()


@pytest.mark.parametrize(
    ("var", "value", "reason"),
    [
        ("DISPATCHD_ADMIN_PORT", "http", "Expected `int`"),
        ("DISPATCHD_ADMIN_PORT", "70000", "<= 65535"),
        ("DISPATCHD_EMBEDDED_PORT", "-1", ">= 0"),
        ("DISPATCHD_SHUTDOWN_GRACE_S", "soon", "Expected `float`"),
        ("DISPATCHD_SHUTDOWN_GRACE_S", "-1", ">= 0"),
        ("DISPATCHD_LOG_FORMAT", "xml", "xml"),
        ("DISPATCHD_LOG_LEVEL", "loud", "DEBUG, INFO"),
        ("DISPATCHD_REDIS_URL", "localhost:6379", "redis://"),
    ],
)
def test_bad_value_names_the_variable(var: str, value: str, reason: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({var: value, "DISPATCHD_ADMIN_HOST": "127.0.0.1"})
    err = caught.value
    assert isinstance(err, DispatchError)
    assert (err.source, err.value) == (var, value)
    assert reason in err.reason
    assert str(err).startswith(f"bad setting {var}={value!r}: ")


def test_toml_file_sets_values(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        'redis_url = "redis://db:6379/0"\nadmin_port = 8181\nshutdown_grace_s = 3\n'
        'log_format = "text"\n',
    )
    s = Settings.from_env({CONFIG_VAR: path})
    assert s.redis_url == "redis://db:6379/0"
    assert s.admin_port == 8181
    assert s.shutdown_grace_s == 3.0
    assert s.log_format == "text"
    assert s.data_dir == ".dispatchd"


def test_environment_wins_over_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'admin_port = 8181\nlog_level = "WARNING"\n')
    s = Settings.from_env({CONFIG_VAR: path, "DISPATCHD_ADMIN_PORT": "9191"})
    assert (s.admin_port, s.log_level) == (9191, "WARNING")


def test_file_values_are_converted_like_env_values(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'admin_port = "8282"\n')
    assert Settings.from_env({CONFIG_VAR: path}).admin_port == 8282


def test_bad_file_value_names_file_and_key(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "admin_port = true\n")
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({CONFIG_VAR: path})
    assert caught.value.source == f"{path}: admin_port"
    assert "Expected `int`" in caught.value.reason


def test_bad_file_value_overridden_by_env_still_fails(tmp_path: Path) -> None:
    # The file is part of the configuration: a typo in it is reported, not masked.
    path = write_toml(tmp_path, 'admin_port = "x"\n')
    with pytest.raises(SettingsError):
        Settings.from_env({CONFIG_VAR: path, "DISPATCHD_ADMIN_PORT": "9000"})


def test_unknown_file_key_is_an_error(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'redis_ulr = "redis://db"\n')
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({CONFIG_VAR: path})
    assert caught.value.source == f"{path}: redis_ulr"
    assert "redis_url" in caught.value.reason  # lists the known settings


def test_missing_file_names_config_variable(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.toml")
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({CONFIG_VAR: missing})
    assert (caught.value.source, caught.value.value) == (CONFIG_VAR, missing)
    assert "No such file" in caught.value.reason


def test_invalid_toml_names_config_variable(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "admin_port = = 1\n")
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({CONFIG_VAR: path})
    assert caught.value.source == CONFIG_VAR
    assert "not valid TOML" in caught.value.reason


def test_struct_rejects_bad_values_directly() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"log_level": "chatty"}, Settings)
