#!/usr/bin/env bash
# Render the Siaga 112 Asterisk configuration for $SIAGA_PROFILE, then run Asterisk
# in the foreground (PID 1's child via exec, so `docker stop` reaches it).
set -euo pipefail

PROFILE="${SIAGA_PROFILE:-lab}"
RENDER=/opt/siaga/scripts/render_asterisk.py
INSTANCE_DIR="$(python3 "$RENDER" --get "$PROFILE" INSTANCE_DIR)"

mkdir -p "$INSTANCE_DIR"/{run,log,spool/recording,db,lib,cache}
stage="$INSTANCE_DIR/etc.new"
rm -rf "$stage"
python3 "$RENDER" "$PROFILE" "$stage"
rm -rf "$INSTANCE_DIR/etc"
mv "$stage" "$INSTANCE_DIR/etc"
ln -sfn "$INSTANCE_DIR" /srv/siaga/current   # for the healthcheck
rm -f "$INSTANCE_DIR/run/asterisk.ctl" "$INSTANCE_DIR/run/asterisk.pid"

exec asterisk -f -n -C "$INSTANCE_DIR/etc/asterisk.conf" "$@"
