#!/bin/bash
# Compares two taps builds side by side: N interleaved pairs of `taps bench` (dispatch overhead and
# throughput of every executor), then the medians and the median pair ratio of each figure.
#   scripts/bench-pairs.sh OLD/taps NEW/taps [PAIRS=10]
# Each binary must be named `taps` (it starts itself as the process-pool worker), e.g. a copy of
# target/release/taps built at each commit.
set -euo pipefail
old=$1 new=$2 pairs=${3:-10}
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for i in $(seq 1 "$pairs"); do
  for v in old new; do
    bin=$old; [ $v = new ] && bin=$new
    "$bin" bench --executor thread-pool --executor process-pool --executor mpi --data-sizes '' --out "$out/$v" 2>/dev/null \
      | grep -E '^\| (thread-pool|process-pool|mpi) ' | sed "s/^/$v $i /" >> "$out/rows"
  done
done
python3 - "$out/rows" <<'PY'
import statistics as st, sys
rows = {}
for l in open(sys.argv[1]):
    p = l.split('|'); v, i = p[0].split()[:2]
    rows.setdefault((p[1].strip(), v), []).append((int(i), float(p[2]), float(p[3]), float(p[4].split()[0])))
print('| figure | old | new | median pair ratio new/old |\n|---|---:|---:|---:|')
for ex in ['thread-pool', 'process-pool', 'mpi']:
    if (ex, 'old') not in rows: continue
    b, a = sorted(rows[(ex, 'old')]), sorted(rows[(ex, 'new')])
    for k, name in [(1, 'overhead median (µs)'), (2, 'overhead p95 (µs)'), (3, 'throughput (tasks/s)')]:
        r = st.median(y[k] / x[k] for x, y in zip(b, a))
        print(f'| {ex} {name} | {st.median(x[k] for x in b):.1f} | {st.median(x[k] for x in a):.1f} | {r:.2f} |')
PY
