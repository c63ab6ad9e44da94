"""Sessions: idle and absolute expiry with an injected clock; CSRF tokens."""

from __future__ import annotations

from siaga_pbx.people._sessions import SessionBook, csrf_matches, csrf_token, session_key


def book() -> SessionBook:
    return SessionBook(idle_s=1800, absolute_s=12 * 3600)


class TestSessionBook:
    def test_idle_expiry(self) -> None:
        """A session unused for the idle timeout is gone; used just before, it lives."""
        b = book()
        secret, _ = b.open("u1", 0.0)
        assert b.find(secret, 1799.0) is not None  # used: the idle clock restarts
        assert b.find(secret, 1799.0 + 1799.0) is not None
        assert b.find(secret, 1799.0 + 1799.0 + 1800.0) is None
        assert len(b) == 0

    def test_absolute_expiry_despite_use(self) -> None:
        """However busy, a session ends at the absolute timeout after sign-in."""
        b = book()
        secret, _ = b.open("u1", 0.0)
        t = 0.0
        while t < 12 * 3600 - 600:
            t += 600
            assert b.find(secret, t) is not None, t
        assert b.find(secret, 12 * 3600.0) is None

    def test_only_the_hash_is_kept(self) -> None:
        """The book stores the SHA-256 of the secret, never the secret."""
        b = book()
        secret, s = b.open("u1", 0.0)
        assert s.key == session_key(secret)
        assert secret.encode() not in s.key
        assert len(secret) >= 43  # 256 random bits

    def test_close_and_close_user(self) -> None:
        """Sign-out ends one session; disabling a user ends all of theirs."""
        b = book()
        a, _ = b.open("u1", 0.0)
        c, _ = b.open("u1", 0.0)
        d, _ = b.open("u2", 0.0)
        assert b.close(a) is not None
        assert b.find(a, 1.0) is None
        assert b.close_user("u1") == 1
        assert b.find(c, 1.0) is None
        assert b.find(d, 1.0) is not None

    def test_load_drops_expired(self) -> None:
        """Sessions read back after a restart are kept only if still live."""
        b = book()
        live, s1 = b.open("u1", 0.0)
        _, s2 = b.open("u2", -4000.0)
        again = book()
        gone = again.load([s1, s2], 100.0)
        assert gone == [s2.key]
        assert again.find(live, 101.0) is not None

    def test_changes_are_batched(self) -> None:
        """Touches and closes are reported once by take_changes, then cleared."""
        b = book()
        a, sa = b.open("u1", 0.0)
        c, sc = b.open("u2", 0.0)
        b.find(a, 5.0)
        b.close(c)
        live, gone = b.take_changes()
        assert [s.key for s in live] == [sa.key]
        assert live[0].last_seen == 5.0
        assert gone == [sc.key]
        assert b.take_changes() == ([], [])


class TestCsrf:
    def test_token_is_derived_and_checked(self) -> None:
        """The CSRF token comes from the secret; only the right one matches."""
        assert csrf_token("s1") == csrf_token("s1")
        assert csrf_token("s1") != csrf_token("s2")
        assert csrf_matches("s1", csrf_token("s1"))
        assert not csrf_matches("s1", csrf_token("s2"))
        assert not csrf_matches("s1", "")
