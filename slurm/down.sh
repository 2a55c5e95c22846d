#!/usr/bin/env bash
# Stop the one-node Slurm cluster started by slurm/up.sh.
#
#   slurm/down.sh           cancel its jobs, stop slurmd and slurmctld, and munged if up.sh started it
#   slurm/down.sh --purge   ... and delete $SLURM_LOCAL_DIR and our /etc/slurm/slurm.conf symlink
#
# Only pids from its own pid files are signalled (SIGTERM, SIGKILL after 10 s). Running it again
# is a no-op. Uses the same SLURM_LOCAL_DIR as up.sh [${TMPDIR:-/tmp}/taps-slurm].
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

DIR=${SLURM_LOCAL_DIR:-${TMPDIR:-/tmp}/taps-slurm}
[[ "$DIR" == /* ]] || DIR="$PWD/$DIR"
DIR=${DIR%/}
CONF="$DIR/slurm.conf"
RUN="$DIR/run"
ETC_LINK=/etc/slurm/slurm.conf
t0=$EPOCHREALTIME

purge=0 keep_munge=0
for arg in "$@"; do
  case "$arg" in
    --purge) purge=1 ;;
    --keep-munge) keep_munge=1 ;;   # used by up.sh when it restarts after a config change
    -h|--help) sed -n '2,8s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "slurm/down: unknown argument '$arg' (allowed: --purge)" >&2; exit 2 ;;
  esac
done

say() { echo "slurm/down: $*" >&2; }
elapsed() { awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f s", b - a }'; }

# shellcheck source=slurm/common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"
pid_of() { [[ -s "$1" ]] && head -c 32 "$1" | tr -dc 0-9; }

# Signal the given "pid:name" entries with TERM, wait up to 10 s, then KILL what is left.
stop() {
  local entry left=() deadline
  for entry in "$@"; do kill -TERM "${entry%%:*}" 2>/dev/null || true; done
  deadline=$((SECONDS + 10))
  while :; do
    left=()
    for entry in "$@"; do alive_pid "${entry%%:*}" "${entry#*:}" && left+=("$entry"); done
    (( ${#left[@]} )) || return 0
    (( SECONDS < deadline )) || break
    sleep 0.05
  done
  for entry in "${left[@]}"; do
    say "${entry#*:} (pid ${entry%%:*}) ignored SIGTERM for 10 s; sending SIGKILL"
    kill -KILL "${entry%%:*}" 2>/dev/null || true
  done
  sleep 0.2
}

stopped=()
slurm=()
for name in slurmd slurmctld; do
  pid=$(pid_of "$RUN/$name.pid" || true)
  if alive_pid "$pid" "$name"; then slurm+=("$pid:$name"); fi
done

if (( ${#slurm[@]} )); then
  # Cancel jobs first so that slurmd can clean up their steps (else they outlive it).
  ctld=$(pid_of "$RUN/slurmctld.pid" || true)
  if alive_pid "$ctld" slurmctld; then
    jobs=$(SLURM_CONF="$CONF" timeout 5 squeue -h -o %A 2>/dev/null || true)
    if [[ -n "$jobs" ]]; then
      # shellcheck disable=SC2086 # one word per job id
      SLURM_CONF="$CONF" timeout 5 scancel $jobs 2>/dev/null || true
      for _ in $(seq 50); do
        [[ -z "$(SLURM_CONF="$CONF" timeout 5 squeue -h -o %A 2>/dev/null || true)" ]] && break
        sleep 0.1
      done
    fi
  fi
  stop "${slurm[@]}"
  for entry in "${slurm[@]}"; do stopped+=("${entry#*:}"); done
fi
rm -f "$RUN/slurmd.pid" "$RUN/slurmctld.pid"

if (( ! keep_munge )) && [[ -e "$RUN/munged.ours" ]]; then
  pid=$(pid_of "$RUN/munged.ours" || true)
  if alive_pid "$pid" munged; then
    stop "$pid:munged"
    stopped+=(munged)
  fi
  rm -f "$RUN/munged.ours"
fi

if (( ${#stopped[@]} )); then
  say "stopped ${stopped[*]} in $(elapsed)"
else
  say "not running ($DIR)"
fi

if (( purge )); then
  if [[ -L "$ETC_LINK" && "$(readlink "$ETC_LINK")" == "$CONF" ]]; then
    rm -f "$ETC_LINK"
    say "removed symlink $ETC_LINK"
  fi
  if [[ -d "$DIR" ]]; then
    # Refuse to delete anything that does not look like ours.
    if [[ "$DIR" == / || ! -e "$CONF" && ! -d "$RUN" ]]; then
      say "error: $DIR does not look like a taps Slurm directory; not deleting it"
      exit 1
    fi
    rm -rf "$DIR"
    say "purged $DIR"
  fi
fi
