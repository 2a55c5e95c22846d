#!/usr/bin/env bash
# Per-task cost of the Python engines through taps (synthetic bag of no-op tasks, 1 and 2 in
# flight) next to the engine's own cost for a plain Python no-op submitted through its API from
# the same venv (python -m taps_bridge.native_bench), interleaved, ROUNDS times, in a private
# network namespace. Prints one line per measurement:
#   round engine inflight taps|native|VARIANT tasks/s median-µs-between-completions
# (the median is robust to bursts of other load on a shared machine; the rate is not), then a
# summary per engine, in-flight count and variant: the median gap over the rounds and the median
# of the rounds' ratios to "native" (the per-task overhead target: taps / native <= 1.10), with a
# distribution-free 95 % confidence interval of that median (order statistics; 6 rounds or more).
# 300-task rounds scatter by 10-40 % and weigh the engine's first tasks: a verdict takes 16 of
# them, or 8 of 4,000 tasks (steady state, 3-15 % scatter: `scripts/bench-engines.sh 4000 8`).
#
# Each round also measures "taps-null": the same taps run with TAPS_BRIDGE_ENGINE=null, where the
# bridge runs every task itself at once (no engine): its gap is what taps and the bridge add per
# task by themselves (the driver, the pipe both ways, the bridge's Python), without the engine's
# processes competing for the cores; its ratio to "native" is that addition's share.
#
# HyperQueue runs programs, not Python functions: its "native" is a plain program task (cp of an
# empty frame into the result file, seen to end as taps' tasks are), and "hq-wait" is `true`
# waited for through HQ's own Client.wait_for_jobs (which polls once a second; 10 tasks).
#
#   scripts/bench-engines.sh [TASKS] [ROUNDS] [ENGINES]   (defaults 300, 3, "dask ray parsl-local
#                                                          hyperqueue"; needs root for unshare)
#
# Variants measured in the same rounds (before/after comparisons in one sitting):
#   TAPS_BENCH_BEFORE=DIR   also "before": DIR/taps with the Python package of DIR/python, or of
#                           TAPS_BENCH_BEFORE_PYTHON (e.g. a copy of an older build and checkout)
#   TAPS_BENCH_PROCESS=1    also "taps-process": TAPS_IN_PROCESS=0 (tasks in taps-worker processes)
#   TAPS_BENCH_SPIN=1       also "spin": TAPS_SPIN_US=100 (the driver's threads poll 100 µs before
#                           they block, as with taps' own executors; with an engine they block at
#                           once by default; see src/spin.rs)
#
#   TAPS_BENCH_CPU=1        also the CPU time per task of every measurement, by process, over its
#                           steady part (scripts/cpu-per-task.py: µs of the driver, the bridge or
#                           the engine's own client, the engine's processes, the kernel's threads;
#                           busy cores): where the bridge's share goes when the run keeps the cores
#                           busy (2 in flight). Needs runs of a few seconds: TASKS 4000 or more for
#                           ray and parsl-local, 600 for dask.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TASKS=${1:-300}
ROUNDS=${2:-3}
ENGINES=${3:-dask ray parsl-local hyperqueue}
VENV="${TAPS_ENGINES_VENV:-$root/.venv-engines}"
TAPS="$root/target/release/taps"
BEFORE=${TAPS_BENCH_BEFORE:-}
BEFORE_PY=${TAPS_BENCH_BEFORE_PYTHON:-${BEFORE:+$BEFORE/python}}
PROCESS=${TAPS_BENCH_PROCESS:-0}
SPIN=${TAPS_BENCH_SPIN:-0}
CPU=${TAPS_BENCH_CPU:-0}
work=$(mktemp -d)
mkdir -p "$work/tmp"; export TMPDIR=$work/tmp  # Ray's, Dask's and Python's temporary files of the "engine alone" runs go with $work
trap 'rm -rf "$work"' EXIT
export TASKS ROUNDS ENGINES VENV TAPS root work BEFORE BEFORE_PY PROCESS SPIN CPU
unshare -n bash -c '
set -euo pipefail
ip link set lo up
opts() { case $1 in dask) echo "--engine.executor.workers 2";; ray) echo "--engine.executor.num-cpus 2";; parsl-local) echo "--engine.executor.workers 2";; hyperqueue) echo "--engine.executor.workers 1 --engine.executor.cpus 2";; esac; }
native() { case $1 in dask) echo "{\"workers\": 2, \"use_threads\": false, \"daemon_workers\": true}";; ray) echo "{\"address\": \"local\", \"num_cpus\": 2}";; parsl-local) echo "{\"workers\": 2, \"run_dir\": \"$work/parsl\"}";; hyperqueue) echo "{\"workers\": 1, \"cpus\": 2}";; esac; }
# The median time between two completions of the last run (its non-warm-up tasks), in µs.
median() { "$VENV/bin/python" -c "import json, sys
t = sorted(r[\"received_time\"] for r in map(json.loads, open(sys.argv[1])) if r[\"name\"] != \"warmup\")
g = sorted(b - a for a, b in zip(t, t[1:]))
print(\"%.0f\" % (g[len(g) // 2] * 1e6) if g else \"-\")" "$(ls -td "$work"/runs/*/ | head -1)tasks.jsonl"; }
# With CPU=1 every measured command runs under scripts/cpu-per-task.py (taps: its records say
# when tasks completed; the engine alone: the times native_bench writes).
cpu_taps=(); cpu_native=()
if [ "$CPU" = 1 ]; then
  cpu_taps=("$VENV/bin/python" "$root/scripts/cpu-per-task.py" --records "$work" --)
  cpu_native=("$VENV/bin/python" "$root/scripts/cpu-per-task.py" --times "$work/times" --)
fi
# Its line, as fields for the measurement line (nothing without CPU=1).
cpu_fields() { [ "$CPU" = 1 ] && sed -n "s/^cpu: tasks [0-9]* window [0-9.]* s \(busy .*\)/\1/p" "$1" | tail -1 || true; }
# taps LABEL PROGRAM PYTHON-DIR [ENV=VALUE...]
taps() {
  local label=$1 prog=$2 py=$3 rate
  shift 3
  rate=$(cd "$work" && env "$@" TAPS_PYTHON_DIR="$py" TAPS_ENGINES_VENV="$VENV" "${cpu_taps[@]}" "$prog" run --app synthetic --app.structure bag \
    --app.task-count "$TASKS" --app.bag-max-running "$k" --app.task-sleep 0 --app.task-data-bytes 0 --app.warmup-tasks 8 \
    --engine.executor "$e" $(opts $e) >"$work/out" 2>&1; sed -n "s/.*Completed $TASKS\/$TASKS (rate: \([0-9.]*\) tasks\/s).*/\1/p" "$work/out")
  if [ -z "$rate" ]; then
    echo "bench-engines: $label on $e did not complete; its last words:" >&2
    tail -3 "$work/out" >&2
    exit 1
  fi
  # Tasks meant to run inside the engine workers that did not (a taps_native of another
  # build, say after a commit: scripts/install-engines.sh rebuilds it) would measure another design.
  if [ "$e" != hyperqueue ] && ! printf "%s\n" "$@" | grep -qx TAPS_IN_PROCESS=0; then
    local n; n=$(sed -n "s/.* \([0-9]*\) task(s) ran inside the engine.s workers.*/\1/p" "$work/out")
    if [ "${n:-0}" != $((TASKS + 8)) ]; then
      echo "bench-engines: $label on $e: ${n:-0} of $((TASKS + 8)) tasks ran inside the engine workers (taps_native missing or of another build: run scripts/install-engines.sh)" >&2
      exit 1
    fi
  fi
  echo "$r $e $k $label $rate $(median) $(cpu_fields "$work/out")"
}
for r in $(seq "$ROUNDS"); do
  for e in $ENGINES; do
    for k in 1 2; do
      [ -n "$BEFORE" ] && taps before "$BEFORE/taps" "$BEFORE_PY" TAPS_BENCH=1
      taps taps "$TAPS" "$root/python" TAPS_BENCH=1
      taps taps-null "$TAPS" "$root/python" TAPS_BRIDGE_ENGINE=null
      [ "$PROCESS" = 1 ] && [ "$e" != hyperqueue ] && taps taps-process "$TAPS" "$root/python" TAPS_IN_PROCESS=0
      [ "$SPIN" = 1 ] && taps spin "$TAPS" "$root/python" TAPS_BENCH=1 TAPS_SPIN_US=100
      PATH="$VENV/bin:$PATH" PYTHONPATH="$root/python" TAPS_BENCH_TIMES="$work/times" "${cpu_native[@]}" "$VENV/bin/python" -m taps_bridge.native_bench "$e" "$TASKS" "$k" "$(native $e)" >"$work/nout" 2>/dev/null
      rate=$(sed -n "s/ tasks\/s median \([0-9]*\) us/ \1/p" "$work/nout")
      echo "$r $e $k native $rate $(cpu_fields "$work/nout")"
      if [ "$e" = hyperqueue ]; then
        rate=$(PATH="$VENV/bin:$PATH" PYTHONPATH="$root/python" "$VENV/bin/python" -m taps_bridge.native_bench "$e" 10 "$k" "{\"workers\": 1, \"cpus\": 2, \"native\": \"wait\"}" 2>/dev/null | sed -n "s/ tasks\/s//p")
        echo "$r $e $k hq-wait $rate"
      fi
    done
  done
done
' | tee "$work/lines"
# Summary: per engine, in-flight count and variant, the median over the rounds of the median gap,
# and the median of the rounds' ratios to "native" (the engine alone in the same round).
"$VENV/bin/python" - "$work/lines" <<'PY'
import math, statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
gap = {(r[0], r[1], r[2], r[3]): float(r[5]) for r in rows if len(r) >= 6 and r[5] != "-"}
# TAPS_BENCH_CPU=1: "busy C cores us/task total T driver D ..." after the gap.
cpu = {(r[0], r[1], r[2], r[3]): dict(zip(r[10::2], map(float, r[11::2])), busy=float(r[7])) for r in rows if len(r) > 7 and r[6] == "busy"}
keys = sorted({k[1:] for k in gap}, key=lambda k: (k[0], k[1], k[2] != "native", k[2]))


def interval(xs):
    """A distribution-free 95 % confidence interval of the median of xs: the k-th smallest and
    k-th largest, k the largest with P(Binomial(n, 1/2) < k) <= 2.5 % (none below 6 rounds)."""
    n, xs = len(xs), sorted(xs)
    k, tail = 0, 0.0
    while k < n and tail + math.comb(n, k) / 2**n <= 0.025:
        tail += math.comb(n, k) / 2**n
        k += 1
    return "[%.2f-%.2f]" % (xs[k - 1], xs[n - k]) if k else "[-]"


if keys:
    print("summary: engine inflight variant median-gap-µs (median over rounds) ratio-to-native (median of the rounds', its 95 % interval)")
for e, k, v in keys:
    rounds = [r for (r, e2, k2, v2) in gap if (e2, k2, v2) == (e, k, v)]
    ratios = [gap[(r, e, k, v)] / gap[(r, e, k, "native")] for r in rounds if (r, e, k, "native") in gap]
    med = statistics.median(gap[(r, e, k, v)] for r in rounds)
    ratio = "%.2f %s" % (statistics.median(ratios), interval(ratios)) if ratios and v != "native" else "-"
    print("summary: %s %s %s %.0f %s" % (e, k, v, med, ratio))
if cpu:
    print("cpu: engine inflight variant, medians over the rounds: busy cores, us of CPU per task (total, driver, bridge or the engine's own client, engine, kernel), total / native's (median of the rounds')")
for e, k, v in keys:
    got = {r: c for (r, e2, k2, v2), c in cpu.items() if (e2, k2, v2) == (e, k, v)}
    if not got:
        continue
    med = lambda f: statistics.median(c.get(f, 0.0) for c in got.values())
    ratios = [c["total"] / cpu[(r, e, k, "native")]["total"] for r, c in got.items() if (r, e, k, "native") in cpu]
    ratio = "%.2f %s" % (statistics.median(ratios), interval(ratios)) if ratios and v != "native" else "-"
    print("cpu: %s %s %s busy %.2f total %.0f driver %.0f bridge %.0f engine %.0f kernel %.0f %s" % (e, k, v, med("busy"), med("total"), med("driver"), med("bridge"), med("engine"), med("kernel"), ratio))
PY
