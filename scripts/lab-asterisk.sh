#!/usr/bin/env bash
# The lab Asterisk for `make run`: start it and leave it running (idempotent).
#   lab-asterisk.sh [start|stop|restart|status]   (default: start)
# Lab profile: SIP udp 127.0.0.1:5060, ARI http://127.0.0.1:8088 (siaga / siaga-lab-ari),
# RTP 10000-10999; see asterisk/README.md.
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/asterisk-instance.sh" "${1:-start}" lab
