#!/usr/bin/env bash
# Scale model of one driver (MPI rank 0) feeding many ranks, on this machine: the no-op bag's
# throughput as `taps bench` measures it, at several rank counts (oversubscribed: taps adds
# --oversubscribe and yield-when-idle when ranks > cores), with enough tasks in flight to keep
# every worker rank busy (IN_FLIGHT_PER_WORKER per worker), and the CPU time rank 0 spends per
# task (perf stat on rank 0, startup and shutdown included).
#
#   scripts/scale-model.sh [TAPS]        TAPS: the taps binary [target/release/taps]
#
# "rank-0 cores busy" = CPU per task x tasks/s: near 1 per busy driver thread, the driver is the limit.
#
# Environment: RANKS ["2 8 32 64"], TASKS per run [20000], IN_FLIGHT_PER_WORKER [4],
# OUT [runs/scale-model], PERF_RECORD=1 also records a call-graph profile of rank 0 per run
# (OUT/rN.perf.data; its top symbols in OUT/rN.top). Needs OpenMPI and perf (linux-perf).
set -euo pipefail

taps=${1:-target/release/taps}
ranks_list=${RANKS:-2 8 32 64}
tasks=${TASKS:-20000}
per=${IN_FLIGHT_PER_WORKER:-4}
out=${OUT:-runs/scale-model}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
command -v perf >/dev/null || { echo "scale-model: error: perf not found (apt-get install linux-perf)" >&2; exit 1; }
[[ -x "$taps" ]] || { echo "scale-model: error: $taps is not an executable taps" >&2; exit 1; }
mkdir -p "$out"

# The pid of MPI rank 0 among the descendants of $1, once it runs.
rank0_of() {
  local root=$1 p
  for _ in $(seq 6000); do
    for p in $(pgrep -d ' ' -f "worker -c|taps-worker" || true); do
      if tr '\0' '\n' 2>/dev/null <"/proc/$p/environ" | grep -qx OMPI_COMM_WORLD_RANK=0 \
        && grep -q "^PPid:" "/proc/$p/status" && is_below "$p" "$root"; then
        echo "$p"
        return
      fi
    done
    sleep 0.01
  done
  return 1
}
is_below() {
  local p=$1
  while [[ "$p" -gt 1 ]]; do
    p=$(awk '/^PPid:/ { print $2 }' "/proc/$p/status" 2>/dev/null) || return 1
    [[ "$p" == "$2" ]] && return 0
  done
  return 1
}

echo "| ranks | workers | in flight | tasks/s | rank-0 CPU per task (µs) | rank-0 cores busy | load before |"
echo "|---:|---:|---:|---:|---:|---:|---|"
for r in $ranks_list; do
  w=$((r - 1))
  inflight=$((w * per))
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  "$taps" bench --executor mpi --latency-tasks 0 --data-sizes '' --throughput-tasks "$tasks" \
    --in-flight "$inflight" --out "$out/r$r" -- --engine.executor.ranks "$r" \
    >"$out/r$r.md" 2>"$out/r$r.log" &
  bench=$!
  rank0=$(rank0_of "$bench") || { echo "scale-model: error: rank 0 of the $r-rank run not found" >&2; exit 1; }
  if [[ "${PERF_RECORD:-0}" == 1 ]]; then
    perf record -q -g -o "$out/r$r.perf.data" -p "$rank0" >/dev/null 2>&1 &
    rec=$!
  fi
  perf stat -x, -e task-clock -p "$rank0" -o "$out/r$r.perf" >/dev/null 2>&1 || true
  wait "$bench" || { echo "scale-model: error: the $r-rank run failed (see $out/r$r.log)" >&2; exit 1; }
  [[ "${PERF_RECORD:-0}" == 1 ]] && wait "$rec"
  tps=$(awk -F'|' '$2 ~ /mpi/ { gsub(/[^0-9.]/, "", $5); print $5 }' "$out/r$r.md")
  cpu_ms=$(awk -F, '$3 ~ /task-clock/ { print $1 }' "$out/r$r.perf")
  per_task=$(awk -v c="$cpu_ms" -v n="$tasks" 'BEGIN { printf "%.1f", c * 1000 / n }')
  busy=$(awk -v c="$per_task" -v t="$tps" 'BEGIN { printf "%.2f", c * t / 1e6 }')
  echo "| $r | $w | $inflight | $tps | $per_task | $busy | $load |"
  if [[ "${PERF_RECORD:-0}" == 1 ]]; then
    perf report -i "$out/r$r.perf.data" --no-children --stdio -g none --sort dso,sym \
      --percent-limit 2 2>/dev/null | grep -E '^ +[0-9]' | head -15 >"$out/r$r.top" || true
  fi
done
