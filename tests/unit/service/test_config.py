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


class TestStrictKeys:
    def test_misspelt_nested_keys_in_the_file_are_refused_with_their_path(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Typos under [ari], in a queue and in an agency are errors naming each path."""
        monkeypatch.delenv("SIAGA_CONFIG_FILE", raising=False)
        f = tmp_path / "siaga.toml"
        f.write_text(
            '[ari]\npasword = "x"\n'
            '[[queues]]\nname = "main"\nring_timout_s = 3\n'
            '[[agencies]]\ncode = "damkar"\nname = "Damkar"\n'
            'endpoints = ["PJSIP/disp-damkar"]\nfallbak = ""\n'
        )
        with pytest.raises(config.ConfigError) as err:
            config.load(f)
        text = str(err.value)
        assert "ari.pasword: Extra inputs are not permitted" in text
        assert "queues.0.ring_timout_s: Extra inputs are not permitted" in text
        assert "agencies.0.fallbak: Extra inputs are not permitted" in text

    def test_misspelt_nested_key_in_the_environment_is_refused(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """SIAGA_ARI__PASWORD (one S short) is an error, not an ignored variable."""
        monkeypatch.setenv("SIAGA_ARI__PASWORD", "secret")
        with pytest.raises(config.ConfigError, match=r"ari\.pasword"):
            config.load()

    def test_misspelt_key_in_a_queue_from_the_environment_is_refused(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """SIAGA_QUEUES with a misspelt key inside a queue is an error naming it."""
        monkeypatch.setenv("SIAGA_QUEUES", '[{"name": "main", "wrapup": 5}]')
        with pytest.raises(config.ConfigError, match=r"queues\.0\.wrapup"):
            config.load()

    def test_unknown_top_level_variables_are_reported(self) -> None:
        """A misspelt top-level SIAGA_ variable is listed; known ones and nested ones are not."""
        env = {
            "SIAGA_DATABSE_DSN": "postgresql://x",
            "SIAGA_DATABASE_DSN": "postgresql://y",
            "SIAGA_ARI__URL": "http://127.0.0.1:8088",
            "SIAGA_CONFIG_FILE": "/etc/siaga.toml",
            "PATH": "/bin",
        }
        assert config.unknown_environment(env) == ["SIAGA_DATABSE_DSN"]
