"""Where the ring latency goes, read off the wire: a per-stage breakdown from a packet capture.

Capture the loopback while the benchmark runs (tcpdump is not a project dependency)::

    tcpdump -i lo -w /tmp/bench.pcap 'udp or tcp port 28088' &
    python -m bench --calls 5:100,25:500 --sustain 50:0
    kill %1
    python -m bench.wire /tmp/bench.pcap

Per call, matched by the caller's number (each bench call has its own) and, for path B, by
the caller's SIP Call-ID (``protocol_id`` in ``StasisStart``) and channel id (in the offer's
``channelId``), the stages are:

- ``INVITE -> 200 OK``: the caller's INVITE to Asterisk's 200 OK for it;
- path A: ``200 OK -> handset INVITE`` (app_queue's work);
- path B: ``200 OK -> StasisStart`` (Asterisk: the rest of the dialplan, the event out),
  ``StasisStart -> originate`` (the service: from the event's first byte on the wire to its
  ``POST /channels`` on the wire), ``originate -> handset INVITE`` (Asterisk);
- ``INVITE -> handset INVITE``: the whole ring latency, as seen on the wire (sipp's own
  timestamps, in the main benchmark, add its scheduling delay on top).

Only the first handset INVITE of each call counts. Timestamps are the capture's, so every
stage is measured on the same clock.
"""

from __future__ import annotations

import argparse
import re
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .stats import percentile

_LINK_ETHERNET = 1
_LINK_LINUX_SLL = 113
_MAGIC_US = 0xA1B2C3D4
_MAGIC_NS = 0xA1B23C4D

_FROM_USER = re.compile(
    rb"^(?:From|f)\s*:[^\r\n]*?<?sips?:([^@>;\s]+)@", re.IGNORECASE | re.MULTILINE
)
_CALL_ID = re.compile(rb"^(?:Call-ID|i)\s*:\s*(\S+)", re.IGNORECASE | re.MULTILINE)
_CSEQ_INVITE = re.compile(rb"^CSeq\s*:\s*\d+\s+INVITE", re.IGNORECASE | re.MULTILINE)
_JSON_STR = r'"{}"\s*:\s*"([^"]*)"'


@dataclass(frozen=True, slots=True)
class Packet:
    at: float
    udp: bool
    src_port: int
    dst_port: int
    payload: bytes


def read_pcap(path: Path) -> Iterator[Packet]:
    """IPv4 UDP/TCP packets with a payload, from a classic pcap file (tcpdump -w)."""
    data = path.read_bytes()
    if len(data) < 24:
        raise ValueError(f"{path}: not a pcap file (too short)")
    magic = struct.unpack("<I", data[:4])[0]
    if magic not in (_MAGIC_US, _MAGIC_NS):
        raise ValueError(f"{path}: not a little-endian classic pcap file (pcapng is not read)")
    scale = 1e9 if magic == _MAGIC_NS else 1e6
    link = struct.unpack("<I", data[20:24])[0]
    if link not in (_LINK_ETHERNET, _LINK_LINUX_SLL):
        raise ValueError(f"{path}: link type {link} is not read (capture on lo with -i lo)")
    offset = 24
    while offset + 16 <= len(data):
        sec, frac, caplen, _ = struct.unpack("<IIII", data[offset : offset + 16])
        frame = data[offset + 16 : offset + 16 + caplen]
        offset += 16 + caplen
        packet = _decode(frame[14:] if link == _LINK_ETHERNET else frame[16:], sec + frac / scale)
        if packet is not None:
            yield packet


def _decode(ip: bytes, at: float) -> Packet | None:
    if len(ip) < 20 or ip[0] >> 4 != 4:
        return None
    body = ip[(ip[0] & 0x0F) * 4 :]
    if ip[9] == 17 and len(body) >= 8:
        src, dst = struct.unpack(">HH", body[:4])
        payload = body[8:]
        udp = True
    elif ip[9] == 6 and len(body) >= 20:
        src, dst = struct.unpack(">HH", body[:4])
        payload = body[(body[12] >> 4) * 4 :]
        udp = False
    else:
        return None
    return Packet(at, udp, src, dst, payload) if payload else None


@dataclass
class Call:
    number: str
    invite: float
    call_id: str
    ok: float | None = None
    stasis_start: float | None = None
    channel_id: str | None = None
    originate: float | None = None
    handset_invite: float | None = None

    @property
    def path(self) -> str:
        return "B" if self.stasis_start is not None else "A"


def _match(pattern: re.Pattern[bytes], payload: bytes) -> str | None:
    m = pattern.search(payload)
    return m.group(1).decode(errors="replace") if m else None


def _json_field(name: str, text: str) -> str | None:
    m = re.search(_JSON_STR.format(name), text)
    return m.group(1) if m else None


def calls_from(packets: Iterator[Packet], sip_port: int, ari_port: int) -> list[Call]:
    """Match each caller INVITE (to ``sip_port``) with the events that follow it."""
    calls: list[Call] = []
    by_number: dict[str, Call] = {}
    by_call_id: dict[str, Call] = {}
    by_channel: dict[str, Call] = {}
    for p in packets:
        pay = p.payload
        call: Call | None
        if p.udp and pay.startswith(b"INVITE ") and p.dst_port == sip_port:
            number, call_id = _match(_FROM_USER, pay), _match(_CALL_ID, pay)
            if number and call_id and call_id not in by_call_id:  # not a retransmission
                new = Call(number, p.at, call_id)
                calls.append(new)
                by_number[number] = by_call_id[call_id] = new
        elif p.udp and pay.startswith(b"INVITE ") and p.src_port == sip_port:
            number = _match(_FROM_USER, pay)
            call = by_number.get(number or "")
            if call is not None and call.handset_invite is None:
                call.handset_invite = p.at
        elif p.udp and pay.startswith(b"SIP/2.0 200") and p.src_port == sip_port:
            call = by_call_id.get(_match(_CALL_ID, pay) or "")
            if call is not None and call.ok is None and _CSEQ_INVITE.search(pay):
                call.ok = p.at
        elif not p.udp and p.src_port == ari_port and b'"StasisStart"' in pay:
            text = pay.decode(errors="replace")
            call = by_call_id.get(_json_field("protocol_id", text) or "")
            if call is not None and call.stasis_start is None:
                call.stasis_start = p.at
                call.channel_id = _json_field("id", text)
                if call.channel_id:
                    by_channel[call.channel_id] = call
        elif not p.udp and p.dst_port == ari_port and pay.startswith(b"POST /ari/channels?"):
            m = re.search(rb"channelId=siaga-offer-([^&\s]+)-\d+", pay)
            call = by_channel.get(m.group(1).decode() if m else "")
            if call is not None and call.originate is None:
                call.originate = p.at
    return calls


STAGES = {
    "A": [
        ("INVITE -> 200 OK", "invite", "ok"),
        ("200 OK -> handset INVITE", "ok", "handset_invite"),
        ("INVITE -> handset INVITE", "invite", "handset_invite"),
    ],
    "B": [
        ("INVITE -> 200 OK", "invite", "ok"),
        ("200 OK -> StasisStart", "ok", "stasis_start"),
        ("StasisStart -> originate", "stasis_start", "originate"),
        ("originate -> handset INVITE", "originate", "handset_invite"),
        ("INVITE -> handset INVITE", "invite", "handset_invite"),
    ],
}


def breakdown(calls: list[Call]) -> dict[str, dict[str, list[float]]]:
    """Per path, per stage: the durations in ms of the calls that have both ends."""
    out: dict[str, dict[str, list[float]]] = {}
    for path, stages in STAGES.items():
        mine = [c for c in calls if c.path == path and c.handset_invite is not None]
        if not mine:
            continue
        out[path] = {}
        for name, start, end in stages:
            values = []
            for c in mine:
                a, b = getattr(c, start), getattr(c, end)
                if a is not None and b is not None:
                    values.append((b - a) * 1000.0)
            out[path][name] = sorted(values)
    return out


def render(result: dict[str, dict[str, list[float]]]) -> str:
    lines = [
        "| path | stage | calls | p50 (ms) | p90 (ms) | p99 (ms) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for path, stages in result.items():
        label = "A, Queue()" if path == "A" else "B, siaga_pbx"
        for name, values in stages.items():
            if values:
                lines.append(
                    f"| {label} | {name} | {len(values)} | "
                    + " | ".join(f"{percentile(values, q):.2f}" for q in (50, 90, 99))
                    + " |"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("pcap", type=Path)
    parser.add_argument("--sip-port", type=int, default=25060, help="the bench Asterisk's SIP port")
    parser.add_argument(
        "--ari-port", type=int, default=28088, help="the bench Asterisk's HTTP port"
    )
    args = parser.parse_args(argv)
    calls = calls_from(read_pcap(args.pcap), args.sip_port, args.ari_port)
    result = breakdown(calls)
    if not result:
        print(f"no complete call in {args.pcap}", file=sys.stderr)
        return 1
    print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
