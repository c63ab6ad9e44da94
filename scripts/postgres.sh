#!/usr/bin/env bash
# Make sure the host's PostgreSQL cluster runs and the lab database exists.
set -euo pipefail
DB="${1:-siaga}"
ver=$(ls /etc/postgresql 2>/dev/null | sort -n | tail -1)
[ -n "$ver" ] || { echo "postgres: no PostgreSQL cluster configured" >&2; exit 1; }
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  pg_ctlcluster --skip-systemctl-redirect "$ver" main start
  for _ in $(seq 1 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
fi
pg_isready -q -h 127.0.0.1 -p 5432 || { echo "postgres: not accepting connections" >&2; exit 1; }
if ! psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$DB'" postgres | grep -q 1; then
  psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE \"$DB\"" postgres >/dev/null
fi
