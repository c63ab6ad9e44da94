"""The ``siaga-pbx`` command: run, doctor, migrate, purge, user-add, --version."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import asyncpg
import structlog
import uvloop

from . import __version__, ari, audit, logs
from .config import ConfigError, Settings, load, unknown_environment
from .incidents import migrate, purge, write_audit_now
from .people import InvalidUser, PasswordPolicyError, UsernameTaken, add_user
from .runtime import Runtime

EXIT_STEPPED_DOWN = 3


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="siaga-pbx", description="Siaga 112 PBX service")
    p.add_argument("--version", action="version", version=f"siaga-pbx {__version__}")
    p.add_argument("--config", type=Path, help="TOML settings file (else $SIAGA_CONFIG_FILE)")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the service in the foreground")
    sub.add_parser("doctor", help="check Asterisk/ARI and PostgreSQL reachability")
    sub.add_parser("migrate", help="apply database migrations (safe to repeat)")
    purge = sub.add_parser("purge", help="delete recordings and incidents past retention")
    purge.add_argument("--dry-run", action="store_true", help="only report what would go")
    user = sub.add_parser(
        "user-add", help="create a user (the first admin); the password is read from the terminal"
    )
    user.add_argument("username")
    user.add_argument("--display-name", required=True)
    user.add_argument(
        "--role",
        action="append",
        required=True,
        choices=["admin", "supervisor", "call_taker", "dispatcher", "ops"],
    )
    user.add_argument("--taker-id")
    user.add_argument("--handset")
    user.add_argument("--agency")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load(args.config)
    except ConfigError as exc:
        print(f"siaga-pbx: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    if unknown := unknown_environment():
        structlog.get_logger(__name__).warning(
            "config.unknown_environment", variables=unknown, hint="no setting has these names"
        )
    if args.command == "run":
        if settings.event_loop == "uvloop":
            return uvloop.run(_run(settings))
        return asyncio.run(_run(settings))
    if args.command == "doctor":
        return asyncio.run(doctor(settings))
    if args.command == "migrate":
        return asyncio.run(_migrate(settings))
    if args.command == "purge":
        return asyncio.run(_purge(settings, dry_run=args.dry_run))
    if args.command == "user-add":
        return asyncio.run(_user_add(settings, args))
    return 2  # pragma: no cover - argparse refuses unknown commands


async def _run(settings: Settings) -> int:
    rt = Runtime(settings)
    rt.install_signal_handlers()
    await rt.run()
    # A distinct status, so a supervisor can be told not to restart an
    # instance that stepped down (systemd: RestartPreventExitStatus=3);
    # restarting it would take the Stasis app back from the new instance.
    return EXIT_STEPPED_DOWN if rt.stepped_down else 0


async def _migrate(settings: Settings) -> int:
    try:
        applied = await migrate(settings.database_dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        print(
            f"siaga-pbx migrate: cannot migrate {_safe_dsn(settings.database_dsn)}: {exc}",
            file=sys.stderr,
        )
        return 1
    print(f"migrations applied: {', '.join(applied) if applied else 'none (up to date)'}")
    return 0


async def _purge(settings: Settings, *, dry_run: bool) -> int:
    try:
        report = await purge(
            settings.database_dsn,
            recordings_days=settings.recording_retention_days,
            incidents_days=settings.incident_retention_days,
            now=time.time(),
            dry_run=dry_run,
        )
    except Exception as exc:
        if not dry_run:  # a purge that stopped half-way may have deleted some: say who tried
            await _audit(
                settings,
                audit.command_line(
                    "purge", "retention", outcome="failed", reason=f"{type(exc).__name__}: {exc}"
                ),
            )
        raise
    print(report)
    if dry_run:  # nothing changed: nothing to audit
        return 0
    entry = audit.command_line("purge", "retention", after=dataclasses.asdict(report))
    return 0 if await _audit(settings, entry) else 1


async def _audit(settings: Settings, entry: audit.AuditEntry) -> bool:
    """Write the command's audit row to PostgreSQL; False (and a message) if it failed."""
    try:
        await write_audit_now(settings.database_dsn, entry)
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"siaga-pbx: could not write the audit row of {entry.action}: {exc}", file=sys.stderr)
        return False
    return True


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise ValueError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\n")


async def _user_add(settings: Settings, args: argparse.Namespace) -> int:
    try:
        user = await add_user(
            settings.database_dsn,
            username=args.username,
            display_name=args.display_name,
            roles=tuple(dict.fromkeys(args.role)),
            password=_read_password(),
            taker_id=args.taker_id,
            handset=args.handset,
            agency=args.agency,
        )
    except (InvalidUser, PasswordPolicyError, UsernameTaken, ValueError) as exc:
        print(f"siaga-pbx user-add: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"siaga-pbx user-add: {_safe_dsn(settings.database_dsn)}: {exc}", file=sys.stderr)
        return 1
    print(f"user {user.username} created ({', '.join(user.roles)})")
    return 0


def _safe_dsn(dsn: str) -> str:
    """The DSN without its password, for messages."""
    if "@" in dsn and "://" in dsn:
        scheme, rest = dsn.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}@{host}"
    return dsn


async def doctor(settings: Settings) -> int:
    """Check every dependency; print one line each; non-zero if any failed."""
    failures = 0

    def report(ok: bool, what: str, detail: str) -> None:
        nonlocal failures
        failures += not ok
        print(f"[{'ok' if ok else 'FAIL'}] {what}: {detail}")

    async with aiohttp.ClientSession() as session:
        rest = ari.AriRest(
            session,
            f"{settings.ari.url}/ari",
            settings.ari.username,
            settings.ari.password,
            timeout_s=settings.ari.request_timeout_s,
        )
        try:
            info = await rest.asterisk_info()
            version = info.get("system", {}).get("version", "?")
            report(
                str(version).startswith("22."),
                "Asterisk ARI",
                f"{settings.ari.url} answers, Asterisk {version}"
                + ("" if str(version).startswith("22.") else " (22.x expected)"),
            )
        except ari.AriAuthError:
            report(
                False,
                "Asterisk ARI",
                f"{settings.ari.url} refused user "
                f"{settings.ari.username!r}: check ari.username/ari.password and ari.conf",
            )
        except ari.AriError as exc:
            report(False, "Asterisk ARI", str(exc))
    try:
        conn = await asyncpg.connect(settings.database_dsn, timeout=5)
        try:
            version = await conn.fetchval("SHOW server_version")
            applied = await conn.fetchval(
                "SELECT count(*) FROM information_schema.tables"
                " WHERE table_name = 'schema_migrations'"
            )
        finally:
            await conn.close()
        report(
            True,
            "PostgreSQL",
            f"{_safe_dsn(settings.database_dsn)} answers, version {version}"
            + ("" if applied else "; not migrated yet: run `siaga-pbx migrate`"),
        )
    except asyncpg.InvalidPasswordError:
        report(False, "PostgreSQL", f"{_safe_dsn(settings.database_dsn)}: password refused")
    except asyncpg.InvalidCatalogNameError:
        report(False, "PostgreSQL", f"{_safe_dsn(settings.database_dsn)}: database does not exist")
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        report(False, "PostgreSQL", f"{_safe_dsn(settings.database_dsn)} unreachable: {exc}")
    try:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        probe = settings.state_dir / ".doctor"
        probe.write_text("ok")
        probe.unlink()
        report(True, "state dir", f"{settings.state_dir} writable (outbox lives here)")
    except OSError as exc:
        report(False, "state dir", f"{settings.state_dir}: {exc}")
    report(
        settings.recording_dir.is_dir(),
        "recordings",
        f"{settings.recording_dir} "
        + (
            "exists"
            if settings.recording_dir.is_dir()
            else "missing: is Asterisk's spool mounted here?"
        ),
    )
    return 1 if failures else 0
