#!/usr/bin/env bash
# Build (or reuse) a Debian sid chroot that holds Asterisk 22 from Debian's own
# packages. Debian 12 ships no asterisk package, and installing sid's into the
# host would replace libc6 and hundreds of other packages, so Asterisk lives in
# its own root. Idempotent: a healthy cached chroot is reused as is.
set -euo pipefail

ROOT="${SIAGA_ASTERISK_ROOT:-/var/cache/siaga-pbx/asterisk-root}"
STAMP="$ROOT/.siaga-provisioned"
PKGS="asterisk asterisk-core-sounds-en-gsm"

log() { printf 'provision-asterisk: %s\n' "$*" >&2; }

healthy() {
  [ -f "$STAMP" ] && [ -x "$ROOT/usr/sbin/asterisk" ] \
    && chroot "$ROOT" /usr/sbin/asterisk -V 2>/dev/null | grep -q '^Asterisk 22\.'
}

host_mirror() {
  # The mirror the host's own apt uses; never a hard-coded host name.
  local m=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    m=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
    m=$(awk '$1=="deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list)
  fi
  [ -n "$m" ] || { log "cannot find the host's apt mirror"; exit 1; }
  printf '%s' "$m"
}

unmount_all() {
  for m in dev proc; do
    if mountpoint -q "$ROOT/$m" 2>/dev/null; then umount -l "$ROOT/$m" || true; fi
  done
}

if healthy; then
  log "reusing $ROOT ($(chroot "$ROOT" /usr/sbin/asterisk -V))"
  exit 0
fi

command -v debootstrap >/dev/null || {
  log "installing debootstrap"
  apt-get install -y debootstrap >/dev/null
}

if [ -d "$ROOT" ]; then
  log "chroot at $ROOT is missing or broken: rebuilding"
  unmount_all
  rm -rf --one-file-system "$ROOT"
fi
mkdir -p "$(dirname "$ROOT")"
MIRROR=$(host_mirror)
TMP="$ROOT.partial"
if [ -d "$TMP" ]; then
  for m in dev proc; do mountpoint -q "$TMP/$m" 2>/dev/null && umount -l "$TMP/$m"; done
  rm -rf --one-file-system "$TMP"
fi
log "debootstrap sid from $MIRROR"
debootstrap --variant=minbase sid "$TMP" "$MIRROR" >"$TMP.log" 2>&1 || {
  tail -20 "$TMP.log" >&2; exit 1; }
APT_OPTS=(-o Acquire::Check-Valid-Until=false -o APT::Install-Recommends=false)
chroot "$TMP" apt-get "${APT_OPTS[@]}" update >>"$TMP.log" 2>&1
DEBIAN_FRONTEND=noninteractive chroot "$TMP" apt-get "${APT_OPTS[@]}" install -y $PKGS \
  >>"$TMP.log" 2>&1 || { tail -20 "$TMP.log" >&2; exit 1; }
chroot "$TMP" apt-get clean
mkdir -p "$TMP/var/run/asterisk" "$TMP/var/log/asterisk" "$TMP/var/spool/asterisk/recording"
touch "$TMP/.siaga-provisioned"
mv "$TMP" "$ROOT"
rm -f "$TMP.log"
healthy || { log "asterisk did not come up in the new chroot"; exit 1; }
log "ready: $(chroot "$ROOT" /usr/sbin/asterisk -V)"
