#!/usr/bin/env bash
# Issue 21's comparison on one GPU: for each size, `vishwam bench train`, then the JAX peer
# (scripts/peer_jax.py, cuDNN attention), then the torch.compile peer (scripts/peer_torch.py,
# SDPA flash attention), one after another, and a table with vishwam / best peer.
#
#   VISHWAM=.devbin/vishwam \
#   PLUGIN=/opt/torch/.venv/lib/python3.12/site-packages/jax_plugins/xla_cuda13/xla_cuda_plugin.so \
#   PYTHON=/opt/torch/.venv/bin/python \
#   scripts/bench_peers.sh 124m            # sizes: 124m 350m 1b (default 124m)
#
# Environment (all optional):
#   VISHWAM       the vishwam binary (default target/release/vishwam)
#   PLUGIN        PJRT plugin passed as --plugin (default: vishwam's own discovery)
#   PYTHON        a Python with jax (and optax) and torch (default python3)
#   CONFIG        vishwam config (default configs/gpu_h100.json); sizes are --set over it
#   STEPS         timed steps of every run (default 30)
#   WARMUP        the peers' untimed warm-up steps, compilation included (default 5;
#                 vishwam bench train always runs 2 after compiling)
#   ROUNDS        rounds of the three runs in turn (default 1); the table keeps each one's
#                 fastest round and prints every round's figure in the log
#   PEERS         which peers run (default "jax torch")
#   TORCH_MODE    torch.compile mode (default "default"; e.g. max-autotune)
#   TOKENS        uniform (default) or zipf: the token ids of every run (vishwam's --tokens,
#                 the peers' --data random|zipf); zipf is text-like, a few ids fill the batch
#   VISHWAM_ARGS, JAX_ARGS, TORCH_ARGS   extra arguments of each run (word-split), e.g.
#                 VISHWAM_ARGS=--pipeline to launch steps ahead as `vishwam train` does
#   OUT           folder for the logs and JSON (default: a new folder under /tmp)
#   PLATFORM      cuda (default) or cpu: `PLATFORM=cpu scripts/bench_peers.sh tiny` checks the
#                 whole script on a CPU in a few minutes (the tiny size: 64 x 2, vocab 512)
# The 124M comparison takes about 3 to 4 minutes of GPU time, most of it compilation.
set -uo pipefail

. "$(dirname "$0")/paths.sh"
CONFIG="$(abs "${CONFIG:-configs/gpu_h100.json}")"
[ -f "$CONFIG" ] || CONFIG="$ROOT/configs/gpu_h100.json"
STEPS="${STEPS:-30}"
WARMUP="${WARMUP:-5}"
ROUNDS="${ROUNDS:-1}"
PEERS="${PEERS:-jax torch}"
PLATFORM="${PLATFORM:-cuda}"
TORCH_MODE="${TORCH_MODE:-default}"
TOKENS="${TOKENS:-uniform}"
case "$TOKENS" in
    uniform) PEER_DATA=random ;;
    zipf) PEER_DATA=zipf ;;
    *) echo "TOKENS must be uniform or zipf (got $TOKENS)" >&2; exit 2 ;;
esac
OUT="${OUT:-$(mktemp -d /tmp/bench_peers.XXXXXX)}"
mkdir -p "$OUT"
SIZES=("$@")
[ ${#SIZES[@]} -eq 0 ] && SIZES=(124m)

[ -x "$VISHWAM" ] || { echo "no vishwam binary at $VISHWAM (set VISHWAM)" >&2; exit 2; }
cd "$ROOT"
echo "vishwam: $VISHWAM ($("$VISHWAM" --version 2>/dev/null | head -1)); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "plugin: ${PLUGIN:-discovered by vishwam}; python: $PYTHON; config: $CONFIG; steps $STEPS; logs: $OUT"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$PYTHON" - <<'EOF' || true
import importlib
for m in ("jax", "jaxlib", "optax", "torch"):
    try:
        print(f"{m} {importlib.import_module(m).__version__}", end="; ")
    except Exception as e:
        print(f"{m} missing ({type(e).__name__})", end="; ")
print()
EOF

run_vishwam() { # size round
    local log="$OUT/$1.r$2.vishwam.log" sets
    mapfile -t sets < <("$PYTHON" "$HERE/peer_common.py" --vishwam-sets "$1")
    local plugin=()
    [ -n "$PLUGIN" ] && plugin=(--plugin "$PLUGIN")
    echo "== $1 round $2: vishwam bench train"
    # shellcheck disable=SC2086
    if "$VISHWAM" bench train --config "$CONFIG" --platform "$PLATFORM" --steps "$STEPS" --tokens "$TOKENS" "${plugin[@]}" \
        "${sets[@]}" ${VISHWAM_ARGS:-} >"$log" 2>&1; then
        grep -E '^(model|xla) ' "$log"
    else
        echo "   failed (exit $?): tail of $log"; tail -5 "$log"
    fi
}

run_peer() { # peer size round
    local log="$OUT/$2.r$3.$1.log" json="$OUT/$2.r$3.$1.json" extra
    rm -f "$json"
    case "$1" in
        jax) extra="${JAX_ARGS:-}" ;;
        torch) extra="--mode $TORCH_MODE ${TORCH_ARGS:-}" ;;
    esac
    echo "== $2 round $3: $1"
    # shellcheck disable=SC2086
    if "$PYTHON" "$HERE/peer_$1.py" --size "$2" --device "$PLATFORM" --steps "$STEPS" --warmup "$WARMUP" \
        --data "$PEER_DATA" --json "$json" $extra >"$log" 2>&1; then
        tail -2 "$log" | head -1
    else
        echo "   failed (exit $?): tail of $log"; tail -5 "$log"
    fi
}

for size in "${SIZES[@]}"; do
    for round in $(seq 1 "$ROUNDS"); do
        run_vishwam "$size" "$round"
        for peer in $PEERS; do
            run_peer "$peer" "$size" "$round"
        done
    done
done

"$PYTHON" - "$OUT" "${SIZES[@]}" <<'EOF'
import glob, json, os, re, sys
out, sizes = sys.argv[1], sys.argv[2:]
line_re = re.compile(r"step ([\d.]+) ms \((?:([\d.]+) ms in the program|pipelined)\); (\d+) tokens/s")

def best_vishwam(size):
    best = None
    for path in sorted(glob.glob(f"{out}/{size}.r*.vishwam.log")):
        for line in open(path, errors="replace"):
            m = line_re.search(line) if line.startswith("xla ") else None
            if m:
                program = f"{float(m[2]):.1f} in the program" if m[2] else "pipelined"
                fig = dict(ms=float(m[1]), program=program, rate=float(m[3]))
                if best is None or fig["rate"] > best["rate"]:
                    best = fig
    return best

def best_peer(size, peer):
    best = None
    for path in sorted(glob.glob(f"{out}/{size}.r*.{peer}.json")):
        try:
            fig = json.loads(open(path).read().strip().splitlines()[-1])
        except (ValueError, IndexError):
            continue
        if best is None or fig["tokens_per_s"] > best["tokens_per_s"]:
            best = fig
    return best

print()
print("| model | vishwam | JAX (cuDNN) | torch.compile | vishwam / best |")
print("|---|---|---|---|---|")
notes = []
for size in sizes:
    v = best_vishwam(size)
    peers = {p: best_peer(size, p) for p in ("jax", "torch")}
    cells = [size]
    cells.append(f"{v['rate']:,.0f} tok/s ({v['ms']:.1f} ms; {v['program']})" if v else "failed")
    for p in ("jax", "torch"):
        f = peers[p]
        cells.append(f"{f['tokens_per_s']:,.0f} ({f['step_ms']:.1f} ms)" if f else "-")
        if f:
            loops = ", ".join(f"sync-{k} {ms:.2f} ms" for k, ms in f["loops_ms"].items())
            notes.append(f"{size} {p} {f['version']} on {f['device']}: {loops}; params {f['params']:,} "
                         f"({'matches' if f['params_match'] else 'differs from'} vishwam's count); "
                         f"loss {f['losses'][0]:.3f} -> {f['losses'][-1]:.3f}")
    rates = [f["tokens_per_s"] for f in peers.values() if f]
    cells.append(f"{v['rate'] / max(rates):.3f}x" if v and rates else "-")
    print("| " + " | ".join(cells) + " |")
print()
print("Each peer's figure is the faster of its two timed loops (sync-step reads every step's loss")
print("before the next, as vishwam bench train does; sync-end waits once after all steps):")
for n in notes:
    print("  " + n)
print(f"logs: {out}")
EOF
