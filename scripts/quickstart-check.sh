#!/usr/bin/env bash
# Runs the README's first quick-start command exactly as written, in a fresh clone of this
# repository (uncommitted changes applied) with a fresh target directory, and checks that it ran
# a real benchmark: one run directory whose tasks.jsonl has a successful record per task.
#
#   scripts/quickstart-check.sh        (part of scripts/test.sh; takes a full release build)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# The first command of the README's "## Quick start" section: the first line of its first bash block.
cmd=$(awk '/^## Quick start/{q=1; next} q && /^## /{exit} q && /^```bash/{b=1; next} b && /^```/{exit} b{print; exit}' "$root/README.md")
[[ -n "$cmd" ]] || { echo "quickstart-check: no bash block under '## Quick start' in README.md" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/taps-quickstart.XXXXXX")
trap 'rm -rf "$work"' EXIT
git clone -q "$root" "$work/taps"
git -C "$root" diff HEAD --binary | git -C "$work/taps" apply --allow-empty
while IFS= read -r -d '' f; do                       # untracked, not ignored files too
  mkdir -p "$work/taps/$(dirname "$f")" && cp "$root/$f" "$work/taps/$f"
done < <(git -C "$root" ls-files -z --others --exclude-standard)

echo "quickstart-check: in a fresh clone ($work/taps): $cmd"
(cd "$work/taps" && env -u CARGO_TARGET_DIR bash -c "$cmd") > "$work/out.txt" 2>&1 || {
  tail -n 40 "$work/out.txt" >&2
  echo "quickstart-check: the README's quick-start command failed" >&2
  exit 1
}

runs=("$work"/taps/runs/*/)
[[ ${#runs[@]} == 1 && -d "${runs[0]}" ]] || { echo "quickstart-check: expected one run directory, got: ${runs[*]}" >&2; exit 1; }
records="${runs[0]}tasks.jsonl"
want=$(awk -F' *= *' '/^task_count/{print $2}' "$work/taps/apps/synthetic/config.toml")
warm=$(awk -F' *= *' '/^warmup_tasks/{print $2}' "$work/taps/apps/synthetic/config.toml")
want=$((want + ${warm:-0}))
total=$(wc -l < "$records")
ok=$(grep -c '"success":true' "$records" || true)
if [[ "$total" != "$want" || "$ok" != "$want" ]]; then
  echo "quickstart-check: $records has $total records, $ok successful; expected $want successful" >&2
  exit 1
fi
grep -q "Finished benchmark (app=synthetic" "${runs[0]}log.txt" || { echo "quickstart-check: no 'Finished benchmark' in the log" >&2; exit 1; }
echo "quickstart-check: ok: $(basename "${runs[0]}") with $ok successful task records"
