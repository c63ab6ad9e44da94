"""REST input models, cursors, error classes and recording descriptions (no PostgreSQL)."""

from __future__ import annotations

import hashlib
import uuid
import wave
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from pydantic import ValidationError

from siaga_pbx.incidents import (
    CATEGORIES,
    IncidentPatch,
    InvalidCursor,
    ListParams,
    decode_cursor,
    describe_recording,
    encode_cursor,
    is_permanent_error,
)
from siaga_pbx.incidents._api_models import field_errors

pytestmark = pytest.mark.timeout(30)


class TestIncidentPatch:
    def test_only_sent_fields_are_changes(self) -> None:
        """changes() holds exactly the fields present in the request."""
        patch = IncidentPatch.model_validate({"category": "fire", "priority": 1})
        assert patch.changes() == {"category": "fire", "priority": 1}

    def test_categories_match_the_schema(self) -> None:
        """The API's category list is the schema's CHECK list."""
        sql = Path(__file__).parents[3] / "src/siaga_pbx/incidents/migrations"
        text = (sql / "0001_incident_record.sql").read_text()
        for category in CATEGORIES:
            assert f"'{category}'" in text
        assert len(CATEGORIES) == 8

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"priority": 0}, "priority"),
            ({"priority": 2.0}, "priority"),
            ({"category": "Fire"}, "category"),
            ({"responders": ["a"] * 51}, "responders"),
            ({"address_text": "\ud800"}, "address_text"),
            ({"id": "x"}, "id"),
            ({"notes": None}, "_"),
            ({}, "_"),
        ],
    )
    def test_invalid_bodies_name_the_field(self, body: dict[str, object], field: str) -> None:
        """Validation errors map to a field name with a readable message."""
        with pytest.raises(ValidationError) as info:
            IncidentPatch.model_validate(body)
        errors = field_errors(info.value)
        assert field in errors
        assert errors[field]


class TestListParams:
    def test_defaults_and_aliases(self) -> None:
        """from/to parse as aware datetimes; limit defaults to 50."""
        params = ListParams.model_validate({"from": "2025-06-15T00:00:00Z", "to": "1750000000"})
        assert params.opened_from == datetime(2025, 6, 15, tzinfo=UTC)
        assert params.opened_to is not None
        assert params.opened_to.timestamp() == 1750000000
        assert params.limit == 50

    def test_limit_is_capped_at_200(self) -> None:
        """A limit above 200 is refused rather than silently clipped."""
        with pytest.raises(ValidationError):
            ListParams.model_validate({"limit": "201"})


class TestCursor:
    def test_round_trip(self) -> None:
        """decode_cursor(encode_cursor(x)) == x."""
        at = datetime(2025, 6, 15, 1, 2, 3, 456789, tzinfo=UTC)
        ident = uuid.uuid4()
        assert decode_cursor(encode_cursor(at, ident)) == (at, ident)

    @pytest.mark.parametrize("cursor", ["", "!!!", "bm9wZQ", "WyIyMDI1LTA2LTE1IiwgIngiXQ"])
    def test_foreign_cursors_are_invalid(self, cursor: str) -> None:
        """Anything not produced by encode_cursor raises InvalidCursor."""
        with pytest.raises(InvalidCursor):
            decode_cursor(cursor)


class TestErrorClasses:
    @pytest.mark.parametrize(
        ("exc", "permanent"),
        [
            (asyncpg.exceptions.CheckViolationError("x"), True),
            (asyncpg.exceptions.InvalidTextRepresentationError("x"), True),
            (asyncpg.exceptions.UniqueViolationError("x"), True),
            (ValueError("x"), True),
            (OverflowError("x"), True),
            (asyncpg.exceptions.UndefinedTableError("x"), False),
            (asyncpg.exceptions.AdminShutdownError("x"), False),
            (asyncpg.exceptions.SerializationError("x"), False),
            (asyncpg.exceptions.TooManyConnectionsError("x"), False),
            (ConnectionRefusedError(), False),
            (TimeoutError(), False),
        ],
    )
    def test_only_data_errors_are_permanent(self, exc: BaseException, permanent: bool) -> None:
        """Data and constraint errors are permanent; outages and schema trouble are not."""
        assert is_permanent_error(exc) is permanent


class TestDescribeRecording:
    async def test_wav_size_checksum_and_duration(self, tmp_path: Path) -> None:
        """A WAV's size and SHA-256 match its bytes; duration is frames / rate."""
        path = tmp_path / "r.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(b"\x01\x02" * 8000 * 3 + b"\x00\x00" * 4000)
        data = path.read_bytes()
        info = await describe_recording(path)
        assert info.size_bytes == len(data)
        assert info.sha256 == hashlib.sha256(data).hexdigest()
        assert info.duration_s == pytest.approx(3.5)
        assert info.path == str(path)

    async def test_large_file_is_hashed_in_chunks(self, tmp_path: Path) -> None:
        """A file bigger than one read chunk still hashes to the right digest."""
        path = tmp_path / "big.bin"
        data = bytes(range(256)) * 20000  # ~5 MB, several 1 MiB chunks
        path.write_bytes(data)
        info = await describe_recording(path)
        assert info.sha256 == hashlib.sha256(data).hexdigest()
        assert info.duration_s is None  # not a WAV

    async def test_missing_file_raises(self, tmp_path: Path) -> None:
        """A file that does not exist raises FileNotFoundError."""
        with pytest.raises(FileNotFoundError):
            await describe_recording(tmp_path / "none.wav")
