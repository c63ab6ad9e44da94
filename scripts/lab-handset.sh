#!/usr/bin/env bash
# A sipp handset on the lab profile (`make run`): it REGISTERs like a real phone,
# answers Asterisk's qualify OPTIONS (so the service sees the taker as reachable),
# and answers calls with a 1300 Hz tone.
#
#   scripts/lab-handset.sh [USER]        USER: taker1 (default), taker2, taker3,
#                                        disp-damkar, disp-dinkes, disp-polisi
# Environment (all optional):
#   LAB_HANDSET_PORT  SIP port of the handset on 127.0.0.1 (default 5171 for taker1,
#                     5172/5173 for taker2/3, 5181..5183 for the dispatchers)
#   LAB_CALLS         calls to answer before unregistering and exiting (default 0: until
#                     Ctrl-C or the registration ends)
#   LAB_RING_S        ring time before answering, seconds (default 1)
#   LAB_TALK_S        talk time before the handset hangs up, seconds (default 10)
#   LAB_HANGUP        "bye" (hang up after LAB_TALK_S, default) or "wait" (the caller hangs up)
#   LAB_EXPIRES       registration lifetime, seconds (default 3600; it is not refreshed)
#   LAB_WORKDIR       where sipp writes its logs (default: a new temporary directory)
# The password comes from asterisk/profiles/lab.env (SECRET_<USER>). sipp's logs
# (messages.log, logs.log with "siaga: qualify answered" / "siaga: ended-by ...")
# stay in the work directory, which is printed. Exit status: sipp's (0 = every
# OPTIONS and call followed the scenario).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
SCENARIOS="$REPO/tests/e2e/scenarios"
USER_NAME="${1:-taker1}"

profile() { python3 "$HERE/render_asterisk.py" --get lab "$1"; }
key="SECRET_$(printf '%s' "$USER_NAME" | tr 'a-z-' 'A-Z_')"
PASSWORD="$(profile "$key")" || { echo "lab-handset: no lab handset '$USER_NAME'" >&2; exit 2; }
SIP="$(profile SIP_BIND_ADDR):$(profile SIP_PORT)"

case "$USER_NAME" in
  taker1) default_port=5171 ;;
  taker2) default_port=5172 ;;
  taker3) default_port=5173 ;;
  disp-damkar) default_port=5181 ;;
  disp-dinkes) default_port=5182 ;;
  disp-polisi) default_port=5183 ;;
  *) default_port=5179 ;;
esac
PORT="${LAB_HANDSET_PORT:-$default_port}"
ticks() { python3 -c 'import sys; print(max(1, round(float(sys.argv[1]) / 0.1)))' "$1"; }

command -v sipp >/dev/null || apt-get install -y --no-install-recommends sip-tester >/dev/null
WORK="${LAB_WORKDIR:-$(mktemp -d /tmp/lab-handset-XXXXXX)}"
mkdir -p "$WORK"
cd "$WORK"
sox -n -r 8000 -c 1 -t ul tone.ulaw synth 120 sine 1300 vol 0.5
echo "lab-handset: $USER_NAME on 127.0.0.1:$PORT registers at $SIP; logs in $WORK" >&2
# the media port: one per handset, clear of the lab's RTP range (10000-10999)
exec sipp -sf "$SCENARIOS/lab_handset.xml" -oocsf "$SCENARIOS/lab_handset_calls.xml" \
  -i 127.0.0.1 -p "$PORT" -mi 127.0.0.1 -mp "$((41000 + (PORT - 5100) * 10))" -m 1 \
  -au "$USER_NAME" -ap "$PASSWORD" -set user "$USER_NAME" \
  -set expires "${LAB_EXPIRES:-3600}" -set calls "${LAB_CALLS:-0}" \
  -set ring_ticks "$(ticks "${LAB_RING_S:-1}")" -set talk_ticks "$(ticks "${LAB_TALK_S:-10}")" \
  -set hangup "${LAB_HANGUP:-bye}" \
  -trace_msg -message_file messages.log -trace_logs -log_file logs.log \
  -trace_err -error_file errors.log -trace_stat -stf stat.csv -nostdin \
  "$SIP" </dev/null >screen.txt 2>&1
