"""Personal tokens in memory: found by hash, live only, uses batched."""

from __future__ import annotations

from siaga_pbx.people import ApiToken
from siaga_pbx.people._tokens import PREFIX, TokenBook, new_token, token_hash


def token(secret_hash: bytes, token_id: str = "t1", **kw: object) -> ApiToken:
    return ApiToken(
        token_id=token_id,
        user_id="u1",
        name="script",
        token_hash=secret_hash,
        roles=(),
        created_at=0.0,
        created_by="admin",
        **kw,  # type: ignore[arg-type]
    )


class TestTokenBook:
    def test_new_tokens_are_random_and_prefixed(self) -> None:
        """A token is prefixed, 256-bit random, and only its SHA-256 is kept."""
        a, ha = new_token()
        b, _ = new_token()
        assert a != b
        assert a.startswith(PREFIX)
        assert len(a) == len(PREFIX) + 43
        assert ha == token_hash(a)
        assert a.encode() not in ha

    def test_find_use_and_revoke(self) -> None:
        """A stored token is found by its secret and its use noted; once removed it is not."""
        secret, digest = new_token()
        book = TokenBook()
        book.put(token(digest))
        found = book.find(secret, 10.0)
        assert found is not None
        assert found.token_id == "t1"
        assert book.of_user("u1")[0].last_used_at == 10.0
        assert book.find(secret + "x", 10.0) is None
        assert book.find("not-a-personal-token", 10.0) is None
        book.remove("t1")
        assert book.find(secret, 11.0) is None

    def test_expired_and_revoked_are_refused(self) -> None:
        """A token past its expiry, or revoked, authenticates nothing."""
        s1, h1 = new_token()
        s2, h2 = new_token()
        book = TokenBook()
        book.put(token(h1, "t1", expires_at=100.0))
        book.put(token(h2, "t2", revoked_at=5.0))
        assert book.find(s1, 99.0) is not None
        assert book.find(s1, 100.0) is None
        assert book.find(s2, 6.0) is None

    def test_uses_are_taken_in_batches(self) -> None:
        """Last uses accumulate in memory until taken; a failed batch is given back."""
        secret, digest = new_token()
        book = TokenBook()
        book.put(token(digest))
        book.find(secret, 1.0)
        book.find(secret, 2.0)
        batch = book.take_used()
        assert batch == {"t1": 2.0}
        assert book.take_used() == {}
        book.give_back_used(batch)
        assert book.take_used() == {"t1": 2.0}
