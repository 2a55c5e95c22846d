#!/usr/bin/env bash
# Builds a virtual environment with the Python suite (proxystore/taps) that scripts/compare-python.sh
# compares taps with. The Python suite is not on PyPI (the PyPI package named `taps` is another
# project): it is installed from a source checkout, its dependencies from PyPI at the versions
# pinned in scripts/python-taps-constraints.txt.
#
#   scripts/python-taps-venv.sh VENV [SRC]
#
# SRC: a checkout of https://github.com/proxystore/taps (a directory holding its pyproject.toml).
# Without SRC, the repository is cloned into VENV/src at the commit this project was compared
# with ($TAPS_PY_COMMIT, default 6167964), which needs network access to GitHub.
# Needs python3 (≥ 3.10) with the venv module; PyPI must be reachable (or a pip mirror configured).
# Keep VENV outside this repository, e.g. /work/venvs/python-taps.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
usage() { sed -n '7p' "${BASH_SOURCE[0]}" | sed 's/^#   /usage: /'; }
die() { echo "python-taps-venv: error: $*" >&2; exit 2; }

case "${1:-}" in
  -h|--help) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
  '') usage >&2; die "missing VENV (the directory to create the virtual environment in)" ;;
esac
[ $# -le 2 ] || die "too many arguments (give VENV and optionally SRC)"
venv=$1 src=${2:-}
commit=${TAPS_PY_COMMIT:-6167964}

if [ -n "$src" ]; then
  [ -f "$src/pyproject.toml" ] && grep -q '^name = "taps"' "$src/pyproject.toml" && [ -f "$src/taps/run/main.py" ] \
    || die "$src is not a checkout of proxystore/taps (no pyproject.toml naming \"taps\" with taps/run/main.py)"
  src=$(cd "$src" && pwd)
fi
python3 -c 'import sys, venv; sys.exit(sys.version_info < (3, 10))' 2>/dev/null \
  || die "python3 ≥ 3.10 with the venv module is needed (apt-get install python3-venv)"

python3 -m venv "$venv"
if [ -z "$src" ]; then
  src=$venv/src
  [ -d "$src/.git" ] || git clone --quiet https://github.com/proxystore/taps "$src"
  git -C "$src" checkout --quiet "$commit"
fi
"$venv/bin/python" -m pip install --quiet -c "$here/python-taps-constraints.txt" "$src[cholesky]"
version=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("taps"))')
rev=$(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo "not a git checkout")
echo "python-taps-venv: $venv has the Python suite $version ($rev); compare with: scripts/compare-python.sh $venv"
