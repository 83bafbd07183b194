"""Settings: defaults, validation that names the variables, secrets from files."""

from __future__ import annotations

from pathlib import Path

import pytest

from tradestats.settings import ConfigError, Settings, load_settings


def test_defaults_match_the_talks_app() -> None:
    settings = Settings()
    assert (settings.window_size_ms, settings.window_advance_ms, settings.window_grace_ms) == (
        5000,
        1000,
        0,
    )
    assert settings.trades_topic == "trades"
    assert settings.web_url == f"http://{settings.web_host}:6066"
    assert settings.group_instance_id is None


def test_pod_name_becomes_the_static_member_id_unless_one_is_explicit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POD_NAME", "tradestats-2")
    assert Settings().group_instance_id == "tradestats-2"
    monkeypatch.setenv("CONSUMER_GROUP_INSTANCE_ID", "explicit")
    assert Settings().group_instance_id == "explicit"


def test_every_bad_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOPIC_PARTITIONS", "0")
    monkeypatch.setenv("LOG_FORMAT", "xml")
    monkeypatch.setenv("COMMIT_INTERVAL_MS", "soon")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    for name in ("TOPIC_PARTITIONS", "LOG_FORMAT", "COMMIT_INTERVAL_MS"):
        assert name in message


def test_window_combinations_are_checked() -> None:
    with pytest.raises(ConfigError, match="advance"):
        load_settings(window_size_ms=1000, window_advance_ms=2000)


def test_sasl_needs_credentials() -> None:
    with pytest.raises(ConfigError, match="KAFKA_SASL_USERNAME"):
        load_settings(kafka_security_protocol="SASL_SSL")
    ok = load_settings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username="u",
        kafka_sasl_password="hunter2-secret",
    )
    assert ok.sasl_password == "hunter2-secret"
    assert "hunter2" not in repr(ok)  # SecretStr: never in logs or reprs


def test_credentials_can_come_from_files(tmp_path: Path) -> None:
    (tmp_path / "username").write_text("svc\n")
    (tmp_path / "password").write_text("s3cret\n")
    settings = load_settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username_file=tmp_path / "username",
        kafka_sasl_password_file=tmp_path / "password",
    )
    assert (settings.sasl_username, settings.sasl_password) == ("svc", "s3cret")


def test_an_absent_optional_secret_does_not_break_plaintext(tmp_path: Path) -> None:
    settings = load_settings(kafka_sasl_password_file=tmp_path / "not-mounted")
    assert settings.sasl_password is None
    with pytest.raises(ConfigError, match="required"):
        load_settings(
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_username="u",
            kafka_sasl_password_file=tmp_path / "not-mounted",
        )
