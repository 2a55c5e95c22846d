#!/usr/bin/env bash
# The project's whole test command:
#   system packages -> local Slurm cluster (torn down on exit) -> fmt -> clippy -> build -> test
#   -> a build without default features -> the README's quick start from a fresh clone
#
#   scripts/test.sh                    everything
#   scripts/test.sh slurm -- --nocapture   extra arguments go to `cargo test` (and skip the last two steps)
#
# TAPS_FEATURES adds cargo features; TAPS_KEEP_SLURM=1 leaves the cluster up.
set -euo pipefail

FEATURES="${TAPS_FEATURES-}"   # extra cargo features for clippy, build and test (mpi and hdf5 are default)

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
start=$SECONDS
step() { printf '\n==> [%4d s] %s\n' "$((SECONDS - start))" "$*"; }

step "system packages (scripts/install-deps.sh)"
scripts/install-deps.sh

step "Python engines of the dask, ray, parsl-local, parsl-htex and hyperqueue executors (scripts/install-engines.sh)"
scripts/install-engines.sh

if ! command -v cargo >/dev/null 2>&1; then
  # shellcheck source=/dev/null
  [[ -f "$HOME/.cargo/env" ]] && source "$HOME/.cargo/env"
  if ! command -v cargo >/dev/null 2>&1; then
    echo "test.sh: cargo not found; install Rust with:" \
      "curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y" >&2
    exit 1
  fi
fi

if [[ "$(id -u)" == 0 ]]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi

if [[ "$(id -u)" == 0 ]]; then
  step "local Slurm cluster (slurm/up.sh)"
  if [[ "${TAPS_KEEP_SLURM:-0}" != 1 ]]; then
    trap 'step "stop local Slurm cluster (slurm/down.sh)"; slurm/down.sh || true' EXIT
    trap 'exit 130' INT    # make Ctrl-C and kill also run the EXIT trap
    trap 'exit 143' TERM
  fi
  hint=$(slurm/up.sh)
  export SLURM_CONF="${hint#export SLURM_CONF=}"
  echo "SLURM_CONF=$SLURM_CONF"
else
  step "local Slurm cluster: skipped (needs root); Slurm tests use SLURM_CONF=${SLURM_CONF:-<default>}"
fi

features=()
[[ -n "$FEATURES" ]] && features=(--features "$FEATURES")

# Print the command, then run it.
run() { step "$*"; "$@"; }

run cargo fmt --all -- --check
run cargo clippy --release --all-targets "${features[@]}" -- -D warnings
# The developers' API documentation builds without a broken link.
RUSTDOCFLAGS="-D warnings" run cargo doc --no-deps --workspace --document-private-items "${features[@]}"
run cargo build --release "${features[@]}" --bins
run cargo test --release "${features[@]}" "$@"

if [[ $# == 0 ]]; then
  # Without MPI and HDF5 taps still builds, and says where MPI is asked for that it is not compiled in.
  run cargo test --release --no-default-features --test mpi_not_compiled

  step "the README's quick start, from a fresh clone with a fresh target directory (scripts/quickstart-check.sh)"
  scripts/quickstart-check.sh
fi

step "all checks passed"
