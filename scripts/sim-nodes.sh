#!/usr/bin/env bash
# Simulated cluster nodes on this machine: each "node" is a network + UTS namespace with its own
# hostname and address, all joined by a bridge in a "switch" namespace (10.77.0.0/24), sharing
# this machine's filesystem. No named netns (`ip netns list` stays empty), no mount, and no
# interface outside the namespaces: each namespace is held by one process, and disappears with
# its veths and bridge once no process is left in it.
#
#   scripts/sim-nodes.sh up DIR NAME...       create nodes NAME... (hostnames), state in DIR
#   scripts/sim-nodes.sh exec DIR NAME CMD... run CMD (arguments kept) on node NAME
#   scripts/sim-nodes.sh down DIR             kill every process on the nodes, remove the nodes
#                                             and the files `up` wrote (idempotent)
#
# `up` writes, in DIR (created if missing):
#   nodes      one line per node: NAME ADDRESS HOLDER_PID NET_NS UTS_NS HOLDER_START (the
#              switch is "- - PID NET_NS - START")
#   hostfile   an OpenMPI hostfile, NAME slots=$SIM_NODES_SLOTS (default 1) per node
#   rsh        an ssh stand-in for mpirun (OMPI_MCA_plm_rsh_agent=DIR/rsh): `rsh [-opts] NAME
#              CMD...` runs the shell command CMD... on node NAME with a login-like environment
# The holders also end when the process $SIM_NODES_OWNER (default: the caller) ends, so a killed
# test leaves at most the processes still running on the nodes, which end with mpirun.
# Needs root, util-linux (unshare, nsenter) and iproute2 (scripts/install-deps.sh).
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

die() { echo "sim-nodes: error: $*" >&2; exit 1; }
usage() { die "usage: $0 up DIR NAME... | exec DIR NAME CMD... | down DIR"; }
NET=10.77.0

[[ $# -ge 2 ]] || usage
cmd=$1 dir=$2
shift 2
[[ "$dir" == /* ]] || dir="$PWD/$dir"

# Starts a process that holds new namespaces (unshare flags $1, hostname $2 or "-") until the
# owner exits; prints its pid once it is inside them.
hold() {
  local flags=$1 name=$2 pid
  # shellcheck disable=SC2016,SC2086
  unshare $flags -- sh -c '[ "$1" = - ] || hostname "$1"; exec tail --pid="$2" -f /dev/null' \
    sh "$name" "$owner" </dev/null >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 3000); do
    if [[ "$(readlink "/proc/$pid/ns/net" 2>/dev/null)" != "$(readlink /proc/self/ns/net)" ]] \
      && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == tail ]]; then
      echo "$pid"
      return
    fi
    sleep 0.01
  done
  kill -9 "$pid" 2>/dev/null || true
  die "the namespace holder for $name did not start"
}

# The start time of process $1 (in clock ticks since boot), empty if there is none.
started() { cut -d' ' -f22 "/proc/$1/stat" 2>/dev/null || true; }

# The pid of node $1's holder.
node_pid() {
  [[ -f "$dir/nodes" ]] || die "no simulated nodes in $dir (run: $0 up $dir NAME...)"
  awk -v h="$1" '$1 == h { print $3; found = 1 } END { exit !found }' "$dir/nodes" \
    || die "no node $1 in $dir/nodes"
}

case $cmd in
up)
  [[ $# -ge 1 ]] || usage
  [[ "$(id -u)" == 0 ]] || die "must run as root (it creates network namespaces)"
  for b in unshare nsenter ip tail; do
    command -v "$b" >/dev/null || die "$b not found; install util-linux and iproute2 (scripts/install-deps.sh)"
  done
  [[ $# -le 250 ]] || die "at most 250 nodes"
  [[ ! -e "$dir/nodes" ]] || die "$dir already holds simulated nodes (run: $0 down $dir)"
  owner=${SIM_NODES_OWNER:-$PPID}
  slots=${SIM_NODES_SLOTS:-1}
  mkdir -p "$dir"
  # Record each holder as soon as it exists, so that `down` finds it should `up` fail halfway.
  : >"$dir/nodes"
  made=0
  trap '[[ $made == 1 ]] || { echo "sim-nodes: up failed; removing what it made" >&2; "$0" down "$dir"; }' EXIT
  sw=$(hold --net -)
  echo "- - $sw $(readlink /proc/"$sw"/ns/net) - $(started "$sw")" >>"$dir/nodes"
  nsenter -t "$sw" -n sh -c 'ip link set lo up && ip link add br0 type bridge && ip link set br0 up'
  i=0
  for name in "$@"; do
    [[ "$name" =~ ^[a-z][a-z0-9-]{0,30}$ ]] || die "bad node name '$name' (lowercase letters, digits, '-')"
    pid=$(hold "--net --uts" "$name")
    i=$((i + 1))
    echo "$name $NET.$i $pid $(readlink /proc/"$pid"/ns/net) $(readlink /proc/"$pid"/ns/uts) $(started "$pid")" >>"$dir/nodes"
    # The veth pair is made inside the switch, its node end moved straight into the node.
    nsenter -t "$sw" -n ip link add "p$i" type veth peer name eth0 netns "$pid"
    nsenter -t "$sw" -n ip link set "p$i" master br0 up
    nsenter -t "$pid" -n sh -c "ip link set lo up && ip addr add $NET.$i/24 dev eth0 && ip link set eth0 up"
  done
  awk -v s="$slots" '$1 != "-" { print $1 " slots=" s }' "$dir/nodes" >"$dir/hostfile"
  cat >"$dir/rsh" <<EOF
#!/bin/sh
# ssh stand-in for mpirun on the simulated nodes of $dir (written by sim-nodes.sh).
while [ \$# -gt 0 ]; do case \$1 in -*) shift ;; *) break ;; esac; done
host=\$1
shift
pid=\$(awk -v h="\$host" '\$1 == h { print \$3 }' "$dir/nodes")
[ -n "\$pid" ] || { echo "rsh: no simulated node \$host" >&2; exit 255; }
exec env -i PATH="\$PATH" HOME="\$HOME" nsenter -t "\$pid" -n -u sh -c "\$*"
EOF
  chmod +x "$dir/rsh"
  made=1
  ;;
exec)
  [[ $# -ge 2 ]] || usage
  pid=$(node_pid "$1")
  shift
  exec nsenter -t "$pid" -n -u -- "$@"
  ;;
down)
  [[ -f "$dir/nodes" ]] || exit 0
  # A namespace is known to be ours while its holder lives (an id is reused once the namespace
  # is gone): kill everything else in the live ones, then the holders. Namespaces whose holder
  # has died end with their last process (mpirun's daemons and ranks end with mpirun).
  holders=() nets=()
  while read -r _ _ pid net _ start; do
    if [[ "$(started "$pid")" == "$start" && "$(readlink "/proc/$pid/ns/net" 2>/dev/null)" == "$net" ]]; then
      holders+=("$pid") nets+=("$net")
    fi
  done <"$dir/nodes"
  for round in $(seq 200); do
    left=0
    for p in /proc/[0-9]*; do
      pid=${p#/proc/}
      net=$(readlink "$p/ns/net" 2>/dev/null) || continue
      [[ " ${nets[*]} " == *" $net "* && " ${holders[*]} " != *" $pid "* ]] || continue
      kill -9 "$pid" 2>/dev/null || true
      left=1
    done
    [[ $left == 1 ]] || break
    [[ $round -lt 200 ]] || die "processes on the simulated nodes of $dir survive SIGKILL"
    sleep 0.05
  done
  for pid in "${holders[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  rm -f "$dir/nodes" "$dir/hostfile" "$dir/rsh"
  rmdir "$dir" 2>/dev/null || true
  ;;
*) usage ;;
esac
