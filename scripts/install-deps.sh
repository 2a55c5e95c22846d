#!/usr/bin/env bash
# Install the system packages taps needs (Debian/Ubuntu), idempotently.
#
#   scripts/install-deps.sh                  install whatever is missing (apt-get, as root or via sudo -n)
#   scripts/install-deps.sh --print-missing  only list the missing packages, one per line (exit 0)
#
# When nothing is missing this prints one line and exits at once (no apt-get update).
# Without root or password-less sudo it lists what is missing, the environment modules to load
# instead on an HPC cluster, and exits 1. apt output goes to ${TMPDIR:-/tmp}/taps-install-deps.log.
set -euo pipefail

# What taps needs: compilers + pkg-config + libclang (bindgen for rsmpi), OpenMPI, HDF5, cfitsio
# (the montage app's FITS files, through the fitsio crate), OpenBLAS,
# a local Slurm (+ munge) with the PBS-style qsub/qstat wrappers, the apps' science tools
# (Montage, AutoDock Vina, Open Babel, xtb), a font for the apps' charts (DejaVu), git + procps
# (pgrep/ps) for the tests, iproute2 + util-linux (ip, unshare, nsenter) for the simulated
# nodes of the multi-node tests, chromium (the test opening taps report's HTML page headless), and
# redis-server for the redis transformer (its tests start a private one on a unix socket; the
# system service Debian starts is never used).
PACKAGES=(
  build-essential pkg-config libclang-dev
  libopenmpi-dev openmpi-bin
  libhdf5-dev hdf5-tools libcfitsio-dev
  libopenblas-dev
  slurm-wlm munge slurm-wlm-torque
  montage autodock-vina openbabel xtb fonts-dejavu-core
  dataset-fashion-mnist
  git procps iproute2 util-linux
  chromium redis-server
)

LOG="${TMPDIR:-/tmp}/taps-install-deps.log"

usage() { sed -n '2,10s/^# \{0,1\}//p' "$0"; }

print_only=0
case "${1:-}" in
  "") ;;
  --print-missing) print_only=1 ;;
  -h|--help) usage; exit 0 ;;
  *) echo "install-deps: unknown argument '$1' (allowed: --print-missing, --help)" >&2; exit 2 ;;
esac

modules_hint() {
  cat >&2 <<'EOF'
On an HPC cluster without root, load environment modules instead (names vary; see `module avail`):
  MPI            module load openmpi        (or the site MPI: mpich, cray-mpich, intel-mpi)
  HDF5           module load hdf5           (serial is enough)
  libclang       module load llvm           (or clang; bindgen needs libclang.so, else set LIBCLANG_PATH)
  BLAS           module load openblas
  Slurm          module load slurm          (usually already on the login node)
  Montage        module load montage
  AutoDock Vina  module load vina           (or autodock-vina)
  Open Babel     module load openbabel
  xtb            module load xtb            (or: conda install -c conda-forge xtb)
  e.g.  module load openmpi hdf5 llvm openblas slurm
EOF
}

cargo_hint() {
  if ! command -v cargo >/dev/null 2>&1; then
    if [[ -x "$HOME/.cargo/bin/cargo" ]]; then
      echo "install-deps: note: cargo is not on PATH; run: source \"\$HOME/.cargo/env\"" >&2
    else
      echo "install-deps: note: cargo not found; install Rust with:" \
        "curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y" >&2
    fi
  fi
}

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-deps: not a Debian/Ubuntu system (no dpkg-query/apt-get); install the equivalents of:" >&2
  echo "  ${PACKAGES[*]}" >&2
  modules_hint
  cargo_hint
  exit 1
fi

# One dpkg-query for all packages; unknown packages only print to stderr, so they count as missing.
declare -A installed=()
while read -r name status; do
  [[ "$status" == "install ok installed" ]] && installed[$name]=1
done < <(dpkg-query -W -f='${Package} ${Status}\n' "${PACKAGES[@]}" 2>/dev/null || true)

missing=()
for p in "${PACKAGES[@]}"; do
  [[ -n "${installed[$p]:-}" ]] && continue
  # A working C/C++ toolchain not installed through build-essential (e.g. a custom image) is fine.
  if [[ "$p" == build-essential ]] && command -v cc >/dev/null && command -v c++ >/dev/null \
      && command -v make >/dev/null; then
    continue
  fi
  missing+=("$p")
done

if (( print_only )); then
  if (( ${#missing[@]} )); then printf '%s\n' "${missing[@]}"; fi
  exit 0
fi

if (( ${#missing[@]} == 0 )); then
  echo "install-deps: all ${#PACKAGES[@]} system packages present"
  cargo_hint
  exit 0
fi

SUDO=()
if [[ "$(id -u)" != 0 ]]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  else
    echo "install-deps: missing packages (need root or password-less sudo to install them):" >&2
    echo "  sudo apt-get install --no-install-recommends ${missing[*]}" >&2
    modules_hint
    cargo_hint
    exit 1
  fi
fi

echo "install-deps: installing ${#missing[@]} package(s): ${missing[*]} (log: $LOG)"
start=$SECONDS
APT=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=600)
: >"$LOG"
if ! "${APT[@]}" update >>"$LOG" 2>&1 \
  || ! "${APT[@]}" install -y --no-install-recommends "${missing[@]}" >>"$LOG" 2>&1; then
  echo "install-deps: apt-get failed; last lines of $LOG:" >&2
  tail -n 25 "$LOG" >&2
  exit 1
fi
echo "install-deps: done in $((SECONDS - start)) s"
cargo_hint
