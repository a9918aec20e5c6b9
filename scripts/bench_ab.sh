#!/usr/bin/env bash
# A change's effect on the training step, as issue 21 asks for it: the binary before (A) and
# the binary after (B) run `vishwam bench train` alternately on the same machine, A B A B ...,
# and the ratio of their median steps is printed.
#
#   scripts/bench_ab.sh A_BINARY B_BINARY [bench train arguments ...]
#
# e.g. on one GPU:
#   ROUNDS=2 scripts/bench_ab.sh /tmp/vishwam-before target/release/vishwam \
#     --config configs/gpu_h100.json --platform cuda --plugin $P --steps 30 --tokens zipf
#
# Environment:
#   ROUNDS   alternations (default 2: A B A B)
#   A_EXTRA, B_EXTRA  arguments for one side only (e.g. B_EXTRA=--pipeline)
#   OUT      directory for each run's log (default: a new temporary directory)
#
# Each run's log keeps bench train's whole output; the summary lists every run's step time
# (wall, and in the program) so that noise between rounds is visible beside the ratio.
set -uo pipefail

if [ $# -lt 2 ]; then
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
A=$1
B=$2
shift 2
for bin in "$A" "$B"; do
    [ -x "$bin" ] || { echo "not an executable: $bin" >&2; exit 2; }
done
ROUNDS="${ROUNDS:-2}"
OUT="${OUT:-$(mktemp -d /tmp/bench_ab.XXXXXX)}"
mkdir -p "$OUT"

# Prints "WALL PROGRAM" (ms) of one bench train run, or fails with its last lines.
run() {
    local label=$1 bin=$2 log="$OUT/$1.log"
    shift 2
    if ! "$bin" bench train "$@" >"$log" 2>&1; then
        echo "$label failed; the end of $log:" >&2
        tail -5 "$log" >&2
        return 1
    fi
    local line
    line=$(grep -E '^xla ' "$log" | tail -1)
    [ -n "$line" ] || { echo "$label: no 'xla' result line in $log" >&2; return 1; }
    # A pipelined run has no time in the program of its own (its steps overlap).
    sed -E -e 's/.*step ([0-9.]+) ms \(([0-9.]+) ms in the program\).*/\1 \2/' \
        -e 's/.*step ([0-9.]+) ms \(pipelined\).*/\1 pipelined/' <<<"$line"
}

median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

declare -a a_steps b_steps
for round in $(seq 1 "$ROUNDS"); do
    for side in A B; do
        bin=$A
        extra=${A_EXTRA:-}
        [ "$side" = B ] && bin=$B && extra=${B_EXTRA:-}
        # shellcheck disable=SC2086 # the extra arguments are words
        result=$(run "$side.r$round" "$bin" "$@" $extra) || exit 1
        read -r wall program <<<"$result"
        case $program in
        pipelined) printf '%s round %s: step %s ms (pipelined)\n' "$side" "$round" "$wall" ;;
        *) printf '%s round %s: step %s ms (%s ms in the program)\n' "$side" "$round" "$wall" "$program" ;;
        esac
        if [ "$side" = A ]; then a_steps+=("$wall"); else b_steps+=("$wall"); fi
    done
done

a_median=$(printf '%s\n' "${a_steps[@]}" | median)
b_median=$(printf '%s\n' "${b_steps[@]}" | median)
awk -v a="$a_median" -v b="$b_median" 'BEGIN {
    printf "median step: A %.2f ms, B %.2f ms; B is %.3fx the speed of A\n", a, b, a / b
}'
echo "logs: $OUT"
