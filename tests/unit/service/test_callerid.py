"""Caller identity parsing from hostile SIP header values."""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st

from siaga_pbx import callerid


class TestParseHeader:
    def test_quoted_name_with_escapes(self) -> None:
        """A quoted display name keeps its escaped quotes and the number its plus."""
        name, number = callerid.parse_header(
            '"Budi \\"B\\" Santoso" <sip:+62811223344@op.example;user=phone>;tag=a1'
        )
        assert (name, number) == ('Budi "B" Santoso', "+62811223344")

    def test_addr_spec_without_brackets(self) -> None:
        """A bare URI yields its user part as the number and no name."""
        assert callerid.parse_header("sip:0811777@op.example;tag=x") == ("", "0811777")

    def test_tel_uri_visual_separators(self) -> None:
        """Visual separators in a tel: URI are dropped from the number."""
        assert callerid.parse_header("<tel:+62-811-22>") == ("", "+6281122")

    def test_pai_with_two_identities(self) -> None:
        """A PAI listing two identities yields the first with a number."""
        assert callerid.parse_header('"A, B" <sip:anonymous@x>, <tel:+6299>') == ("A, B", "+6299")

    def test_sql_looking_name_kept_verbatim(self) -> None:
        """An SQL-looking name is text like any other; it is kept as sent."""
        name, number = callerid.parse_header("Robert'); DROP TABLE calls;-- <sip:08123@x>")
        assert name == "Robert'); DROP TABLE calls;--"
        assert number == "08123"

    def test_control_characters_replaced(self) -> None:
        """Control characters (a forged log line) become U+FFFD."""
        name, _ = callerid.parse_header('"evil\r\n{\\"level\\":\\"error\\"}" <sip:1@x>')
        assert "\r" not in name and "\n" not in name
        assert "\ufffd" in name

    def test_garbage_gives_nothing(self) -> None:
        """Malformed input gives empty fields rather than an error."""
        assert callerid.parse_header("<<<>>>") == ("", "")


class TestIdentity:
    def test_pai_becomes_best_number(self) -> None:
        """The network-asserted PAI number is the one to call back."""
        who = callerid.identity(
            from_header='"Ani" <sip:0811@op>',
            pai_header="<sip:+62811000@op>",
            channel_number="",
            channel_name="",
        )
        assert (who.name, who.number, who.pai, who.best_number) == (
            "Ani",
            "0811",
            "+62811000",
            "+62811000",
        )

    def test_channel_caller_id_is_the_fallback(self) -> None:
        """Without headers, Asterisk's caller id is used, cleaned."""
        who = callerid.identity(
            from_header="", pai_header="", channel_number="08-12 ab", channel_name="Siti\x00"
        )
        assert (who.number, who.name, who.pai) == ("0812", "Siti\ufffd", "")

    def test_two_kilobyte_name_survives(self) -> None:
        """A 2 KB display name is kept whole."""
        long = "x" * 2000
        who = callerid.identity(
            from_header=f'"{long}" <sip:1@x>', pai_header="", channel_number="", channel_name=""
        )
        assert who.name == long


def b64(raw: bytes) -> str:
    """What [siaga-raw-header] makes of a header: % ( ) escaped, then base64."""
    escaped = raw.replace(b"%", b"%25").replace(b"(", b"%28").replace(b")", b"%29")
    return base64.b64encode(escaped).decode("ascii")


class TestRawHeader:
    def test_invalid_utf8_and_control_characters_come_back_exactly(self) -> None:
        """The dialplan's base64 copy yields the header's bytes as sent, bad UTF-8 and all."""
        raw = b'"Bad \xff\xfe\xc3 \x01\x07\x1b[2J" <sip:0811@op>;tag=1'
        assert callerid.raw_header(b64(raw)) == raw

    def test_the_dialplan_escapes_are_undone_exactly(self) -> None:
        """%, ( and ) (escaped by the dialplan) come back as sent, literal %28 included."""
        raw = b'"a) b:1:2 (c %28 %% %2" <sip:0811@op>'
        assert callerid.raw_header(b64(raw)) == raw

    @given(st.binary(max_size=600))
    def test_any_header_bytes_round_trip(self, raw: bytes) -> None:
        """Whatever bytes the header holds, the dialplan's copy gives them back exactly."""
        assert callerid.raw_header(b64(raw)) == raw

    def test_cleaned_name_and_exact_bytes_side_by_side(self) -> None:
        """The identity carries the cleaned name and the exact From and PAI bytes."""
        from_raw = b'"A\x07\xff" <sip:0811@op>'
        pai_raw = b"<tel:+62811>"
        who = callerid.identity(
            from_header=from_raw.decode("utf-8", "replace"),
            pai_header=pai_raw.decode(),
            channel_number="",
            channel_name="",
            from_b64=b64(from_raw),
            pai_b64=b64(pai_raw),
        )
        assert who.name == "A\ufffd\ufffd"
        assert (who.from_raw, who.pai_raw) == (from_raw, pai_raw)

    def test_a_copy_cut_short_keeps_the_bytes_before_the_cut(self) -> None:
        """A base64 copy cut mid-quantum (Asterisk's 4 KB buffers) gives the bytes it holds."""
        raw = bytes(b for b in range(256) if b not in b"%()") * 4
        for cut in range(1, 12):
            got = callerid.raw_header(b64(raw)[:-cut])
            assert raw.startswith(got) and len(raw) - len(got) <= 9, cut

    def test_huge_or_junk_input_is_bounded_and_never_raises(self) -> None:
        """A megabyte of base64 is cut to MAX_RAW_HEADER bytes; junk gives no bytes."""
        assert len(callerid.raw_header(b64(b"x" * 1_000_000))) == callerid.MAX_RAW_HEADER
        assert callerid.raw_header("!!! ### --- \u00e9 ...") == b""
        assert callerid.raw_header("") == b""

    @given(st.text(max_size=500))
    def test_any_text_yields_bounded_bytes(self, text: str) -> None:
        """Whatever the channel variable holds, raw_header returns bounded bytes."""
        got = callerid.raw_header(text)
        assert isinstance(got, bytes) and len(got) <= callerid.MAX_RAW_HEADER


class TestFuzz:
    @given(st.text(max_size=3000), st.text(max_size=300))
    def test_never_raises_and_always_builds_an_identity(self, from_h: str, pai_h: str) -> None:
        """Any header text yields a valid CallerIdentity with a dialable number."""
        who = callerid.identity(
            from_header=from_h, pai_header=pai_h, channel_number=pai_h, channel_name=from_h
        )
        allowed = set("0123456789+*#")
        assert set(who.number) <= allowed and set(who.pai) <= allowed
        assert all(ch.isprintable() or ch == "\ufffd" for ch in who.name)
