#!/usr/bin/env bash
# Install the Python engines taps can drive (executors dask, ray, parsl-local, parsl-htex, hyperqueue),
# idempotently: python3-venv and python3-dev (apt, when missing), then a virtual environment with
# pinned versions of Dask distributed, Ray, Parsl and HyperQueue (its Python API, with the
# HyperQueue runtime inside) from PyPI; then taps_native, the in-process task runner the engines'
# workers import (python/taps-native, a PyO3 module built with cargo into target/ beside taps, and
# copied to python/taps_native.abi3.so; rebuilt whenever the script runs, so after changing taps
# run the script again — a module of another build is not used, tasks then run in taps-worker
# processes).
#
#   scripts/install-engines.sh           install whatever is missing
#   scripts/install-engines.sh --check   only say whether the environment is complete (exit 0 / 1)
#   TAPS_NATIVE=0 scripts/install-engines.sh   the environment only, no taps_native
#
# The environment is $TAPS_ENGINES_VENV, else .venv-engines/ in the repository (where taps looks
# for it). Only these executors need it; nothing else in taps uses Python.
# pip output goes to ${TMPDIR:-/tmp}/taps-install-engines.log.
set -euo pipefail

# Pinned: a new engine release is measured before it is used.
PINS=(
  "dask[distributed]==2026.8.0" "distributed==2026.8.0"
  "ray==2.60.0"
  "parsl==2026.10.26"
  "hyperqueue==0.27.0"
)
# What the pins import as (a package directory in site-packages), to check an existing venv.
IMPORTS=(distributed ray parsl hyperqueue)

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="${TAPS_ENGINES_VENV:-$root/.venv-engines}"
LOG="${TMPDIR:-/tmp}/taps-install-engines.log"

check_only=0
case "${1:-}" in
  "") ;;
  --check) check_only=1 ;;
  -h|--help) sed -n '2,18s/^# \{0,1\}//p' "$0"; exit 0 ;;
  *) echo "install-engines: unknown argument '$1' (allowed: --check, --help)" >&2; exit 2 ;;
esac

complete() {
  [[ -x "$VENV/bin/python" ]] || return 1
  local stamp="$VENV/.taps-pins"
  [[ -f "$stamp" && "$(cat "$stamp")" == "${PINS[*]}" ]] || return 1
  local m
  for m in "${IMPORTS[@]}"; do
    compgen -G "$VENV/lib/python3*/site-packages/$m" >/dev/null || return 1
  done
}

# taps_native for this checkout's taps (cargo; the compiled taps library in target/ is reused).
build_native() {
  [[ "${TAPS_NATIVE:-1}" == 0 ]] && return 0
  if ! command -v cargo >/dev/null 2>&1; then
    echo "install-engines: no cargo: taps_native not built (tasks run in taps-worker processes)" >&2
    return 0
  fi
  local t=$SECONDS
  echo "install-engines: building taps_native (python/taps-native; log in $LOG)"
  # A member of the taps workspace: the same lock file and target directory as taps.
  if ! PYO3_PYTHON="$VENV/bin/python" cargo build --release --manifest-path "$root/Cargo.toml" -p taps-native \
    >>"$LOG" 2>&1; then
    echo "install-engines: cargo failed to build taps_native; see $LOG" >&2
    tail -n 20 "$LOG" >&2
    exit 1
  fi
  # Replaced, not overwritten: a worker that has the old one mapped keeps it.
  # Without its debug information (a tenth of the size).
  strip --strip-debug -o "$root/python/taps_native.abi3.so.tmp" "${CARGO_TARGET_DIR:-$root/target}/release/libtaps_native.so"
  mv -f "$root/python/taps_native.abi3.so.tmp" "$root/python/taps_native.abi3.so"
  echo "install-engines: taps_native built in $((SECONDS - t)) s ($root/python/taps_native.abi3.so)"
}

if complete; then
  echo "install-engines: $VENV is complete (${PINS[*]})"
  [[ $check_only == 1 ]] || build_native
  exit 0
fi
if [[ $check_only == 1 ]]; then
  echo "install-engines: $VENV is missing or incomplete; run scripts/install-engines.sh" >&2
  exit 1
fi

# Debian's Python (the one python3-venv and python3-dev belong to), else whatever python3 is.
PY=/usr/bin/python3
[[ -x $PY ]] || PY=$(command -v python3 || true)
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in python3-venv python3-dev; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
fi
if ((${#missing[@]})); then
  echo "install-engines: installing ${missing[*]} (apt-get; log in $LOG)"
  sudo=()
  [[ "$(id -u)" == 0 ]] || sudo=(sudo -n)
  if ! { "${sudo[@]}" apt-get update && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"; } >>"$LOG" 2>&1; then
    echo "install-engines: could not install ${missing[*]} (needs root or password-less sudo); see $LOG" >&2
    exit 1
  fi
  PY=/usr/bin/python3
fi
if [[ -z "$PY" ]]; then
  echo "install-engines: no python3 found; install python3 and python3-venv" >&2
  exit 1
fi

start=$SECONDS
echo "install-engines: creating $VENV with $PY and installing ${PINS[*]} (log in $LOG)"
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV" >>"$LOG" 2>&1
if ! { "$VENV/bin/pip" install -q --upgrade pip && "$VENV/bin/pip" install -q "${PINS[@]}"; } >>"$LOG" 2>&1; then
  echo "install-engines: pip failed; see $LOG" >&2
  tail -n 20 "$LOG" >&2
  exit 1
fi
echo "${PINS[*]}" >"$VENV/.taps-pins"
echo "install-engines: done in $((SECONDS - start)) s ($(du -sh "$VENV" | cut -f1))"
build_native
