"""Recording files: size, streamed SHA-256 and WAV duration, off the event loop."""

from __future__ import annotations

import asyncio
import hashlib
import wave
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RecordingInfo", "describe_recording", "describe_recording_sync"]

_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class RecordingInfo:
    """What we know of a recording file. ``duration_s`` is None when the file
    is not a WAV that the stdlib ``wave`` module can read."""

    path: str
    size_bytes: int
    sha256: str
    duration_s: float | None

    @property
    def empty(self) -> bool:
        """No audio in it: an empty file, or a WAV with no frames (44 bytes of
        header: the recorder stopped before the first frame)."""
        return self.size_bytes == 0 or self.duration_s == 0.0


def describe_recording_sync(path: str | Path) -> RecordingInfo:
    """Blocking version of ``describe_recording`` (for threads and scripts)."""
    p = Path(path)
    digest = hashlib.sha256()
    size = 0
    with p.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return RecordingInfo(str(p), size, digest.hexdigest(), _wav_duration(p))


def _wav_duration(p: Path) -> float | None:
    try:
        with wave.open(str(p), "rb") as w:
            rate = w.getframerate()
            return w.getnframes() / rate if rate > 0 else None
    except (wave.Error, EOFError):
        return None


async def describe_recording(path: str | Path) -> RecordingInfo:
    """Size, SHA-256 and WAV duration of ``path``, computed in a worker thread.

    Raises ``OSError`` (e.g. ``FileNotFoundError``) if the file cannot be read.
    """
    return await asyncio.to_thread(describe_recording_sync, path)
