#!/usr/bin/env bash
# Generate the Siaga 112 prompts in Bahasa Indonesia (espeak-ng -v id, then sox
# down to 8 kHz mono 16-bit WAV that Asterisk's format_wav plays natively).
#
#   make-prompts.sh DESTDIR [MOHDIR]
#
# DESTDIR gets greeting.wav, reassurance.wav, overflow.wav, feature-ok.wav,
# feature-failed.wav, joined.wav, left.wav. Installed as
# <chroot>/usr/share/asterisk/sounds/id/siaga/, ARI plays them as
# "sound:siaga/greeting" with lang=id and the dialplan as Playback(siaga/greeting).
# MOHDIR (optional) gets a soft tone loop for the "default" music-on-hold class,
# only when it holds no audio file yet (the Debian chroot ships none).
# Idempotent: nothing is regenerated while the stamp matches this script.
set -euo pipefail

DEST="${1:?usage: make-prompts.sh DESTDIR [MOHDIR]}"
MOHDIR="${2:-}"
log() { printf 'make-prompts: %s\n' "$*" >&2; }

need_pkg() { # command package
  command -v "$1" >/dev/null 2>&1 && return 0
  log "installing $2"
  DEBIAN_FRONTEND=noninteractive apt-get install -y "$2" >/dev/null
}
need_pkg espeak-ng espeak-ng
need_pkg sox sox

SELF_SUM=$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)
STAMP="$DEST/.siaga-prompts"
PROMPTS=(greeting reassurance overflow feature-ok feature-failed joined left)

up_to_date() {
  [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$SELF_SUM" ] || return 1
  local p
  for p in "${PROMPTS[@]}"; do [ -s "$DEST/$p.wav" ] || return 1; done
}

# 8 kHz, mono, signed 16-bit little-endian WAV
SOX_OUT=(-r 8000 -c 1 -b 16 -e signed-integer)

say() { # name text
  local raw
  raw=$(mktemp --suffix=.wav)
  espeak-ng -v id -s 145 -p 45 -w "$raw" "$2"
  sox "$raw" "${SOX_OUT[@]}" "$WORK/$1.wav" highpass 200 norm -3 pad 0.2 0.3
  rm -f "$raw"
}

if up_to_date; then
  log "prompts in $DEST are up to date"
else
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
  # Short on purpose: call takers are rung while it plays, and a taker who
  # answers cuts it off, so it never delays an answer.
  say greeting "Layanan darurat Siaga satu satu dua. Mohon tetap di saluran, petugas kami segera menjawab."
  say reassurance "Mohon tetap di saluran. Petugas kami segera menjawab panggilan Anda."
  say overflow "Panggilan Anda sedang dialihkan ke petugas cadangan. Mohon tetap di saluran."
  say feature-ok "Berhasil."
  say feature-failed "Maaf, perintah gagal. Silakan coba lagi atau hubungi supervisor."
  # short tones: a rising sweep when a party joins, a falling one when it leaves
  sox -n "${SOX_OUT[@]}" "$WORK/left.wav" synth 0.25 sine 880-660 vol 0.4
  sox -n "${SOX_OUT[@]}" "$WORK/joined.wav" synth 0.25 sine 660-880 vol 0.4
  mkdir -p "$DEST"
  for p in "${PROMPTS[@]}"; do install -m 0644 "$WORK/$p.wav" "$DEST/$p.wav"; done
  printf '%s\n' "$SELF_SUM" >"$STAMP"
  log "wrote ${#PROMPTS[@]} prompts to $DEST"
fi

if [ -n "$MOHDIR" ]; then
  # The dialplan fallback rings the call takers while the caller hears this
  # class: the greeting, then the reassurance, in a loop (musiconhold.conf
  # [siaga-wait]), so the fallback never makes a caller wait for a prompt.
  WAITDIR="$(dirname "$MOHDIR")/siaga-wait"
  mkdir -p "$WAITDIR"
  install -m 0644 "$DEST/greeting.wav" "$WAITDIR/1-greeting.wav"
  install -m 0644 "$DEST/reassurance.wav" "$WAITDIR/2-reassurance.wav"

  if compgen -G "$MOHDIR/*.wav" >/dev/null || compgen -G "$MOHDIR/*.gsm" >/dev/null \
     || compgen -G "$MOHDIR/*.ulaw" >/dev/null; then
    log "music on hold in $MOHDIR already present"
  else
    mkdir -p "$MOHDIR"
    TMPM=$(mktemp -d)
    # A calm 16 s loop: soft sine notes (C major arpeggio) with gentle fades.
    i=0
    for f in 262 330 392 523 392 330 294 392; do
      sox -n "${SOX_OUT[@]}" "$TMPM/n$i.wav" synth 2 sine "$f" sine "$((f * 2))" \
        remix 1,2 fade q 0.4 2 0.8 vol 0.12
      i=$((i + 1))
    done
    sox "$TMPM"/n{0..7}.wav "${SOX_OUT[@]}" "$MOHDIR/siaga-soft-tones.wav"
    rm -rf "$TMPM"
    log "wrote a soft tone loop to $MOHDIR"
  fi
fi
