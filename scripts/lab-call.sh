#!/usr/bin/env bash
# Place one 112 call through a running lab stack (`make run`) with two real
# SIP softphones (baresip), the way a person would:
#   1. taker1 registers (digest auth), auto-answers, and sends a 1300 Hz tone;
#   2. the lab caller (digest auth) dials 112 and sends a 700 Hz tone for 10 s;
#   3. the call is checked through the service's API: the newest incident has
#      arrived, offered, answered and hung_up in its timeline, and a recording.
# baresip (not sipp) plays the handset because it answers Asterisk's qualify
# OPTIONS like a real phone, so the service sees taker1 as reachable.
# Stops only what it started (by pid). Exit 0 when the call was answered.
set -euo pipefail
TOKEN="${SIAGA_TOKEN:-lab-admin-token}"
API=http://127.0.0.1:8080
command -v baresip >/dev/null || apt-get install -y --no-install-recommends baresip >/dev/null
WORK=$(mktemp -d)
TAKER_PID=""
cleanup() { [ -n "$TAKER_PID" ] && kill "$TAKER_PID" 2>/dev/null || true; }
trap cleanup EXIT

phone() { # dir port tone-hz account
  mkdir -p "$WORK/$1"
  sox -n -r 8000 -c 1 -b 16 "$WORK/$1/tone.wav" synth 30 sine "$3" vol 0.5
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
phone taker 5171 1300 '<sip:taker1@127.0.0.1:5060>;auth_pass=taker1-lab;answermode=auto;regint=300'
phone caller 5191 700 '<sip:lab-caller@127.0.0.1:5060>;auth_pass=lab-caller-lab;regint=0'

state() { curl -s -H "Authorization: Bearer $TOKEN" "$API/api/state"; }
baresip -f "$WORK/taker" -t 120 >"$WORK/taker.log" 2>&1 &
TAKER_PID=$!
for _ in $(seq 1 40); do
  state | python3 -c 'import json,sys; t={x["id"]: x for x in json.load(sys.stdin)["takers"]}["taker1"]; sys.exit(0 if t["reachable"] else 1)' && break
  sleep 1
done
baresip -f "$WORK/caller" -e "/dial 112" -t 10 >"$WORK/caller.log" 2>&1 || true
sleep 3
curl -s -H "Authorization: Bearer $TOKEN" "$API/api/incidents?limit=1" | python3 -c '
import json, sys, urllib.request
item = json.load(sys.stdin)["items"][0]
req = urllib.request.Request(sys.argv[1] + "/api/incidents/" + item["id"],
                             headers={"Authorization": "Bearer " + sys.argv[2]})
inc = json.load(urllib.request.urlopen(req))
stages = [t["stage"] for t in inc["timeline"]]
print("lab-call: incident", item["id"], "timeline", stages,
      "recordings", [r["duration_s"] for r in inc["recordings"]])
ok = all(s in stages for s in ("arrived", "offered", "answered", "hung_up")) and inc["recordings"]
sys.exit(0 if ok else 1)
' "$API" "$TOKEN"
