# Sourced by the scripts beside it: the repository root, `abs PATH` (absolute from the
# caller's directory), and the binaries they run from the environment:
#   VISHWAM   the vishwam binary (default target/release/vishwam)
#   PLUGIN    the PJRT plugin (default: vishwam's discovery)
#   PYTHON    the Python with the peers' packages (default python3)
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
abs() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
VISHWAM="$(abs "${VISHWAM:-$ROOT/target/release/vishwam}")"
PLUGIN="${PLUGIN:-}"
[ -n "$PLUGIN" ] && PLUGIN="$(abs "$PLUGIN")"
PYTHON="${PYTHON:-python3}"
