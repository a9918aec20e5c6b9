#!/usr/bin/env bash
# Multi-GPU runs on one host (issue 24): scaling of one process driving N GPUs, one process per
# GPU through the multi-process bootstrap, a checkpoint resharded from N processes to N/2, a
# killed process, and `vishwam verify` on the N-device mesh.
#
#   VISHWAM=.devbin/vishwam PLUGIN=$P PYTHON=/opt/torch/.venv/bin/python scripts/multi_gpu.sh
#
# Environment (all optional):
#   VISHWAM   the vishwam binary (default target/release/vishwam)
#   PLUGIN    PJRT plugin passed as --plugin
#   PYTHON    a python3 (for the size table in peer_common.py and the loss comparison)
#   PLATFORM  cuda (default) or cpu (`PLATFORM=cpu SIZE=tiny GPUS=2` checks the script; the
#             multi-process parts then stop at the CPU plugin's cross-process error)
#   SIZE      124m (default), 350m, 1b or tiny: the model of scripts/peer_common.py
#   GPUS      device counts to run (default: 2 4 8, those the machine has)
#   LAYOUTS   dp fsdp tp (default all): data-parallel; fsdp with shard_weights; 2-way tensor
#             parallel x data (hybrid; with processes, one process per pair of GPUs, since a
#             process feeds whole batch shards)
#   STEPS     timed steps of `bench train` (default 30); the training runs take 20
#   PARTS     which parts run (default "scaling processes verify")
#   OUT       folder for the logs (default: a new folder under /tmp)
# Each figure is printed with the device name and count; per-GPU tokens/s is against the
# one-device run of the same binary in the same call.
set -uo pipefail

. "$(dirname "$0")/paths.sh"
PLATFORM="${PLATFORM:-cuda}"
SIZE="${SIZE:-124m}"
STEPS="${STEPS:-30}"
LAYOUTS="${LAYOUTS:-dp fsdp tp}"
PARTS="${PARTS:-scaling processes verify}"
OUT="${OUT:-$(mktemp -d /tmp/multi_gpu.XXXXXX)}"
mkdir -p "$OUT"
cd "$ROOT"

if [ -z "${GPUS:-}" ]; then
    have=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | wc -l)
    GPUS=""
    for n in 2 4 8; do [ "$n" -le "$have" ] && GPUS="$GPUS $n"; done
    [ -n "$GPUS" ] || { echo "fewer than 2 GPUs visible (set GPUS to override)" >&2; exit 2; }
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader
echo "vishwam: $VISHWAM; platform $PLATFORM; size $SIZE; device counts:$GPUS; logs: $OUT"

mapfile -t SIZE_SETS < <("$PYTHON" "$HERE/peer_common.py" --vishwam-sets "$SIZE")
COMMON=(--config configs/gpu_h100.json --platform "$PLATFORM")
[ -n "$PLUGIN" ] && COMMON+=(--plugin "$PLUGIN")
COMMON+=("${SIZE_SETS[@]}")

# The --set list of a layout on n devices (the per-shard batch stays, so the global batch
# grows with the number of batch shards).
layout_sets() { # layout n
    case "$1" in
        dp) echo "--set tpu.device_strategy=\"data_parallel\"" ;;
        fsdp) echo "--set tpu.device_strategy=\"fsdp\" --set optimization.shard_weights=true --set tpu.mesh_shape={\"fsdp\":$2}" ;;
        tp) echo "--set tpu.device_strategy=\"hybrid\" --set tpu.mesh_shape={\"data\":$(($2 / 2)),\"model\":2}" ;;
        *) echo "unknown layout $1 (dp, fsdp, tp)" >&2; return 1 ;;
    esac
}

rate_of() { grep -E '^xla ' "$1" | grep -oE '[0-9]+ tokens/s' | head -1 | cut -d' ' -f1; }

if [[ " $PARTS " == *" scaling "* ]]; then
    echo "== 1. one process driving n devices: bench train, tokens/s per device against 1 device"
    "$VISHWAM" bench train "${COMMON[@]}" --devices 1 --steps "$STEPS" >"$OUT/bench_1.log" 2>&1
    base=$(rate_of "$OUT/bench_1.log")
    echo "1 device: ${base:-failed} tokens/s ($(grep -E '^xla ' "$OUT/bench_1.log" | cut -d: -f1))"
    for n in $GPUS; do
        for layout in $LAYOUTS; do
            log="$OUT/bench_${n}_$layout.log"
            # shellcheck disable=SC2046
            "$VISHWAM" bench train "${COMMON[@]}" --devices "$n" --steps "$STEPS" $(layout_sets "$layout" "$n") >"$log" 2>&1
            rate=$(rate_of "$log")
            if [ -n "$rate" ] && [ -n "$base" ]; then
                "$PYTHON" -c "r,b,n=$rate,$base,$n; print(f'$n devices $layout: {r} tokens/s, {r/n:.0f} per device = {r/n/b*100:.1f}% of 1 device')"
            else
                echo "$n devices $layout: failed (tail of $log)"; tail -3 "$log"
            fi
        done
    done
fi

# 20 steps of training, losses logged every step and a checkpoint at step 10.
TRAIN_SETS=(--no-progress --set training.max_steps=20 --set logging.log_every=1 --set logging.save_every=10
    --set logging.eval_every=0 --set logging.keep_checkpoints=3)
losses() { grep -o '"loss":[^,}]*' "$1/metrics.jsonl" | cut -d: -f2; }
compare_losses() { # label dirA dirB [first_step]
    "$PYTHON" - "$@" <<'EOF'
import json, sys
label, a, b = sys.argv[1:4]
def read(d):
    out = {}
    for line in open(f"{d}/metrics.jsonl"):
        r = json.loads(line)
        if "loss" in r and "step" in r:
            out[r["step"]] = r["loss"]
    return out
x, y = read(a), read(b)
common = sorted(set(x) & set(y))
if not common:
    print(f"{label}: no common steps"); sys.exit()
worst = max(abs(x[s] - y[s]) / max(abs(x[s]), 1e-30) for s in common)
same = all(x[s] == y[s] for s in common)
print(f"{label}: steps {common[0]}..{common[-1]}: " + ("bitwise equal" if same else f"largest relative difference {worst:.2e}"))
EOF
}
job() { # n_processes devices_per_process port output_dir [extra...]
    local np=$1 per=$2 port=$3 dir=$4; shift 4
    local pids=() r first devs
    for ((r = 0; r < np; r++)); do
        first=$((r * per)); devs=$first
        for ((d = 1; d < per; d++)); do devs="$devs,$((first + d))"; done
        local visible=()
        [ "$PLATFORM" = cuda ] && visible=(--visible-devices "$devs")
        # shellcheck disable=SC2046
        "$VISHWAM" train "${COMMON[@]}" "${TRAIN_SETS[@]}" --devices "$per" "${visible[@]}" \
            --coordinator "127.0.0.1:$port" --num-processes "$np" --process-id "$r" \
            --set logging.output_dir=\""$dir"\" "$@" >"$dir.p$r.log" 2>&1 &
        pids+=($!)
    done
    local rc=0
    for p in "${pids[@]}"; do wait "$p" || rc=$?; done
    return $rc
}

if [[ " $PARTS " == *" processes "* ]]; then
    echo "== 2. one process per device against one process driving them all (20 steps)"
    port=29500
    for n in $GPUS; do
        for layout in $LAYOUTS; do
            sp="$OUT/sp_${n}_$layout"; mp="$OUT/mp_${n}_$layout"
            # shellcheck disable=SC2046
            "$VISHWAM" train "${COMMON[@]}" "${TRAIN_SETS[@]}" --devices "$n" $(layout_sets "$layout" "$n") \
                --set logging.output_dir=\""$sp"\" >"$sp.log" 2>&1
            echo "$n devices $layout, one process: rc=$? $(grep -h '^trained' "$sp.log")"
            port=$((port + 1))
            # A process feeds whole batch shards, so under tp each process holds one data
            # shard's pair of model shards: n/2 processes of 2 devices.
            np=$n; per=1
            [ "$layout" = tp ] && { np=$((n / 2)); per=2; }
            # shellcheck disable=SC2046
            job "$np" "$per" "$port" "$mp" $(layout_sets "$layout" "$n")
            echo "$n devices $layout, $np processes: rc=$? $(grep -h '^trained' "$mp.p0.log") $(grep -h '^error' "$mp.p0.log" | head -1)"
            [ -f "$mp/metrics.jsonl" ] && [ -f "$sp/metrics.jsonl" ] && compare_losses "losses $n x $layout" "$sp" "$mp"
            if [ "$n" -ge 4 ] && [ "$layout" != tp ] && [ -d "$mp/checkpoints/step_00000010" ]; then
                # Written by n processes, resumed by n/2 processes of 2 devices each.
                rs="$OUT/rs_${n}_$layout"; mkdir -p "$rs"; cp -r "$mp/checkpoints" "$rs/"
                rm -rf "$rs/checkpoints/step_00000020"; cp "$mp/metrics.jsonl" "$rs/" 2>/dev/null
                port=$((port + 1))
                # shellcheck disable=SC2046
                job $((n / 2)) 2 "$port" "$rs" --resume $(layout_sets "$layout" "$n")
                echo "  resumed by $((n / 2)) processes: rc=$? $(grep -h 'resumed from' "$rs.p0.log" | head -1 | cut -c1-160)"
                compare_losses "  losses after the reshard" "$mp" "$rs"
            fi
        done
    done
    n=$(echo $GPUS | awk '{print $1}')
    kill_dir="$OUT/kill_$n"; port=$((port + 1))
    job "$n" 1 "$port" "$kill_dir" --set training.max_steps=100000 --heartbeat-timeout 10 &
    sleep 60
    victim=$(pgrep -f "process-id 1 .*$kill_dir" | head -1)
    t0=$(date +%s)
    [ -n "$victim" ] && kill -9 "$victim"
    wait
    echo "killed process 1 of $n after 60 s: the others ended $(( $(date +%s) - t0 )) s later; process 0 said: $(grep -h -i 'error' "$kill_dir.p0.log" | head -1 | cut -c1-200)"
fi

if [[ " $PARTS " == *" verify "* ]]; then
    echo "== 3. verify on the n-device mesh"
    for n in $GPUS; do
        "$VISHWAM" verify --platform "$PLATFORM" ${PLUGIN:+--plugin "$PLUGIN"} --devices "$n" >"$OUT/verify_$n.log" 2>&1
        echo "$n devices: rc=$? $(tail -1 "$OUT/verify_$n.log")"
    done
fi
echo "logs: $OUT"
