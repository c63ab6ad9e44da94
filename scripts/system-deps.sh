#!/usr/bin/env bash
# Host packages the lab and the test suite need (Debian 12, as root). Idempotent:
# installs only what is missing, and refreshes apt's lists only when it must.
set -euo pipefail

need=()
command -v sipp >/dev/null || need+=(sip-tester)
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v sox >/dev/null || need+=(sox)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v pg_ctlcluster >/dev/null || need+=(postgresql)
command -v promtool >/dev/null || need+=(prometheus)  # promtool checks the alert rules
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)

if [ ${#need[@]} -gt 0 ]; then
  echo "system-deps: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${need[@]}" >/dev/null 2>&1 || {
    apt-get update >/dev/null
    apt-get install -y --no-install-recommends "${need[@]}" >/dev/null
  }
fi
