#!/usr/bin/env bash
# The waiting loop against the pipelined loop (steps launched ahead, batch and metrics at
# fixed addresses) on one GPU, as issue 21's deliverable 2 asks: `vishwam bench train
# --compare-loops` on the 124M model of configs/gpu_h100.json with text-like (Zipf) token ids,
# in bf16 and with FP8, and `vishwam verify` on the same platform beside them.
#
#   VISHWAM=... PLUGIN=... scripts/compare_loops.sh [bench train arguments ...]
#
# Environment (see paths.sh): VISHWAM, PLUGIN; PLATFORM (default cuda), ROUNDS (default 3),
# STEPS (steps per loop and round, default 40), OUT (directory for the logs, default a new
# temporary directory). Extra arguments go to both bench runs (e.g. --set model.num_layers=24).
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/paths.sh"
PLATFORM="${PLATFORM:-cuda}"
ROUNDS="${ROUNDS:-3}"
STEPS="${STEPS:-40}"
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
plugin=()
[ -n "$PLUGIN" ] && plugin=(--plugin "$PLUGIN")

compare() { # label [arguments ...]
    local label=$1
    shift
    "$VISHWAM" bench train --config "$ROOT/configs/gpu_h100.json" --platform "$PLATFORM" \
        "${plugin[@]}" --steps "$STEPS" --tokens zipf --compare-loops --rounds "$ROUNDS" "$@" \
        >"$OUT/$label.log" 2>&1
    local rc=$?
    echo "== $label (exit $rc)"
    grep -E '^(round|loops|xla)' "$OUT/$label.log"
}

compare bf16 "$@"
"$VISHWAM" verify --platform "$PLATFORM" "${plugin[@]}" >"$OUT/verify.log" 2>&1
echo "== verify (exit $?)"
tail -n 2 "$OUT/verify.log"
compare fp8 --set optimization.use_fp8=true "$@"
echo "logs in $OUT"
