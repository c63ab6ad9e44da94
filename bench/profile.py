"""The bench profile (asterisk/profiles/bench.env) and the handsets it describes."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROFILE_DIR = REPO / "asterisk" / "profiles"
BENCH_ASTERISK_DIR = REPO / "asterisk" / "bench"
SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
INSTANCE_SCRIPT = REPO / "scripts" / "asterisk-instance.sh"


def read_profile(name: str) -> dict[str, str]:
    """KEY=VALUE lines of ``asterisk/profiles/<name>.env``, parsed like render_asterisk.py."""
    values: dict[str, str] = {}
    path = PROFILE_DIR / f"{name}.env"
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, rest = line.partition("=")
        values[key] = " ".join(shlex.split(rest, comments=True))
    return values


@dataclass(frozen=True)
class Handset:
    """One bench handset endpoint and the sipp process port its static contact points at."""

    name: str
    addr: str
    port: int

    @property
    def endpoint(self) -> str:
        return f"PJSIP/{self.name}"


@dataclass(frozen=True)
class BenchProfile:
    """What the bench needs from the profile, typed."""

    values: dict[str, str]

    @classmethod
    def load(cls, name: str = "bench") -> BenchProfile:
        return cls(read_profile(name))

    def _int(self, key: str) -> int:
        return int(self.values[key])

    @property
    def name(self) -> str:
        return self.values["PROFILE"]

    @property
    def ari_url(self) -> str:
        return f"http://{self.values['HTTP_BIND_ADDR']}:{self.values['HTTP_PORT']}"

    @property
    def ari_user(self) -> str:
        return self.values["ARI_USER"]

    @property
    def ari_password(self) -> str:
        return self.values["ARI_PASSWORD"]

    @property
    def sip_target(self) -> str:
        return f"{self.values['SIP_BIND_ADDR']}:{self.values['SIP_PORT']}"

    @property
    def trunk_addr(self) -> str:
        return self.values["TRUNK_ADDR"]

    @property
    def queue_caller_addr(self) -> str:
        return self.values["BENCH_QUEUE_CALLER_ADDR"]

    @property
    def ring_timeout_s(self) -> int:
        return self._int("BENCH_RING_TIMEOUT")

    @property
    def retry_s(self) -> int:
        return self._int("BENCH_RETRY")

    def caller_port(self, path: str) -> int:
        return self._int(f"BENCH_CALLER_PORT_{path}")

    def caller_media_port(self, path: str) -> int:
        return self._int(f"BENCH_CALLER_MEDIA_PORT_{path}")

    @property
    def handset_ports(self) -> list[int]:
        first = self._int("BENCH_HANDSET_PORT_FIRST")
        return [first + i for i in range(self._int("BENCH_HANDSET_PROCESSES"))]

    @property
    def handset_addr(self) -> str:
        return self.values["BENCH_HANDSET_ADDR"]

    def handsets(self, count: int | None = None) -> list[Handset]:
        """bench-h001..: contacts spread round-robin over the sipp handset ports."""
        n = self._int("BENCH_HANDSETS") if count is None else count
        ports = self.handset_ports
        return [
            Handset(f"bench-h{i:03d}", self.handset_addr, ports[(i - 1) % len(ports)])
            for i in range(1, n + 1)
        ]
