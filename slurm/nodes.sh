#!/usr/bin/env bash
# A real multi-node Slurm cluster on this machine: N simulated nodes (scripts/sim-nodes.sh:
# network + UTS namespaces with their own hostnames and addresses on a private bridge, sharing
# this machine's filesystem), one slurmd per node, slurmctld on the first node. Slurm's
# commands reach slurmctld only from the nodes: run them (and `taps submit`) with `exec`.
#
#   slurm/nodes.sh up DIR [N]       start N nodes (default 2) named tapsn0.., files in DIR;
#                                   prints `export SLURM_CONF=DIR/slurm.conf` (only thing on stdout)
#   slurm/nodes.sh exec DIR CMD...  run CMD on the first node (a login node of the cluster)
#   slurm/nodes.sh down DIR         end every job, daemon and node, remove what `up` wrote
#                                   (idempotent)
#
# Environment: SLURM_NODES_CPUS CPUs per node (may exceed the real count) [2],
# SLURM_NODES_TIMEOUT seconds to wait for the daemons [30], SIM_NODES_OWNER the process whose
# end also ends the nodes [the caller]. Needs root, munge's key (/etc/munge/munge.key, made by
# slurm/up.sh) and the packages from scripts/install-deps.sh. munged runs on this machine (its
# socket is a file, seen from every node); `up` starts it if none runs, and `down` stops it then.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
sim="$here/../scripts/sim-nodes.sh"
say() { echo "slurm/nodes: $*" >&2; }
die() { echo "slurm/nodes: error: $*" >&2; exit 1; }
usage() { die "usage: $0 up DIR [N] | exec DIR CMD... | down DIR"; }
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

[[ $# -ge 2 ]] || usage
cmd=$1 dir=$2
shift 2
[[ "$dir" == /* ]] || dir="$PWD/$dir"
dir=${dir%/}
conf="$dir/slurm.conf"
first() { awk '$1 != "-" { print $1; exit }' "$dir/sim/nodes"; }

case $cmd in
up)
  n=${1:-2}
  [[ "$n" =~ ^[1-9][0-9]?$ ]] || die "N must be a number of nodes from 1 to 99, got '$n'"
  cpus=${SLURM_NODES_CPUS:-2}
  [[ "$cpus" =~ ^[1-9][0-9]*$ ]] || die "SLURM_NODES_CPUS must be a positive integer, got '$cpus'"
  timeout=${SLURM_NODES_TIMEOUT:-30}
  [[ "$(id -u)" == 0 ]] || die "must run as root (it starts namespaces and Slurm's daemons)"
  for b in slurmctld slurmd munged munge unmunge scontrol; do
    command -v "$b" >/dev/null 2>&1 || die "$b not found; install the system packages with scripts/install-deps.sh"
  done
  [[ ! -e "$dir/sim/nodes" ]] || die "$dir already holds a cluster (run: $0 down $dir)"
  mkdir -p "$dir"
  ok=0
  trap '[[ $ok == 1 ]] || { say "up failed; removing what it made"; "$0" down "$dir"; }' EXIT
  if ! munge_ok; then
    [[ -s /etc/munge/munge.key ]] || die "no munge key; run slurm/up.sh once (it creates /etc/munge/munge.key)"
    install -d -o munge -g munge -m 0755 /run/munge
    runuser -u munge -- /usr/sbin/munged --force || die "munged failed to start"
    for _ in $(seq 50); do munge_ok && break; sleep 0.1; done
    munge_ok || die "munged started but 'munge -n | unmunge' fails; see /var/log/munge/munged.log"
    cp /run/munge/munged.pid "$dir/munged.ours"
  fi
  names=()
  for i in $(seq 0 $((n - 1))); do names+=("tapsn$i"); done
  SIM_NODES_OWNER=${SIM_NODES_OWNER:-$PPID} "$sim" up "$dir/sim" "${names[@]}"
  node_lines=$(awk -v c="$cpus" '$1 != "-" { print "NodeName=" $1 " NodeAddr=" $2 " CPUs=" c " RealMemory=1000 State=UNKNOWN" }' "$dir/sim/nodes")
  head=${names[0]}
  tmpl=$(<"$here/nodes.conf.in")
  tmpl=${tmpl//@CTLD@/"$head"}
  tmpl=${tmpl//@CTLD_ADDR@/"$(awk -v h="$head" '$1 == h { print $2 }' "$dir/sim/nodes")"}
  tmpl=${tmpl//@DIR@/"$dir"}
  tmpl=${tmpl//@NODES@/"$node_lines"}
  tmpl=${tmpl//@NAMES@/"$(IFS=,; echo "${names[*]}")"}
  mkdir -p "$dir/state" "$dir/run" "$dir/log"
  for name in "${names[@]}"; do mkdir -p "$dir/spool/$name"; done
  printf '%s\n' "$tmpl" >"$conf"
  on() { local node=$1; shift; SLURM_CONF="$conf" "$sim" exec "$dir/sim" "$node" "$@"; }
  on "$head" slurmctld -f "$conf" -c 2>>"$dir/log/slurmctld.log" || die "slurmctld failed to start; see $dir/log/slurmctld.log"
  deadline=$((SECONDS + timeout))
  until on "$head" timeout 2 scontrol ping 2>/dev/null | grep -q 'is UP'; do
    (( SECONDS < deadline )) || die "slurmctld did not answer 'scontrol ping' within ${timeout}s; see $dir/log/slurmctld.log"
    sleep 0.1
  done
  for name in "${names[@]}"; do
    on "$name" slurmd -f "$conf" 2>>"$dir/log/slurmd-$name.log" || die "slurmd on $name failed to start; see $dir/log/slurmd-$name.log"
  done
  for name in "${names[@]}"; do
    until on "$head" scontrol -o show node "$name" 2>/dev/null | grep -Eq 'State=(IDLE|MIXED|ALLOCATED)'; do
      (( SECONDS < deadline )) || die "node $name is not IDLE after ${timeout}s; see $dir/log/slurmd-$name.log"
      sleep 0.1
    done
  done
  ok=1
  say "up: ${names[*]} (${cpus} CPUs each); run commands on $head with: $0 exec $dir CMD...; stop with: $0 down $dir"
  echo "export SLURM_CONF=$conf"
  ;;
exec)
  [[ $# -ge 1 ]] || usage
  [[ -f "$dir/sim/nodes" ]] || die "no cluster in $dir (run: $0 up $dir)"
  SLURM_CONF="$conf" exec "$sim" exec "$dir/sim" "$(first)" "$@"
  ;;
down)
  # The daemons, the jobs' processes and the nodes end together.
  "$sim" down "$dir/sim"
  if [[ -s "$dir/munged.ours" ]]; then
    pid=$(tr -dc 0-9 <"$dir/munged.ours")
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == munged ]] && kill "$pid" 2>/dev/null || true
    rm -f "$dir/munged.ours"
  fi
  rm -rf "$dir/state" "$dir/spool" "$dir/run" "$dir/log"
  rm -f "$conf"
  rmdir "$dir" 2>/dev/null || true
  ;;
*) usage ;;
esac
