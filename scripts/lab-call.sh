#!/usr/bin/env bash
# Place one 112 call through a running lab stack (`make run`), and check it:
#   1. taker1's handset registers (digest auth), answers Asterisk's qualify OPTIONS
#      and waits for the call (scripts/lab-handset.sh: sipp, 1300 Hz tone);
#   2. once the service shows taker1 reachable, the lab caller (digest auth) dials
#      112 with sipp and sends a 700 Hz tone; taker1 answers, talks LAB_TALK_S
#      seconds (default 8) and hangs up;
#   3. the call is checked through the service's API: the call's incident has
#      arrived, offered, answered and hung_up in its timeline, and a recording.
#
#   scripts/lab-call.sh             both phones are sipp (what the e2e test does)
#   scripts/lab-call.sh --baresip   both phones are baresip softphones (Debian
#                                   package baresip, installed if missing)
# SIAGA_TOKEN overrides the API token (default: the lab's lab-admin-token).
# Stops only what it started (by pid). Exit 0 when the call was answered and recorded.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
SCENARIOS="$REPO/tests/e2e/scenarios"
TOKEN="${SIAGA_TOKEN:-lab-admin-token}"
API=http://127.0.0.1:8080
PHONE=sipp
[ "${1:-}" = "--baresip" ] && PHONE=baresip
profile() { python3 "$HERE/render_asterisk.py" --get lab "$1"; }
SIP="$(profile SIP_BIND_ADDR):$(profile SIP_PORT)"
CALLER_PASSWORD="$(profile SECRET_LAB_CALLER)"
TAKER_PASSWORD="$(profile SECRET_TAKER1)"
TALK_S="${LAB_TALK_S:-8}"

WORK=$(mktemp -d /tmp/lab-call-XXXXXX)
TAKER_PID=""
cleanup() { if [ -n "$TAKER_PID" ]; then kill "$TAKER_PID" 2>/dev/null || true; fi; }
trap cleanup EXIT
say() { printf 'lab-call: %s\n' "$*" >&2; }

api() { curl -fsS -H "Authorization: Bearer $TOKEN" "$API$1"; }
curl -fsS "$API/healthz" 2>/dev/null | grep -q '"ari_connected": *true' \
  || { say "the service at $API is not connected to Asterisk: run 'make run' first"; exit 2; }
BEFORE=$(api "/api/incidents?limit=50" | python3 -c \
  'import json,sys; print(" ".join(i["id"] for i in json.load(sys.stdin)["items"]))')

taker_reachable() {
  api /api/state | python3 -c '
import json, sys
takers = {t["id"]: t for t in json.load(sys.stdin)["takers"]}
sys.exit(0 if takers["taker1"]["reachable"] else 1)'
}

if [ "$PHONE" = sipp ]; then
  LAB_WORKDIR="$WORK/taker1" LAB_CALLS=1 LAB_TALK_S="$TALK_S" LAB_HANGUP=bye LAB_EXPIRES=300 \
    "$HERE/lab-handset.sh" taker1 &
  TAKER_PID=$!
else
  command -v baresip >/dev/null \
    || DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends baresip >/dev/null
  phone() { # dir port tone-hz account
    mkdir -p "$WORK/$1"
    sox -n -r 8000 -c 1 -b 16 "$WORK/$1/tone.wav" synth 60 sine "$3" vol 0.5
    cat >"$WORK/$1/config" <<CFG
sip_listen 127.0.0.1:$2
audio_source aufile,$WORK/$1/tone.wav
audio_player aubridge,nil
audio_alert aufile,/dev/null
module_path /usr/lib/baresip/modules
module g711.so
module aufile.so
module aubridge.so
module_app account.so
module_app menu.so
module_app contact.so
CFG
    echo "$4" >"$WORK/$1/accounts"
    : >"$WORK/$1/contacts"
  }
  phone taker1 5171 1300 "<sip:taker1@$SIP>;auth_pass=$TAKER_PASSWORD;answermode=auto;regint=300"
  phone caller 5191 700 "<sip:lab-caller@$SIP>;auth_pass=$CALLER_PASSWORD;regint=0"
  baresip -f "$WORK/taker1" -t 120 >"$WORK/taker1.log" 2>&1 &
  TAKER_PID=$!
fi

for _ in $(seq 1 40); do
  taker_reachable && break
  sleep 1
done
taker_reachable || { say "taker1 never became reachable (see $WORK)"; exit 1; }
STATUS=$(api /api/state | python3 -c '
import json, sys
print({t["id"]: t for t in json.load(sys.stdin)["takers"]}["taker1"]["status"])')
if [ "$STATUS" != available ]; then
  say "taker1 is $STATUS, so it would not be rung; make it available first, e.g."
  say "  curl -X POST -H 'Authorization: Bearer $TOKEN' $API/api/takers/taker1/unpause   (or /login)"
  exit 2
fi
say "taker1 registered and reachable (qualify answered); dialling 112 as lab-caller"

if [ "$PHONE" = sipp ]; then
  mkdir -p "$WORK/caller"
  sox -n -r 8000 -c 1 -t ul "$WORK/caller/tone.ulaw" synth 120 sine 700 vol 0.5
  (cd "$WORK/caller" && sipp -sf "$SCENARIOS/lab_caller.xml" -s 112 \
    -i 127.0.0.1 -p 5191 -mi 127.0.0.1 -mp 41900 -m 1 \
    -au lab-caller -ap "$CALLER_PASSWORD" -set user lab-caller \
    -set talk_ticks 1 -set hangup wait -timeout 90s -timeout_error \
    -trace_msg -message_file messages.log -trace_logs -log_file logs.log \
    -trace_err -error_file errors.log -trace_stat -stf stat.csv -nostdin \
    "$SIP" </dev/null >screen.txt 2>&1) || { say "the caller's sipp failed (see $WORK/caller)"; exit 1; }
  wait "$TAKER_PID" || { say "taker1's sipp failed (see $WORK/taker1)"; TAKER_PID=""; exit 1; }
  TAKER_PID=""
  say "caller: $(tr '\n' ' ' <"$WORK/caller/logs.log")"
  say "taker1: $(grep -c 'qualify answered' "$WORK/taker1/logs.log") qualify OPTIONS answered;" \
    "$(grep 'ended-by' "$WORK/taker1/logs.log" | tr '\n' ' ')"
else
  baresip -f "$WORK/caller" -e "/dial 112" -t "$((TALK_S + 4))" >"$WORK/caller.log" 2>&1 || true
fi

sleep 4 # the recording is registered a few seconds after the caller leaves
api "/api/incidents?limit=5" | python3 -c '
import json, sys, urllib.request
api, token, before = sys.argv[1], sys.argv[2], set(sys.argv[3].split())
new = [i for i in json.load(sys.stdin)["items"] if i["id"] not in before]
if not new:
    sys.exit("lab-call: no new incident")
req = urllib.request.Request(api + "/api/incidents/" + new[0]["id"],
                             headers={"Authorization": "Bearer " + token})
inc = json.load(urllib.request.urlopen(req))
stages = [t["stage"] for t in inc["timeline"]]
print("lab-call: incident", new[0]["id"], "timeline", stages,
      "recordings", [r["duration_s"] for r in inc["recordings"]])
ok = all(s in stages for s in ("arrived", "offered", "answered", "hung_up")) and inc["recordings"]
sys.exit(0 if ok else 1)
' "$API" "$TOKEN" "$BEFORE"
say "logs in $WORK"
