#!/usr/bin/env bash
# One table of every executor side by side (issue 15's comparison), measured in one sitting:
#   synthetic no-op bag (1,000 tasks): per-task overhead with 1 in flight, throughput with 1 and 2;
#   data movement: a chain of 10 tasks passing 1 MB / 10 MB, inline (none), file and redis
#     transformer: the median per-task overhead (round trip minus body, from `taps report`);
#   cholesky n=4000 b=500, and mapreduce over 16 generated files of 50,000 words in 16 maps:
#   makespan (first submit to last result).
# Executors run 2 workers (MPI: 3 ranks; HyperQueue: one worker of 2 cpus); the Python engines run inside a private network
# namespace (unshare -n, loopback up). Redis is a private redis-server on a unix socket.
# Medians over ROUNDS interleaved rounds.
#
#   scripts/bench-executors.sh [--rounds N] [--executors e1,e2,...] [--keep DIR]   (root for unshare)
set -euo pipefail
rounds=1 executors=thread-pool,process-pool,mpi,dask,ray,parsl-local,hyperqueue keep=
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --executors) executors=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    -h|--help) sed -n 2,12p "$0"; exit 0 ;;
    *) echo "bench-executors: unknown argument '$1' (allowed: --rounds N --executors LIST --keep DIR)" >&2; exit 2 ;;
  esac
done
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
root=$(cd "$(dirname "$0")/.." && pwd)
taps=$root/target/release/taps
out=${keep:-$(mktemp -d)}
mkdir -p "$out/cells"
redis-server --port 0 --unixsocket "$out/redis.sock" --save '' --appendonly no --daemonize yes \
  --pidfile "$out/redis.pid" --logfile "$out/redis.log"
cleanup() {
  local pid; pid=$(cat "$out/redis.pid" 2>/dev/null) || pid=
  # Wait for redis to go: it writes its log as it shuts down (and would be left behind in $out).
  if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done; fi
  [ -n "$keep" ] || rm -rf "$out"
}
trap cleanup EXIT
for _ in $(seq 50); do [ -S "$out/redis.sock" ] && break; sleep 0.1; done
IFS=, read -ra EXECS <<<"$executors"

workers() {
  case $1 in
    thread-pool) echo --engine.executor.max-threads 2 ;;
    process-pool) echo --engine.executor.max-processes 2 ;;
    mpi) echo --engine.executor.ranks 3 ;;
    dask|parsl-local) echo --engine.executor.workers 2 ;;
    ray) echo --engine.executor.num-cpus 2 ;;
    hyperqueue) echo --engine.executor.workers 1 --engine.executor.cpus 2 ;;
  esac
}
cell() { # cell NAME EXECUTOR ARGS...: one taps run into $out/cells/NAME
  local name=$1 e=$2; shift 2
  mkdir -p "$out/cells/$name"
  local cmd=("$taps" run --engine.executor "$e" $(workers "$e") "$@" --run-dir "$out/cells/$name")
  case $e in
    dask|ray|parsl-local|hyperqueue) cmd=(unshare -n bash -c 'ip link set lo up; exec "$@"' -- "${cmd[@]}") ;;
  esac
  if (cd "$out" && "${cmd[@]}" > "$out/cells/$name.log" 2>&1); then :; else
    echo "bench-executors: $name failed (see $out/cells/$name.log)" >&2
  fi
  # A Python engine's tasks that did not run inside its workers (a taps_native of another build,
  # say after an edit: scripts/install-engines.sh rebuilds it) would measure another design.
  case $e in
    dask|ray|parsl-local)
      if grep -q "tasks run in a taps-worker process per engine worker thread" "$out/cells/$name.log"; then
        echo "bench-executors: $name: tasks ran in taps-worker processes, not inside $e's workers (python/taps_native is of another build: run scripts/install-engines.sh)" >&2
        exit 1
      fi ;;
  esac
}
for r in $(seq "$rounds"); do
  for e in "${EXECS[@]}"; do
    for k in 1 2; do
      cell "r$r.$e.syn$k" "$e" --app synthetic --app.structure bag --app.task-count 1000 --app.bag-max-running $k \
        --app.task-sleep 0 --app.task-data-bytes 0
    done
    for size in 1000000 10000000; do
      for t in none file redis; do
        extra=(--engine.transformer "$t")
        [ "$t" = redis ] && extra+=(--engine.transformer.address "unix://$out/redis.sock")
        [ "$t" = none ] || extra+=(--engine.filter object-size --engine.filter.min-size 1)
        cell "r$r.$e.data$size.$t" "$e" --app synthetic --app.structure sequential --app.task-count 10 \
          --app.task-sleep 0 --app.task-data-bytes $size "${extra[@]}"
      done
    done
    cell "r$r.$e.cholesky" "$e" --app cholesky --app.matrix-size 4000 --app.block-size 500 --app.output none
    cell "r$r.$e.mapreduce" "$e" -c "$root/apps/mapreduce/config.toml" --app.generated-files 16 \
      --app.generated-words 50000 --app.map-tasks 16
    echo "bench-executors: round $r/$rounds $e done" >&2
  done
done
cd "$out/cells"
"$taps" report --format csv $(ls -d r*/ | sed 's:/$::') > "$out/report.csv" 2> "$out/report.err" || true
python3 - "$out/report.csv" "$executors" "$rounds" <<'PY'
import csv, statistics, sys
rows = {r["run_dir"]: r for r in csv.DictReader(open(sys.argv[1]))}
execs, rounds = sys.argv[2].split(","), int(sys.argv[3])
def med(e, what, col, scale=1.0):
    v = [float(rows[k][col]) * scale for k in (f"r{r}.{e}.{what}" for r in range(1, rounds + 1))
         if k in rows and rows[k].get(col) not in (None, "", "n/a") and rows[k]["failed"] == "0"]
    return statistics.median(v) if v else None
fmt = lambda v, f: "failed" if v is None else f.format(v)
print("| executor | overhead, 1 in flight (µs) | tasks/s, 1 in flight | tasks/s, 2 in flight | "
      "1 MB none / file / redis (ms) | 10 MB none / file / redis (ms) | cholesky 4000/500 (s) | mapreduce 16 × 50k words (s) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for e in execs:
    d = lambda s: " / ".join(fmt(med(e, f"data{s}.{t}", "overhead_median_us", 1e-3), "{:.1f}") for t in ("none", "file", "redis"))
    print(f"| {e} | {fmt(med(e, 'syn1', 'overhead_median_us'), '{:.0f}')} | {fmt(med(e, 'syn1', 'throughput_per_s'), '{:,.0f}')} "
          f"| {fmt(med(e, 'syn2', 'throughput_per_s'), '{:,.0f}')} | {d(1000000)} | {d(10000000)} "
          f"| {fmt(med(e, 'cholesky', 'makespan_s'), '{:.2f}')} | {fmt(med(e, 'mapreduce', 'makespan_s'), '{:.3f}')} |")
print(f"\n{rounds} round(s), interleaved; medians. Cells that failed: see the logs in cells/.")
PY
