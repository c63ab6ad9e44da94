"""Start, use and stop a real Asterisk 22 instance for end-to-end tests.

The instance runs from the Debian sid chroot that ``scripts/provision-asterisk.sh`` builds;
``scripts/asterisk-instance.sh`` does the provisioning, rendering, mounting and starting. This
module drives that script and describes the running instance to the tests.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
INSTANCE_SCRIPT = REPO_ROOT / "scripts" / "asterisk-instance.sh"
PROFILE_DIR = REPO_ROOT / "asterisk" / "profiles"
DEFAULT_ROOT = Path("/var/cache/siaga-pbx/asterisk-root")


class AsteriskProvisionError(RuntimeError):
    """Asterisk could not be provisioned or started; the message says why."""


def read_profile(profile: str) -> dict[str, str]:
    """Values of ``asterisk/profiles/<profile>.env`` (shell-compatible KEY=VALUE lines)."""
    path = PROFILE_DIR / f"{profile}.env"
    if not path.is_file():
        raise AsteriskProvisionError(f"no Asterisk profile {profile!r} ({path} is missing)")
    values: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, rest = line.partition("=")
        values[key] = " ".join(shlex.split(rest, comments=True))
    return values


def chroot_root() -> Path:
    """The Asterisk chroot (``SIAGA_ASTERISK_ROOT`` overrides the default)."""
    return Path(os.environ.get("SIAGA_ASTERISK_ROOT", str(DEFAULT_ROOT)))


@dataclass(frozen=True)
class AsteriskInstance:
    """A running Asterisk instance of one profile, as seen from the host."""

    profile: str
    root: Path
    instance_dir: Path
    ari_url: str
    ari_user: str
    ari_password: str
    ari_app: str
    sip_host: str
    sip_port: int
    trunk_addr: str
    trunk_port: int
    rtp_ports: tuple[int, int]
    recording_dir: Path
    log_dir: Path
    values: Mapping[str, str] = field(repr=False)

    @classmethod
    def from_profile(cls, profile: str) -> AsteriskInstance:
        """Describe the instance of ``profile`` (whether or not it runs)."""
        v = read_profile(profile)
        root = chroot_root()
        inst = root / v["INSTANCE_DIR"].lstrip("/")
        return cls(
            profile=profile,
            root=root,
            instance_dir=inst,
            ari_url=f"http://{v['HTTP_BIND_ADDR']}:{v['HTTP_PORT']}",
            ari_user=v["ARI_USER"],
            ari_password=v["ARI_PASSWORD"],
            ari_app=v["STASIS_APP"],
            sip_host=v["SIP_BIND_ADDR"],
            sip_port=int(v["SIP_PORT"]),
            trunk_addr=v["TRUNK_ADDR"],
            trunk_port=int(v["TRUNK_PORT"]),
            rtp_ports=(int(v["RTP_START"]), int(v["RTP_END"])),
            recording_dir=inst / "spool" / "recording",
            log_dir=inst / "log",
            values=v,
        )

    @property
    def sip_target(self) -> str:
        """``host:port`` of Asterisk's SIP transport (sipp's remote argument)."""
        return f"{self.sip_host}:{self.sip_port}"

    def cli(self, cmd: str, timeout: float = 20.0) -> str:
        """Run one Asterisk CLI command (``asterisk -rx``) on this instance; returns its output."""
        proc = subprocess.run(
            [str(INSTANCE_SCRIPT), "cli", self.profile, cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise AsteriskProvisionError(
                f"asterisk -rx {cmd!r} ({self.profile}) failed with {proc.returncode}: "
                f"{proc.stderr.strip() or proc.stdout.strip()}"
            )
        return proc.stdout

    def ari(self, method: str, path: str, *, timeout: float = 5.0) -> tuple[int, Any]:
        """One ARI request with this instance's credentials; returns (status, JSON or None)."""
        url = f"{self.ari_url}/ari/{path.lstrip('/')}"
        token = base64.b64encode(f"{self.ari_user}:{self.ari_password}".encode()).decode()
        req = urllib.request.Request(
            url, method=method, headers={"Authorization": f"Basic {token}"}
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                body = resp.read()
                return resp.status, (json.loads(body) if body else None)
        except urllib.error.HTTPError as exc:
            body = exc.read()
            try:
                return exc.code, json.loads(body) if body else None
            except ValueError:
                return exc.code, body.decode(errors="replace")

    def messages_log(self) -> str:
        """Asterisk's ``messages.log`` of this instance (empty when absent)."""
        path = self.log_dir / "messages.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def console_log(self) -> str:
        """What Asterisk printed in the foreground (startup included)."""
        path = self.log_dir / "console.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def is_running(self) -> bool:
        """True when the instance script reports the instance as running."""
        return _run_script("status", self.profile, timeout=15.0).returncode == 0


def _run_script(action: str, profile: str, *, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(INSTANCE_SCRIPT), action, profile],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_instance(profile: str = "test", *, timeout: float = 300.0) -> AsteriskInstance:
    """Provision the chroot if needed and start ``profile``; waits until ARI answers.

    Raises AsteriskProvisionError with the script's output when anything fails.
    """
    if os.geteuid() != 0:
        raise AsteriskProvisionError(
            "the Asterisk e2e harness needs root (it mounts proc/dev into the chroot and "
            "runs chroot); run the e2e tests as root"
        )
    if not INSTANCE_SCRIPT.exists():
        raise AsteriskProvisionError(f"{INSTANCE_SCRIPT} is missing")
    try:
        proc = _run_script("start", profile, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise AsteriskProvisionError(
            f"starting Asterisk profile {profile!r} took longer than {timeout:.0f}s"
        ) from exc
    if proc.returncode != 0:
        raise AsteriskProvisionError(
            f"could not start Asterisk profile {profile!r} (exit {proc.returncode}):\n"
            f"{proc.stderr.strip()}\n{proc.stdout.strip()}"
        )
    return AsteriskInstance.from_profile(profile)


def stop_instance(profile: str = "test", *, timeout: float = 60.0) -> None:
    """Stop ``profile`` (``core stop now``; SIGKILL by recorded pid as last resort)."""
    proc = _run_script("stop", profile, timeout=timeout)
    if proc.returncode != 0:
        raise AsteriskProvisionError(
            f"could not stop Asterisk profile {profile!r}: {proc.stderr.strip()}"
        )


def asterisk_fixture(
    profile: str = "test", *, name: str = "asterisk_instance", stop_at_end: bool = True
) -> Callable[..., Iterator[AsteriskInstance]]:
    """A session-scoped pytest fixture that yields a running :class:`AsteriskInstance`.

    It fails (never skips) the requesting tests when Asterisk cannot be provisioned. With
    ``stop_at_end`` the instance is stopped when the session ends (only if this fixture
    started it: an instance that was already running is left running).

    Usage in a conftest.py::

        asterisk_instance = asterisk_fixture("test")
    """

    @pytest.fixture(scope="session", name=name)
    def _fixture() -> Iterator[AsteriskInstance]:
        described = AsteriskInstance.from_profile(profile)
        was_running = described.is_running() if INSTANCE_SCRIPT.exists() else False
        try:
            instance = start_instance(profile)
        except AsteriskProvisionError as exc:
            pytest.fail(f"Asterisk ({profile}) is not available: {exc}", pytrace=False)
        try:
            yield instance
        finally:
            if stop_at_end and not was_running:
                stop_instance(profile)

    return _fixture
