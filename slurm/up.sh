#!/usr/bin/env bash
# Bring up a real one-node Slurm cluster on this machine (munged + slurmctld + slurmd, no systemd).
#
#   slurm/up.sh                 start it, or check it is up (idempotent; ~0.05 s when already up)
#   eval "$(slurm/up.sh)"       ... and set SLURM_CONF in this shell (the only thing on stdout)
#
# Environment (all optional):
#   SLURM_LOCAL_DIR      state, spool, pid and log files       [${TMPDIR:-/tmp}/taps-slurm]
#   SLURM_LOCAL_CPUS     CPUs of the node (may exceed the real count)           [$(nproc)]
#   SLURM_LOCAL_MEMORY   RealMemory in MB                      [95% of `slurmd -C`]
#   SLURM_LOCAL_TIMEOUT  seconds to wait for the controller and the node          [30]
#   SLURM_LOCAL_CTLD_PORT / SLURM_LOCAL_SLURMD_PORT                       [6817 / 6818]
#   SLURM_LOCAL_LINK_ETC=0  do not symlink /etc/slurm/slurm.conf to the rendered config
# A changed config (e.g. SLURM_LOCAL_CPUS=8) restarts the daemons; dead daemons (kill -9) are
# restarted. Needs root and the packages from scripts/install-deps.sh. Stop with slurm/down.sh.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=${SLURM_LOCAL_DIR:-${TMPDIR:-/tmp}/taps-slurm}
[[ "$DIR" == /* ]] || DIR="$PWD/$DIR"
DIR=${DIR%/}
CONF="$DIR/slurm.conf"
RUN="$DIR/run"
LOG="$DIR/log"
TIMEOUT=${SLURM_LOCAL_TIMEOUT:-30}
ETC_LINK=/etc/slurm/slurm.conf
t0=$EPOCHREALTIME

say() { echo "slurm/up: $*" >&2; }
die() { echo "slurm/up: error: $*" >&2; exit 1; }
elapsed() { awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f s", b - a }'; }
int() { [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive integer, got '$2'"; }

# shellcheck source=slurm/common.sh
source "$here/common.sh"
# True if the pid file $1 names a live process called $2.
alive() { [[ -s "$1" ]] && alive_pid "$(head -c 32 "$1" | tr -dc 0-9)" "$2"; }

[[ "$(id -u)" == 0 ]] || die "must run as root (it starts munged, slurmctld and slurmd); try: sudo $0"
for b in slurmctld slurmd munged munge unmunge scontrol sbatch; do
  command -v "$b" >/dev/null 2>&1 \
    || die "$b not found; install the system packages with scripts/install-deps.sh"
done

# ---- render the config ---------------------------------------------------------------------
host=$(hostname -s)
cpus=${SLURM_LOCAL_CPUS:-$(nproc)}
int SLURM_LOCAL_CPUS "$cpus"
if [[ -n "${SLURM_LOCAL_MEMORY:-}" ]]; then
  memory=$SLURM_LOCAL_MEMORY
else
  # Real hardware, not whatever slurm.conf says (config_overrides would echo it back).
  hw_mem=$(SLURM_CONF=/dev/null slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -1)
  [[ -n "$hw_mem" ]] || hw_mem=$(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo)
  memory=$(( hw_mem * 95 / 100 ))
fi
int SLURM_LOCAL_MEMORY "$memory"
ctld_port=${SLURM_LOCAL_CTLD_PORT:-6817}
slurmd_port=${SLURM_LOCAL_SLURMD_PORT:-6818}
int SLURM_LOCAL_CTLD_PORT "$ctld_port"
int SLURM_LOCAL_SLURMD_PORT "$slurmd_port"

tmpl=$(<"$here/slurm.conf.in")
tmpl=${tmpl//@HOST@/"$host"}
tmpl=${tmpl//@CPUS@/"$cpus"}
tmpl=${tmpl//@MEMORY@/"$memory"}
tmpl=${tmpl//@DIR@/"$DIR"}
tmpl=${tmpl//@CTLD_PORT@/"$ctld_port"}
tmpl=${tmpl//@SLURMD_PORT@/"$slurmd_port"}
rendered=$tmpl

mkdir -p "$DIR/state" "$DIR/spool" "$RUN" "$LOG"
chmod 0755 "$DIR"

scontrol_() { SLURM_CONF="$CONF" timeout 10 scontrol "$@"; }
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

# ---- munge ----------------------------------------------------------------------------------
# Look for a live munged first: with a stale socket `munge -n` would retry for 2 s.
munged_pid=""
for pid in $(pgrep -x munged || true); do
  if alive_pid "$pid" munged; then munged_pid=$pid; break; fi
done
if [[ -n "$munged_pid" ]]; then
  munge_ok || die "munged (pid $munged_pid) is running but 'munge -n | unmunge' fails; see /var/log/munge/munged.log"
  # Forget our marker if that is no longer our process (someone else's munged answers).
  if [[ -e "$RUN/munged.ours" ]] && ! alive "$RUN/munged.ours" munged; then rm -f "$RUN/munged.ours"; fi
else
  rm -f "$RUN/munged.ours"
  if [[ ! -s /etc/munge/munge.key ]]; then
    say "creating /etc/munge/munge.key"
    install -d -o munge -g munge -m 0700 /etc/munge
    mungekey --create --keyfile=/etc/munge/munge.key >/dev/null
    chown munge:munge /etc/munge/munge.key
    chmod 0600 /etc/munge/munge.key
  fi
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
  # --force: a munged killed with -9 leaves its socket and lock behind.
  runuser -u munge -- /usr/sbin/munged --force 2>"$LOG/munged.start.log" \
    || die "munged failed to start: $(tail -n 3 "$LOG/munged.start.log" | tr '\n' ' ') (see /var/log/munge/munged.log)"
  for _ in $(seq 50); do munge_ok && break; sleep 0.1; done
  munge_ok || die "munged started but 'munge -n | unmunge' fails; see /var/log/munge/munged.log"
  cp /run/munge/munged.pid "$RUN/munged.ours"
fi

# ---- slurmctld + slurmd ---------------------------------------------------------------------
up_to_date=0
if [[ -f "$CONF" && "$(<"$CONF")" == "$rendered" ]] \
  && alive "$RUN/slurmctld.pid" slurmctld && alive "$RUN/slurmd.pid" slurmd; then
  up_to_date=1
fi

if (( ! up_to_date )); then
  if alive "$RUN/slurmctld.pid" slurmctld || alive "$RUN/slurmd.pid" slurmd; then
    if [[ -f "$CONF" && "$(<"$CONF")" != "$rendered" ]]; then
      say "config changed; restarting slurmctld and slurmd"
    else
      say "a daemon is missing; restarting slurmctld and slurmd"
    fi
    SLURM_LOCAL_DIR="$DIR" "$here/down.sh" --keep-munge >/dev/null
  fi
  rm -f "$RUN/slurmctld.pid" "$RUN/slurmd.pid"
  # Someone else's daemon on the default ports would make ours fail obscurely.
  for d in slurmctld slurmd; do
    [[ "$d" == slurmctld && "$ctld_port" != 6817 || "$d" == slurmd && "$slurmd_port" != 6818 ]] && continue
    for pid in $(pgrep -x "$d" || true); do
      alive_pid "$pid" "$d" && die "another $d (pid $pid) is running, not started for $DIR;" \
        "stop it (slurm/down.sh with its SLURM_LOCAL_DIR) or set SLURM_LOCAL_CTLD_PORT/SLURM_LOCAL_SLURMD_PORT"
    done
  done
  printf '%s\n' "$rendered" >"$CONF.tmp"
  mv -f "$CONF.tmp" "$CONF"

  # -c: start from a clean state (no jobs from an earlier run).
  slurmctld -f "$CONF" -c 2>>"$LOG/slurmctld.log" \
    || die "slurmctld failed to start; see $LOG/slurmctld.log"
  deadline=$((SECONDS + TIMEOUT))
  tries=0
  until SLURM_CONF="$CONF" timeout 2 scontrol ping 2>/dev/null | grep -q 'is UP'; do
    tries=$((tries + 1))
    if [[ -s "$RUN/slurmctld.pid" ]] || (( tries > 50 )) && ! alive "$RUN/slurmctld.pid" slurmctld; then
      tail -n 5 "$LOG/slurmctld.log" >&2 || true
      die "slurmctld exited during startup; see $LOG/slurmctld.log"
    fi
    if (( SECONDS >= deadline )); then
      tail -n 5 "$LOG/slurmctld.log" >&2 || true
      die "slurmctld did not answer 'scontrol ping' within ${TIMEOUT}s; see $LOG/slurmctld.log"
    fi
    sleep 0.1
  done
  slurmd -f "$CONF" 2>>"$LOG/slurmd.log" || die "slurmd failed to start; see $LOG/slurmd.log"
fi

# ---- wait for the node ----------------------------------------------------------------------
deadline=$((SECONDS + TIMEOUT))
next_resume=0
waited=0
while :; do
  state=$(scontrol_ -o show node "$host" 2>/dev/null | grep -o 'State=[^ ]*' | head -1 || true)
  state=${state#State=}
  case "$state" in
    *DOWN*|*DRAIN*|*FAIL*)
      if (( SECONDS >= next_resume )); then
        scontrol_ update NodeName="$host" State=RESUME >/dev/null 2>&1 || true
        next_resume=$((SECONDS + 2))
      fi ;;
    *NOT_RESPONDING*|*INVAL*|UNKNOWN*|"")
      if [[ -s "$RUN/slurmd.pid" ]] || (( ++waited > 50 )) && ! alive "$RUN/slurmd.pid" slurmd; then
        tail -n 5 "$LOG/slurmd.log" >&2 || true
        die "slurmd exited during startup; see $LOG/slurmd.log"
      fi ;;
    IDLE*|MIXED*|ALLOCATED*|COMPLETING*) break ;;
  esac
  if (( SECONDS >= deadline )); then
    reason=$(scontrol_ -o show node "$host" 2>/dev/null | grep -o 'Reason=.*' || true)
    tail -n 5 "$LOG/slurmd.log" >&2 || true
    die "node $host is not IDLE after ${TIMEOUT}s (State=${state:-unknown} ${reason}); see $LOG/slurmd.log and $LOG/slurmctld.log"
  fi
  sleep 0.1
done

# ---- /etc/slurm/slurm.conf -> our config (only if absent or already a symlink) ----------------
if [[ "${SLURM_LOCAL_LINK_ETC:-1}" != 0 ]]; then
  if [[ -L "$ETC_LINK" || ! -e "$ETC_LINK" ]]; then
    if [[ "$(readlink "$ETC_LINK" 2>/dev/null || true)" != "$CONF" ]]; then
      mkdir -p "$(dirname "$ETC_LINK")"
      ln -sfn "$CONF" "$ETC_LINK"
    fi
  elif (( ! up_to_date )); then
    say "note: $ETC_LINK is a regular file, left alone; use SLURM_CONF=$CONF"
  fi
fi

if (( up_to_date )); then
  say "already up ($host: ${cpus} CPUs, ${memory} MB, node $state) in $(elapsed)"
else
  say "up ($host: ${cpus} CPUs, ${memory} MB; files in $DIR) in $(elapsed); stop with slurm/down.sh"
fi
echo "export SLURM_CONF=$CONF"
