"""``python -m bench.wire`` on a capture written here, packet by packet: the stages it reports
are the gaps between the packets it was given."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SIP, ARI = 25060, 28088


def _frame(udp: bool, src: int, dst: int, payload: bytes) -> bytes:
    if udp:
        l4 = struct.pack(">HHHH", src, dst, 8 + len(payload), 0)
    else:
        l4 = struct.pack(">HHIIBBHHH", src, dst, 0, 0, 5 << 4, 0x18, 65535, 0, 0)
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(l4) + len(payload), 0, 0, 64,
                     17 if udp else 6, 0, bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))  # fmt: skip
    return bytes(14) + ip + l4 + payload


def _pcap(path: Path, packets: list[tuple[float, bool, int, int, bytes]]) -> None:
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for at, udp, src, dst, payload in packets:
        frame = _frame(udp, src, dst, payload)
        sec, usec = int(at), round((at - int(at)) * 1e6)
        out.append(struct.pack("<IIII", sec, usec, len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(out))


def _wire(capture: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench.wire", str(capture)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _invite(number: str, call_id: str) -> bytes:
    return (
        f"INVITE sip:112@127.0.0.1 SIP/2.0\r\nFrom: <sip:{number}@127.0.0.3>;tag=1\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\n\r\n"
    ).encode()


def _ok(call_id: str) -> bytes:
    return f"SIP/2.0 200 OK\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n\r\n".encode()


def test_stages_are_the_gaps_between_the_matched_packets(tmp_path: Path) -> None:
    start = (
        b'\x81~\x01\x00{"type":"StasisStart","args":["caller","trunk"],"channel":'
        b'{"id":"s112-bench-1.1","protocol_id":"b-1@127.0.0.3"},"asterisk_id":"x"}'
    )
    originate = b"POST /ari/channels?endpoint=PJSIP%2Fh1&channelId=siaga-offer-s112-bench-1.1-1 HTTP/1.1\r\n\r\n"  # noqa: E501
    capture = tmp_path / "lo.pcap"
    _pcap(
        capture,
        [
            # path A: INVITE at 10.000, 200 OK +1 ms, handset INVITE +3 ms
            (10.000, True, 5000, SIP, _invite("0891001", "a-1@127.0.0.3")),
            (10.001, True, SIP, 5000, _ok("a-1@127.0.0.3")),
            (10.003, True, SIP, 6001, _invite("0891001", "h-1")),
            (10.004, True, SIP, 6001, _invite("0891001", "h-1")),  # a retransmission: ignored
            # path B: 200 OK +1 ms, StasisStart +2 ms, originate +4 ms, handset INVITE +7 ms
            (20.000, True, 5000, SIP, _invite("0892001", "b-1@127.0.0.3")),
            (20.001, True, SIP, 5000, _ok("b-1@127.0.0.3")),
            (20.002, False, ARI, 40000, start),
            (20.004, False, 40001, ARI, originate),
            (20.007, True, SIP, 6002, _invite("0892001", "h-2")),
        ],
    )
    proc = _wire(capture)
    assert proc.returncode == 0, proc.stderr
    rows = {
        tuple(cell.strip() for cell in line.strip("|").split("|")[:2]): line.split("|")[4].strip()
        for line in proc.stdout.splitlines()[2:]
    }
    assert rows == {
        ("A, Queue()", "INVITE -> 200 OK"): "1.00",
        ("A, Queue()", "200 OK -> handset INVITE"): "2.00",
        ("A, Queue()", "INVITE -> handset INVITE"): "3.00",
        ("B, siaga_pbx", "INVITE -> 200 OK"): "1.00",
        ("B, siaga_pbx", "200 OK -> StasisStart"): "1.00",
        ("B, siaga_pbx", "StasisStart -> originate"): "2.00",
        ("B, siaga_pbx", "originate -> handset INVITE"): "3.00",
        ("B, siaga_pbx", "INVITE -> handset INVITE"): "7.00",
    }


def test_a_capture_without_calls_is_an_error(tmp_path: Path) -> None:
    capture = tmp_path / "empty.pcap"
    _pcap(capture, [])
    proc = _wire(capture)
    assert proc.returncode == 1
    assert "no complete call" in proc.stderr
