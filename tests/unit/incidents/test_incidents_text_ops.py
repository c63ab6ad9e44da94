"""Pure tests of storable text and outbox ops (no PostgreSQL)."""

from __future__ import annotations

import math
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siaga_pbx.core import CallStage
from siaga_pbx.incidents import (
    AddCallbackEntry,
    AppendTimeline,
    CloseCall,
    OpenIncident,
    RegisterRecording,
    decode_op,
    encode_op,
    storable,
)
from siaga_pbx.incidents._text import has_unstorable, raw_bytes, storable_detail

# every code point, lone surrogates included
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=200)
SHA = "0" * 64

pytestmark = pytest.mark.timeout(30)


class TestStorable:
    def test_clean_text_is_unchanged(self) -> None:
        """Quotes, SQL, control characters and emoji are storable as they are."""
        s = "x'); DROP TABLE t;--\x01\x1b\x7f\t😀"
        assert storable(s) == (s, None)

    def test_nul_and_lone_surrogate_are_replaced_and_raw_kept(self) -> None:
        """NUL and lone surrogates become U+FFFD; the raw bytes are the originals."""
        s = b"ab\xffcd".decode("utf-8", "surrogateescape") + "\x00"
        text, raw = storable(s)
        assert text == "ab\ufffdcd\ufffd"
        assert raw == b"ab\xffcd\x00"

    def test_surrogate_pair_is_joined_not_replaced(self) -> None:
        """Two code points forming a UTF-16 surrogate pair become the one character."""
        text, raw = storable("\ud83d\ude00!")
        assert text == "😀!"
        assert raw is not None

    def test_detail_strings_are_made_storable_recursively(self) -> None:
        """Keys and nested string values in a detail mapping lose unstorable characters."""
        assert storable_detail({"k\x00": {"n": ["a\udcff", 1, True]}}) == {
            "k\ufffd": {"n": ["a\ufffd", 1, True]}
        }

    @given(any_text)
    def test_result_is_always_storable_and_lossless_when_unchanged(self, s: str) -> None:
        """For any string the text is storable, and raw bytes exist iff it changed."""
        text, raw = storable(s)
        assert not has_unstorable(text)
        assert text.encode("utf-8").decode("utf-8") == text  # valid UTF-8, no NUL
        if raw is None:
            assert text == s
        else:
            assert raw == raw_bytes(s)


class TestOps:
    @given(number=any_text, name=any_text, pai=any_text)
    def test_open_incident_round_trips_any_caller_strings(
        self, number: str, name: str, pai: str
    ) -> None:
        """Encoding then decoding an op gives it back, whatever the caller strings."""
        op = OpenIncident("c1", uuid.uuid4(), 1.5e9, number, name, pai, "trunk", "q", "id")
        kind, payload = encode_op(op)
        assert payload.isascii()
        assert decode_op(kind, payload) == op

    @given(from_raw=st.binary(max_size=300), pai_raw=st.binary(max_size=300))
    def test_open_incident_round_trips_raw_header_bytes(
        self, from_raw: bytes, pai_raw: bytes
    ) -> None:
        """The raw From / PAI header bytes (any bytes) survive the outbox codec exactly."""
        op = OpenIncident(
            "c1", uuid.uuid4(), 1.5e9, from_header_raw=from_raw, pai_header_raw=pai_raw
        )
        kind, payload = encode_op(op)
        assert payload.isascii()
        assert decode_op(kind, payload) == op

    def test_an_op_from_before_raw_headers_still_decodes(self) -> None:
        """An OpenIncident queued by an older version (no raw header fields) decodes."""
        payload = (
            '{"arrived_at": 1.5e9, "call_id": "c1", "caller_name": "A", "caller_number": "1",'
            ' "incident_id": "5e1a6a11-2c0d-4b1e-9a12-000000000112", "language": "",'
            ' "pai": "", "queue": "", "recovered": false, "trunk": ""}'
        )
        op = decode_op("open_incident", payload)
        assert isinstance(op, OpenIncident)
        assert (op.from_header_raw, op.pai_header_raw) == (b"", b"")

    @pytest.mark.parametrize(
        "op",
        [
            AppendTimeline("c1", "answered", 1.7e9, {"taker_id": "t1", "n": 2, "ok": True}),
            RegisterRecording("c1", "/var/rec/c1.wav", 1.7e9, 1.7e9 + 3, 3.0, 48044, SHA),
            RegisterRecording("c1", "/var/rec/c1.wav", 1.7e9, 1.7e9, 0.0, 44, SHA, empty=True),
            AddCallbackEntry("c1", "0812", 1.7e9, 1.7e9 + 9, "main", "waiting"),
            CloseCall("c1", 1.7e9, "caller", "16"),
        ],
    )
    def test_every_kind_round_trips(self, op: object) -> None:
        """Each op kind survives the outbox codec unchanged."""
        assert isinstance(op, AppendTimeline | RegisterRecording | AddCallbackEntry | CloseCall)
        assert decode_op(*encode_op(op)) == op

    def test_call_stage_enum_becomes_its_value(self) -> None:
        """A CallStage is stored as its plain value."""
        op = AppendTimeline("c1", CallStage.ABANDONED, 1.7e9)
        assert op.stage == "abandoned"
        assert type(op.stage) is str

    @pytest.mark.parametrize(
        ("build", "message"),
        [
            (lambda: AppendTimeline("", "arrived", 1.0), "call_id"),
            (lambda: AppendTimeline("has space", "arrived", 1.0), "call_id"),
            (lambda: AppendTimeline("c", "Not Snake", 1.0), "stage"),
            (lambda: AppendTimeline("c", "arrived", math.nan), "at"),
            (lambda: AppendTimeline("c", "arrived", -1.0), "at"),
            (lambda: AppendTimeline("c", "arrived", 1e12), "at"),
            (lambda: AppendTimeline("c", "arrived", True), "at"),
            (lambda: AppendTimeline("c", "arrived", 1.0, {"x": [1]}), "detail"),  # type: ignore[dict-item]
            (lambda: AppendTimeline("c", "arrived", 1.0, {"x": math.inf}), "finite"),
            (lambda: RegisterRecording("c", "/r.wav", 1.0, None, None, 1, "ABC"), "sha256"),
            (lambda: RegisterRecording("c", "/r.wav", 1.0, None, -1.0, 1, SHA), "duration"),
            (lambda: RegisterRecording("c", "/r\x00.wav", 1.0, None, None, 1, SHA), "path"),
            (lambda: RegisterRecording("c", "/r.wav", 1.0, None, None, -5, SHA), "size"),
            (lambda: AddCallbackEntry("c", "1", 1.0, 2.0, "q", "gone"), "where"),  # type: ignore[arg-type]
            (lambda: OpenIncident("c", "not-a-uuid", 1.0), "incident_id"),  # type: ignore[arg-type]
            (lambda: OpenIncident("c", uuid.uuid4(), 1.0, language="x" * 36), "language"),
            (lambda: OpenIncident("c", uuid.uuid4(), 1.0, from_header_raw="x"), "bytes"),  # type: ignore[arg-type]
            (lambda: OpenIncident("c", uuid.uuid4(), 1.0, pai_header_raw=b"x" * 8193), "8192"),
        ],
    )
    def test_invalid_fields_are_rejected_when_built(self, build: object, message: str) -> None:
        """A malformed op raises ValueError naming the field, at construction."""
        assert callable(build)
        with pytest.raises(ValueError, match=message):
            build()

    @pytest.mark.parametrize(
        ("kind", "payload"),
        [
            ("from_the_future", "{}"),
            ("close_call", "not json"),
            ("close_call", "[1]"),
            ("close_call", '{"call_id": "c"}'),
            ("close_call", '{"call_id": "c", "ended_at": 1, "surprise": 1}'),
            (
                "open_incident",
                '{"call_id": "c", "incident_id": "5e1a6a11-2c0d-4b1e-9a12-000000000112",'
                ' "arrived_at": 1, "from_header_raw": "not base64!"}',
            ),
        ],
    )
    def test_undecodable_payloads_raise_value_error(self, kind: str, payload: str) -> None:
        """Unknown kinds and corrupt payloads raise ValueError (the relay parks them)."""
        with pytest.raises(ValueError, match=r"kind|corrupt|payload"):
            decode_op(kind, payload)
