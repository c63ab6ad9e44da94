"""What end-to-end tests look at after a call: the recording's audio, the
incident rows in PostgreSQL, and what is left in Asterisk."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np

from pgtools import run_sync

from .asterisk import AsteriskInstance


def wav_duration(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate()


def tone_strength(path: Path, freq_hz: float, *, start_s: float = 0.0) -> float:
    """How far the spectrum at ``freq_hz`` stands above the median (a ratio).

    A tone that is really in the recording stands far above the
    noise floor (thousands of times here); an absent one stays in the tens.
    """
    with wave.open(str(path), "rb") as w:
        rate = w.getframerate()
        assert w.getsampwidth() == 2, "Asterisk writes 16-bit WAV"
        frames = w.readframes(w.getnframes())
    samples = np.frombuffer(frames, dtype="<i2").astype(np.float64)[int(start_s * rate) :]
    assert samples.size > rate // 2, f"{path} holds less than half a second of audio"
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    freqs = np.fft.rfftfreq(samples.size, 1.0 / rate)
    band = (freqs > freq_hz - 15) & (freqs < freq_hz + 15)
    floor = float(np.median(spectrum)) or 1e-9
    return float(spectrum[band].max()) / floor


def db_rows(dsn: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            for kind in ("json", "jsonb"):
                await conn.set_type_codec(
                    kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
                )
            return [dict(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return run_sync(go)


def wait_rows(
    dsn: str,
    sql: str,
    *args: Any,
    until: Callable[[list[dict[str, Any]]], bool] = bool,
    timeout: float = 20.0,
) -> list[dict[str, Any]]:
    """Poll a query until ``until(rows)`` holds (the outbox relay is asynchronous)."""
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows = db_rows(dsn, sql, *args)
        if until(rows):
            return rows
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting on {sql!r}; last rows: {rows}")


def leftovers(instance: AsteriskInstance) -> tuple[list[str], list[str]]:
    """Channels, and bridges of ours, that Asterisk still holds."""
    _, channels = instance.ari("GET", "channels")
    _, bridges = instance.ari("GET", "bridges")
    return (
        [c["id"] for c in channels],
        [b["id"] for b in bridges if str(b["id"]).startswith("siaga-")],
    )


def wait_clean(instance: AsteriskInstance, timeout: float = 10.0) -> None:
    """Assert that Asterisk ends up holding no channel and no bridge of ours."""
    deadline = time.monotonic() + timeout
    left: tuple[list[str], list[str]] = ([], [])
    while time.monotonic() < deadline:
        left = leftovers(instance)
        if left == ([], []):
            return
        time.sleep(0.2)
    raise AssertionError(f"Asterisk still holds channels {left[0]} and bridges {left[1]}")


def reset(instance: AsteriskInstance, timeout: float = 10.0) -> None:
    """Hang up every channel and destroy every bridge of ours on the test
    instance, so a test starts from nothing a previous test left behind."""
    channels, bridges = leftovers(instance)
    for chan in channels:
        instance.ari("DELETE", f"channels/{chan}")
    for bridge in bridges:
        instance.ari("DELETE", f"bridges/{bridge}")
    wait_clean(instance, timeout)


def media_port(proc: Any) -> int:
    """The RTP port a sipp process (``SippProcess``) listens on (its ``-mp``)."""
    args: list[str] = proc.args
    return int(args[args.index("-mp") + 1])


def rtp_received(port: int, seconds: float, out: Path) -> Path:
    """Record, as a WAV, the PCMU audio arriving at 127.0.0.1:``port`` for ``seconds``.

    What a phone really receives: captured off the loopback interface with a
    raw packet socket (root), so it includes everything Asterisk mixed into the
    stream, such as a whisper. (An ARI snoop cannot show a whisper: Asterisk
    hands spies a frame before whisper sources are mixed into it.)
    """
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
    sock.bind(("lo", 0))
    sock.settimeout(0.2)
    payload = bytearray()
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            try:
                frame, meta = sock.recvfrom(65535)
            except TimeoutError:
                continue
            if meta[2] != socket.PACKET_HOST or frame[12:14] != b"\x08\x00":
                continue  # each loopback packet is seen twice: keep the arriving copy
            ip = frame[14:]
            if ip[9] != 17:  # UDP
                continue
            udp = ip[(ip[0] & 0x0F) * 4 :]
            if int.from_bytes(udp[2:4], "big") != port:
                continue
            rtp = udp[8:]
            if len(rtp) < 12 or rtp[1] & 0x7F != 0:  # PCMU only
                continue
            payload += rtp[12 + 4 * (rtp[0] & 0x0F) :]
    finally:
        sock.close()
    raw = out.with_suffix(".ul")
    raw.write_bytes(bytes(payload))
    subprocess.run(
        [
            "sox",
            "-t",
            "ul",
            "-r",
            "8000",
            "-c",
            "1",
            str(raw),
            "-e",
            "signed",
            "-b",
            "16",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    assert wav_duration(out) > 0.5 * seconds, f"too little RTP reached port {port}"
    return out
