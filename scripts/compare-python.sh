#!/usr/bin/env bash
# Runs taps and the Python suite (proxystore/taps) on the same configurations, interleaved run by
# run, and prints the medians side by side. A benchmark, not a test: run it on an idle machine.
#
#   scripts/compare-python.sh VENV [--runs N] [--tasks N] [--only LIST] [--taps PATH] [--dry-run]
#
# VENV      a virtual environment with the Python suite, made by scripts/python-taps-venv.sh
# --runs    runs of each configuration on each side (default 5); the medians are printed
# --tasks   tasks of each no-op bag (default 2000)
# --only    comma-separated subset of: bench,mapreduce,cholesky (default: all three)
# --taps    the taps binary (default: target/release/taps of this checkout)
# --dry-run print the command pairs and exit (no VENV needed)
#
# Every configuration runs on thread-pool and process-pool, with the same `run` arguments given to
# `taps` and to `python -m taps.run` (run directories go to a temporary directory, removed after):
#   bench      synthetic bag of no-op tasks (--app.warmup-tasks 2 first, outside the rate) with 1
#              and 2 in flight: per-task overhead = 1 / rate with 1 in flight, throughput = rate
#              with 2 in flight, the rate being the app's `Completed N/N (rate: R tasks/s)`;
#   mapreduce  16 generated files × 50,000 words, 16 map tasks + 1 reduce; `Finished app`;
#   cholesky   n=4000, b=500; `Finished app`, and taps's factorisation makespan (the Python suite
#              does not print one).
# The order of the two sides alternates from run to run. The environment is passed to both sides
# unchanged (e.g. OPENBLAS_NUM_THREADS, OPENBLAS_CORETYPE).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
die() { echo "compare-python: error: $*" >&2; exit 2; }
usage() { sed -n '5p' "${BASH_SOURCE[0]}" | sed 's/^#   /usage: /'; }

venv= runs=5 tasks=2000 only=bench,mapreduce,cholesky taps=$(dirname "$here")/target/release/taps dry=0
posint() { [[ $2 =~ ^[1-9][0-9]*$ ]] || die "$1 must be a whole number ≥ 1, not '$2'"; }
while [ $# -gt 0 ]; do
  case $1 in
    -h|--help) sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --runs|--tasks|--only|--taps)
      [ $# -ge 2 ] || die "$1 needs a value"
      case $1 in
        --runs) posint --runs "$2"; runs=$2 ;;
        --tasks) posint --tasks "$2"; tasks=$2 ;;
        --only) only=$2 ;;
        --taps) taps=$2 ;;
      esac
      shift 2 ;;
    --dry-run) dry=1; shift ;;
    -*) usage >&2; die "unknown option $1 (allowed: --runs, --tasks, --only, --taps, --dry-run, --help)" ;;
    *) [ -z "$venv" ] || die "one VENV only (got '$venv' and '$1')"; venv=$1; shift ;;
  esac
done
[ -n "$venv" ] || { usage >&2; die "missing VENV (make one with scripts/python-taps-venv.sh VENV)"; }
IFS=, read -r -a parts <<< "$only"
[ ${#parts[@]} -gt 0 ] || die "--only needs at least one of bench, mapreduce, cholesky"
for p in "${parts[@]}"; do
  case $p in bench|mapreduce|cholesky) ;; *) die "--only: unknown configuration '$p' (allowed: bench, mapreduce, cholesky)" ;; esac
done
want() { [[ ",$only," == *",$1,"* ]]; }

# The configurations: "label|figure kind|run arguments" (the executor is added per pool).
configs=()
if want bench; then
  bag="--app synthetic --app.structure bag --app.task-count $tasks --app.warmup-tasks 2"
  configs+=("bag, 1 in flight|overhead|$bag --app.bag-max-running 1")
  configs+=("bag, 2 in flight|throughput|$bag --app.bag-max-running 2")
fi
want mapreduce && configs+=("mapreduce 16 files x 50,000 words, 16 maps|app|--app mapreduce --app.generate true --app.generated-files 16 --app.generated-words 50000 --app.map-tasks 16 --app.data-dir DATA")
want cholesky && configs+=("cholesky n=4000 b=500|app|--app cholesky --app.matrix-size 4000 --app.block-size 500")
pools=(thread-pool process-pool)

if [ $dry = 0 ]; then
  [ -x "$venv/bin/python" ] || die "$venv/bin/python not found: make the venv with scripts/python-taps-venv.sh $venv"
  "$venv/bin/python" -c 'import taps.run.main' 2>/dev/null \
    || die "$venv has no Python suite (import taps.run.main failed): make it with scripts/python-taps-venv.sh $venv"
  [ -x "$taps" ] || die "taps binary $taps not found (cargo build --release, or give --taps PATH)"
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/compare-python.XXXXXX")
trap 'rm -rf "$work"' EXIT

# One run of one side: prints "figure value" lines parsed from its log.
run_one() { # side label kind args pool i
  local side=$1 kind=$3 args=$4 pool=$5 i=$6 tag=$1-$5-$6-$RANDOM
  args=${args//DATA/$work/data-$tag}
  local -a cmd
  if [ "$side" = taps ]; then cmd=("$taps" run); else cmd=("$venv/bin/python" -m taps.run); fi
  # shellcheck disable=SC2206 # the arguments hold no spaces
  cmd+=($args --engine.executor "$pool" --run.dir-format "$work/runs/$tag-{timestamp}")
  if [ $dry = 1 ]; then echo "$side ($2, $pool, run $i): ${cmd[*]}"; return; fi
  local log=$work/log-$tag
  if ! (cd "$work" && "${cmd[@]}") > "$log" 2>&1; then
    echo "compare-python: $side failed on '$2' ($pool), run $i: ${cmd[*]}; last lines of its log:" >&2
    tail -n 5 "$log" >&2
    exit 1
  fi
  parse_log "$kind" < "$log"
}

# Figures from a run's log (stdin): "app S" (kind app only), "makespan S", "overhead US", "throughput PER_S".
parse_log() {
  awk -v kind="$1" '
    kind == "app" && match($0, /Finished app \(elapsed=[0-9.]+s\)/) { v = substr($0, RSTART + 22, RLENGTH - 24); print "app", v }
    match($0, /makespan=[0-9.]+s/) { print "makespan", substr($0, RSTART + 9, RLENGTH - 10) }
    match($0, /Completed [0-9]+\/[0-9]+ \(rate: [0-9.]+ tasks\/s\)/) {
      s = substr($0, RSTART, RLENGTH); sub(/.*rate: /, "", s); sub(/ tasks.*/, "", s)
      if (kind == "overhead") printf "overhead %.1f\n", 1e6 / s
      if (kind == "throughput") print "throughput", s
    }'
}

for i in $(seq 1 "$runs"); do
  for c in "${configs[@]}"; do
    IFS='|' read -r label kind args <<< "$c"
    for pool in "${pools[@]}"; do
      sides=(taps python); [ $((i % 2)) = 0 ] && sides=(python taps)
      for side in "${sides[@]}"; do
        if [ $dry = 1 ]; then run_one "$side" "$label" "$kind" "$args" "$pool" "$i"; continue; fi
        run_one "$side" "$label" "$kind" "$args" "$pool" "$i" | sed "s/^/$side|$label|$pool|/" >> "$work/figures"
      done
    done
  done
done
[ $dry = 1 ] && exit 0

echo "taps: $("$taps" --version 2>/dev/null || echo "$taps")"
echo "Python suite: $("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("taps"))') ($venv)"
echo "$runs run(s) of each side, interleaved; medians; $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
awk -F'|' '
  function median(key,   n, a, i, j, t) {
    n = split(vals[key], a, " ")
    for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  {
    split($4, f, " "); key = $2 "|" $3 "|" f[1]
    if (!(key in seen)) { seen[key] = 1; order[++k] = key }
    vals[$1 "|" key] = vals[$1 "|" key] " " f[2]
  }
  END {
    unit["app"] = "Finished app (s)"; unit["makespan"] = "factorisation makespan (s)"
    unit["overhead"] = "per-task overhead (µs)"; unit["throughput"] = "throughput (tasks/s)"
    print "| configuration | executor | figure | taps | Python suite | taps ahead by |"
    print "|---|---|---|---:|---:|---:|"
    for (x = 1; x <= k; x++) {
      split(order[x], p, "|"); key = order[x]
      tk = "taps|" key; pk = "python|" key
      t = (tk in vals) ? median(tk) : ""
      y = (pk in vals) ? median(pk) : ""
      r = (t != "" && y != "" && t > 0 && y > 0) ? sprintf("%.1f×", p[3] == "throughput" ? t / y : y / t) : "—"
      printf "| %s | %s | %s | %s | %s | %s |\n", p[1], p[2], unit[p[3]], t == "" ? "—" : t, y == "" ? "—" : y, r
    }
  }' "$work/figures"
