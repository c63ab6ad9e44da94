#!/usr/bin/env bash
# Place one 112 call through a running lab stack (`make run`) with two sipp
# phones, the way a person would with two softphones:
#   1. taker1 registers (digest auth) and waits for calls on 127.0.0.1:5171;
#   2. the lab caller (digest auth) dials 112 and talks for a few seconds;
#   3. taker1's handset rings, answers, talks, then hangs up.
# Exits 0 when both phones completed their call. Stops only what it started.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SC="$HERE/../tests/e2e/scenarios"
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
cd "$WORK"
sox -n -r 8000 -c 1 -t ul tone.ulaw synth 30 sine 1300 vol 0.5

sipp -sf "$SC/register.xml" -i 127.0.0.1 -p 5171 -m 1 -au taker1 -ap taker1-lab \
  -set user taker1 -set expires 300 -timeout 10s -timeout_error 127.0.0.1:5060 \
  -trace_err >register.out 2>&1
sleep 1
sipp -sf "$SC/handset.xml" -aa -i 127.0.0.1 -p 5171 -mi 127.0.0.1 -mp 16990 -m 1 \
  -set mode answer -set ring_ticks 10 -set talk_ticks 40 -set hangup bye \
  -timeout 60s -timeout_error -trace_logs >handset.out 2>&1 &
PIDS+=($!)
# The handset answers Asterisk's qualify OPTIONS (-aa); wait until the service
# sees taker1 reachable (qualify runs every 30 s in the lab profile).
for _ in $(seq 1 40); do
  if curl -s -H "Authorization: Bearer ${SIAGA_TOKEN:-lab-admin-token}" \
      http://127.0.0.1:8080/api/state | grep -q '"id": "taker1", "status": "available"[^}]*"reachable": true'; then
    break
  fi
  sleep 1
done
sipp -sf "$SC/feature.xml" -i 127.0.0.1 -p 5191 -mi 127.0.0.1 -mp 16980 -m 1 -s 112 \
  -au lab-caller -ap lab-caller-lab -set user lab-caller \
  -timeout 60s -timeout_error -trace_logs 127.0.0.1:5060 >caller.out 2>&1
caller=$?
wait "${PIDS[0]}"
handset=$?
echo "lab-call: caller exit $caller, handset exit $handset (logs in $WORK)"
[ "$caller" -eq 0 ] && [ "$handset" -eq 0 ]
