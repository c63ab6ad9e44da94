"""Settings from the environment and a TOML file, and their refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from siaga_pbx import config


class TestLoad:
    def test_lab_defaults(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without settings the lab profile loads, with the main queue overflowing to backup."""
        monkeypatch.delenv("SIAGA_CONFIG_FILE", raising=False)
        s = config.load()
        assert s.profile == "lab"
        main = s.centre().queue("main")
        assert (main.overflow.queue, main.overflow.after_s) == ("backup", 60.0)

    def test_environment_overrides_nested(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """SIAGA_ARI__URL sets a nested field; a trailing slash is dropped."""
        monkeypatch.setenv("SIAGA_ARI__URL", "http://10.0.0.5:8088/")
        assert config.load().ari.url == "http://10.0.0.5:8088"

    def test_toml_file(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A TOML file configures queues and takers."""
        monkeypatch.delenv("SIAGA_CONFIG_FILE", raising=False)
        f = tmp_path / "siaga.toml"
        f.write_text(
            'default_queue = "q1"\n'
            '[[queues]]\nname = "q1"\nstrategy = "ringall"\n'
            '[[takers]]\nid = "t9"\nendpoint = "PJSIP/t9"\nqueues = ["q1"]\n'
        )
        s = config.load(f)
        assert [q.name for q in s.centre().queues] == ["q1"]
        assert s.centre().takers[0].taker_id == "t9"

    def test_missing_file_is_a_clear_error(self, tmp_path: Path) -> None:
        """A config file that does not exist is named in the error."""
        with pytest.raises(config.ConfigError, match="does not exist"):
            config.load(tmp_path / "nope.toml")

    def test_bad_values_name_the_field(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A bad value is reported with the setting's dotted name."""
        monkeypatch.setenv("SIAGA_HTTP__PORT", "99999")
        with pytest.raises(config.ConfigError, match=r"http\.port"):
            config.load()

    def test_unknown_overflow_queue_is_refused(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An overflow to a queue that does not exist is refused at start-up."""
        monkeypatch.setenv("SIAGA_QUEUES", '[{"name": "main", "overflow": {"queue": "nowhere"}}]')
        with pytest.raises(config.ConfigError, match="nowhere"):
            config.load()


class TestProduction:
    def test_lab_password_refused(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Outside the lab the lab's ARI password is refused."""
        monkeypatch.setenv("SIAGA_PROFILE", "production")
        with pytest.raises(config.ConfigError, match="lab default"):
            config.load()

    def test_lab_token_refused(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Outside the lab the lab's API token is refused."""
        monkeypatch.setenv("SIAGA_PROFILE", "production")
        monkeypatch.setenv("SIAGA_ARI__PASSWORD", "a-long-real-secret")
        with pytest.raises(config.ConfigError, match="lab admin token"):
            config.load()

    def test_real_secrets_accepted(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Real secrets pass."""
        monkeypatch.setenv("SIAGA_PROFILE", "production")
        monkeypatch.setenv("SIAGA_ARI__PASSWORD", "a-long-real-secret")
        monkeypatch.setenv("SIAGA_HTTP__TOKENS", '{"0123456789abcdef0123": "admin"}')
        assert config.load().profile == "production"
