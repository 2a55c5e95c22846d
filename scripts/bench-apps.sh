#!/bin/bash
# Side-by-side makespans of the apps on each executor, from their example configs
# (apps/<app>/config.toml), interleaved run by run; medians over the runs.
#   scripts/bench-apps.sh [--runs N] [--apps a,b,...] [--executors e1,e2,...] [--taps PATH] [--keep DIR]
# Per app and executor it prints: the makespan (first submit to last result, from tasks.jsonl),
# the sum of the task bodies (task_start..task_end: the time the apps' own code and programs
# take), the body share of the executor's capacity (sum of bodies / (makespan x workers)), the
# wall time of the whole `taps run` (start-up, inputs, outputs included), tasks, and the median
# bytes a task moved (inline + by reference). MPI runs with 3 ranks (rank 0 drives, 2 workers).
set -euo pipefail
runs=3 apps=docking,moldesign,montage,physics executors=thread-pool,process-pool,mpi
taps=target/release/taps keep=
while [ $# -gt 0 ]; do
  case $1 in
    --runs) runs=$2; shift 2 ;;
    --apps) apps=$2; shift 2 ;;
    --executors) executors=$2; shift 2 ;;
    --taps) taps=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    -h|--help) sed -n 2,9p "$0"; exit 0 ;;
    *) echo "bench-apps: unknown argument '$1' (allowed: --runs N --apps LIST --executors LIST --taps PATH --keep DIR)" >&2; exit 2 ;;
  esac
done
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
root=$(cd "$(dirname "$0")/.." && pwd)
taps=$(cd "$(dirname "$taps")" && pwd)/$(basename "$taps")
out=${keep:-$(mktemp -d)}
mkdir -p "$out"
[ -n "$keep" ] || trap 'rm -rf "$out"' EXIT
IFS=, read -ra APPS <<<"$apps"
IFS=, read -ra EXECS <<<"$executors"
for a in "${APPS[@]}"; do
  [ -f "$root/apps/$a/config.toml" ] || { echo "bench-apps: no apps/$a/config.toml" >&2; exit 2; }
done
: > "$out/runs.tsv"
for r in $(seq 1 "$runs"); do
  for a in "${APPS[@]}"; do
    for e in "${EXECS[@]}"; do
      extra=(--engine.executor "$e")
      [ "$e" = mpi ] && extra+=(--engine.executor.ranks 3)
      [ "$e" = thread-pool ] && extra+=(--engine.executor.max-threads 2)
      [ "$e" = process-pool ] && extra+=(--engine.executor.max-processes 2)
      dir="$out/$a-$e-$r"
      mkdir -p "$dir"
      t0=$(date +%s.%N)
      if ! (cd "$dir" && "$taps" run -c "$root/apps/$a/config.toml" "${extra[@]}" >/dev/null 2>"$dir/stderr"); then
        echo "bench-apps: $a on $e failed (run $r); see $dir/stderr" >&2; tail -3 "$dir/stderr" >&2; exit 1
      fi
      t1=$(date +%s.%N)
      run_dir=$(ls -d "$dir"/runs/*/ | head -1)
      printf '%s\t%s\t%s\t%s\t%s\n' "$a" "$e" "$r" "$(echo "$t1 - $t0" | bc)" "$run_dir" >> "$out/runs.tsv"
      echo "bench-apps: run $r/$runs $a $e done" >&2
    done
  done
done
python3 - "$out/runs.tsv" <<'PY'
import json, statistics as st, sys
rows = {}
for line in open(sys.argv[1]):
    app, ex, r, wall, run_dir = line.rstrip('\n').split('\t')
    recs = [json.loads(l) for l in open(run_dir + 'tasks.jsonl')]
    ex_recs = [x for x in recs if x.get('execution')]
    makespan = max(x['received_time'] for x in recs) - min(x['submit_time'] for x in recs)
    bodies = sum(x['execution']['task_end_time'] - x['execution']['task_start_time'] for x in ex_recs)
    moved = st.median((x.get('bytes_inline') or 0) + (x.get('bytes_by_reference') or 0) for x in recs)
    rows.setdefault((app, ex), []).append((makespan, bodies, float(wall), len(recs), moved))
print('| app | executor | makespan (s) | sum of task bodies (s) | bodies / (makespan × 2 workers) | taps run wall (s) | tasks | bytes moved per task (median) |')
print('|---|---|---:|---:|---:|---:|---:|---:|')
for (app, ex), v in rows.items():
    m = st.median(x[0] for x in v); b = st.median(x[1] for x in v); w = st.median(x[2] for x in v)
    lo, hi = min(x[0] for x in v), max(x[0] for x in v)
    print(f'| {app} | {ex} | {m:.2f} ({lo:.2f}–{hi:.2f}) | {b:.2f} | {b / (2 * m):.0%} | {w:.2f} | {v[0][3]} | {st.median(x[4] for x in v):,.0f} |')
print(f'\n{len(next(iter(rows.values())))} runs each, interleaved; medians (makespan range in brackets).')
PY
