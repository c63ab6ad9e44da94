#!/usr/bin/env bash
# Start, stop and inspect one Siaga 112 Asterisk instance (profile lab or test)
# running from the shared Debian sid chroot.
#
#   asterisk-instance.sh start   PROFILE   provision, render, start, wait for ARI
#   asterisk-instance.sh stop    PROFILE   "core stop now", SIGKILL by pid as last resort
#   asterisk-instance.sh restart PROFILE
#   asterisk-instance.sh status  PROFILE   exit 0 when running, 3 when stopped
#   asterisk-instance.sh cli     PROFILE "COMMAND"   asterisk -rx for this instance
#   asterisk-instance.sh render  PROFILE   only re-render the configuration
#
# Every instance keeps its writable state in <chroot>/srv/siaga/<profile>/
# (etc, run, log, spool, db, lib, cache), so lab and test run side by side.
# proc and dev are mounted into the chroot while at least one instance runs;
# stopping one instance never unmounts them under another.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
ROOT="${SIAGA_ASTERISK_ROOT:-/var/cache/siaga-pbx/asterisk-root}"
LOCK="${ROOT%/}.instances.lock"
START_TIMEOUT="${SIAGA_ASTERISK_START_TIMEOUT:-60}"
PYTHON="${PYTHON:-python3}"

log() { printf 'asterisk-instance: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

usage() {
  sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

[ $# -ge 2 ] || usage
ACTION="$1"
PROFILE="$2"
ENV_FILE="$REPO/asterisk/profiles/$PROFILE.env"
[ -f "$ENV_FILE" ] || die "unknown profile '$PROFILE' (no $ENV_FILE)"
# shellcheck disable=SC1090
set -a; . "$ENV_FILE"; set +a

INST="$ROOT$INSTANCE_DIR"             # host path of the instance dir
CONF="$INSTANCE_DIR/etc/asterisk.conf" # path inside the chroot
PIDFILE="$INST/run/siaga-instance.pid"
CONSOLE_LOG="$INST/log/console.log"
ARI_URL="http://$HTTP_BIND_ADDR:$HTTP_PORT/ari"

# --------------------------------------------------------------------------- helpers
# pid_of PIDFILE CONFPATH: print the pid when it is alive and really is that asterisk
pid_of() {
  local pf="$1" conf="$2" pid
  [ -f "$pf" ] || return 1
  pid=$(cat "$pf" 2>/dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "asterisk .*-C $conf" || return 1
  printf '%s' "$pid"
}

running_pid() { pid_of "$PIDFILE" "$CONF"; }

ari_ok() {
  curl -fsS --max-time 3 -u "$ARI_USER:$ARI_PASSWORD" "$ARI_URL/asterisk/info" >/dev/null 2>&1
}

ast_rx() { # run one CLI command against this instance
  timeout 20 chroot "$ROOT" /usr/sbin/asterisk -C "$CONF" -rx "$1"
}

need_cmd() { # command debian-package
  command -v "$1" >/dev/null 2>&1 && return 0
  log "installing $2"
  DEBIAN_FRONTEND=noninteractive apt-get install -y "$2" >/dev/null \
    || die "could not install $2 (apt-get install -y $2)"
}

# other instances alive? (any pid file under <chroot>/srv/siaga/*/run/)
other_instances_alive() {
  local pf dir conf
  for pf in "$ROOT"/srv/siaga/*/run/siaga-instance.pid; do
    [ -e "$pf" ] || continue
    [ "$pf" = "$PIDFILE" ] && continue
    dir="${pf%/run/siaga-instance.pid}"
    conf="${dir#"$ROOT"}/etc/asterisk.conf"
    if pid_of "$pf" "$conf" >/dev/null; then return 0; fi
  done
  return 1
}

mount_chroot() {
  mkdir -p "$ROOT/proc" "$ROOT/dev"
  mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
  mountpoint -q "$ROOT/dev" || mount --bind /dev "$ROOT/dev"
}

unmount_chroot_if_unused() {
  if other_instances_alive; then
    log "another instance still runs: leaving proc and dev mounted"
    return 0
  fi
  local m
  for m in dev proc; do
    if mountpoint -q "$ROOT/$m"; then umount "$ROOT/$m" 2>/dev/null || umount -l "$ROOT/$m"; fi
  done
}

port_busy() { # proto(u|t) addr port
  ss -H -ln"$1" "sport = :$3" 2>/dev/null | awk '{print $4}' | grep -q -E "^($2|0\.0\.0\.0|\*|\[::\]):$3$"
}

render() {
  local stage="$INST/etc.new"
  rm -rf "$stage"
  mkdir -p "$stage"
  "$PYTHON" "$HERE/render_asterisk.py" "$PROFILE" "$stage" >/dev/null \
    || die "rendering profile $PROFILE failed"
  rm -rf "$INST/etc"
  mv "$stage" "$INST/etc"
}

# --------------------------------------------------------------------------- actions
do_start() {
  local pid
  if pid=$(running_pid); then
    if ari_ok; then log "$PROFILE already running (pid $pid), ARI answers at $ARI_URL"; return 0; fi
    log "$PROFILE runs (pid $pid) but ARI does not answer: restarting"
    do_stop
  fi
  need_cmd curl curl
  need_cmd sipp sip-tester
  need_cmd espeak-ng espeak-ng
  need_cmd sox sox
  bash "$HERE/provision-asterisk.sh" || die "provisioning the Asterisk chroot at $ROOT failed"
  bash "$HERE/make-prompts.sh" "$ROOT/usr/share/asterisk/sounds/id/siaga" \
    "$ROOT/usr/share/asterisk/moh/siaga" || die "making the Indonesian prompts failed"

  mkdir -p "$INST"/{run,log,spool/recording,db,lib,cache}
  render

  if port_busy u "$SIP_BIND_ADDR" "$SIP_PORT"; then
    die "UDP $SIP_BIND_ADDR:$SIP_PORT is already in use (another SIP server?)"
  fi
  if port_busy t "$HTTP_BIND_ADDR" "$HTTP_PORT"; then
    die "TCP $HTTP_BIND_ADDR:$HTTP_PORT is already in use (another Asterisk/HTTP server?)"
  fi

  exec 9>"$LOCK"
  flock -w 30 9 || die "could not take $LOCK"
  mount_chroot
  rm -f "$INST/run/asterisk.ctl" "$INST/run/asterisk.pid"
  : >"$CONSOLE_LOG"
  # setsid: own session, so a Ctrl-C in the caller's terminal does not reach it.
  setsid chroot "$ROOT" /usr/sbin/asterisk -f -n -C "$CONF" \
    </dev/null >>"$CONSOLE_LOG" 2>&1 &
  pid=$!
  printf '%s\n' "$pid" >"$PIDFILE"
  flock -u 9
  exec 9>&-

  local deadline=$((SECONDS + START_TIMEOUT))
  until ari_ok; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$CONSOLE_LOG" "$INST/log/messages.log" >&2 2>/dev/null || true
      rm -f "$PIDFILE"
      exec 9>"$LOCK"; flock -w 30 9 && unmount_chroot_if_unused; exec 9>&-
      die "asterisk ($PROFILE) exited during startup; see $INST/log/"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 30 "$INST/log/messages.log" >&2 2>/dev/null || true
      do_stop || true
      die "ARI at $ARI_URL did not answer within ${START_TIMEOUT}s (see $INST/log/messages.log)"
    fi
    sleep 0.5
  done
  log "$PROFILE running: pid $pid, SIP udp $SIP_BIND_ADDR:$SIP_PORT, ARI $ARI_URL, instance $INST"
}

do_stop() {
  local pid
  if pid=$(running_pid); then
    log "stopping $PROFILE (pid $pid)"
    ast_rx "core stop now" >/dev/null 2>&1 || true
    local i
    for i in $(seq 1 40); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.25
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "pid $pid ignored 'core stop now': SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      for i in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    fi
  else
    log "$PROFILE is not running"
  fi
  rm -f "$PIDFILE"
  exec 9>"$LOCK"
  flock -w 30 9 || die "could not take $LOCK"
  unmount_chroot_if_unused
  flock -u 9
  exec 9>&-
}

do_status() {
  local pid
  if pid=$(running_pid); then
    if ari_ok; then
      echo "$PROFILE: running (pid $pid), ARI $ARI_URL answers, SIP udp $SIP_BIND_ADDR:$SIP_PORT"
    else
      echo "$PROFILE: running (pid $pid), ARI $ARI_URL NOT answering"
    fi
    return 0
  fi
  echo "$PROFILE: stopped"
  return 3
}

case "$ACTION" in
  start) do_start ;;
  stop) do_stop ;;
  restart) do_stop; do_start ;;
  status) do_status ;;
  render) mkdir -p "$INST"; render; log "rendered $PROFILE into $INST/etc" ;;
  cli)
    [ $# -ge 3 ] || die "usage: asterisk-instance.sh cli PROFILE \"COMMAND\""
    running_pid >/dev/null || die "$PROFILE is not running"
    ast_rx "$3"
    ;;
  *) usage ;;
esac
