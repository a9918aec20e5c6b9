"""What scripts/peer_jax.py and scripts/peer_torch.py share: the model sizes of issue 21, the
training settings of configs/gpu_h100.json (over configs/default.json), vishwam's learning-rate
schedule and parameter count, the benchmark batches and the report.

The peers train the model vishwam trains (src/model/forward.rs, params.rs, loss.rs;
src/train/optim/adamw.rs, schedule.rs):

* token embedding [V, H] (tied LM head, no biases anywhere), L pre-norm blocks, final RMSNorm;
* RMSNorm: statistics in f32, `x / sqrt(mean(x^2) + eps)` rounded to the compute dtype, then
  times the gain rounded to the compute dtype (hlo/src/nn.rs `rms_norm`), eps 1e-5;
* attention: wq [H, NH*D], wk/wv [H, KV*D], wo [NH*D, H]; grouped-query heads where query head
  n reads KV head n // (NH / KV); RoPE in the rotate-half convention (first half / second half
  of each head, frequencies theta^(-2i/D), theta 10000, cos/sin computed in f32 and rounded to
  the compute dtype); causal softmax attention scaled by 1/sqrt(D);
* SwiGLU MLP: w_down(silu(x w_gate) * (x w_up));
* loss: mean over tokens of the cross-entropy of f32 logits h @ E^T;
* AdamW: global-norm clipping to 1.0, Adam (0.9, 0.95, eps 1e-8 outside the root, bias
  corrected), decoupled weight decay 0.1 on the matrices other than the embedding, times the
  learning rate: linear warmup over 200 steps from step 1, then cosine to 0.1 x peak at step
  5000, peak 6e-4;
* f32 master weights and optimizer moments, bf16 compute (weights cast at use);
* init: normal(0, 0.02), wo and w_down normal(0, 0.02 / sqrt(2 L)), norm gains 1.

Tokens/s as `vishwam bench train` reports it: tokens per step = batch x seq, two seeded
random batches (tokens and targets uniform over the vocabulary) used alternately, warm-up
steps first (their time, compilation included, not counted), then the wall time of the timed
steps divided by their number.
"""

import argparse
import json
import math
import os
import platform
import sys
import time

# The sizes of issue 21's table (configs/gpu_h100.json with --set for 350m and 1b) and a tiny
# CPU smoke size. Every size ties the embeddings (configs/gpu_h100.json).
SIZES = {
    "124m": dict(vocab=32000, hidden=768, layers=12, heads=12, kv_heads=4, mlp=2048, seq=1024, batch=16),
    "350m": dict(vocab=32000, hidden=1024, layers=24, heads=16, kv_heads=4, mlp=2816, seq=1024, batch=8),
    "1b": dict(vocab=32000, hidden=2048, layers=16, heads=16, kv_heads=8, mlp=5632, seq=2048, batch=4),
    "tiny": dict(vocab=512, hidden=64, layers=2, heads=4, kv_heads=2, mlp=128, seq=64, batch=4),
}

# The `vishwam bench train` --set list for each size, over configs/gpu_h100.json.
VISHWAM_KEYS = [
    ("vocab", "model.vocab_size"),
    ("hidden", "model.hidden_dim"),
    ("layers", "model.num_layers"),
    ("heads", "model.num_heads"),
    ("kv_heads", "model.num_kv_heads"),
    ("mlp", "model.mlp_dim"),
    ("seq", "model.max_seq_len"),
    ("batch", "training.batch_size"),
]


def vishwam_sets(size):
    """`--set` arguments that make configs/gpu_h100.json the model of `size`."""
    out = []
    for key, name in VISHWAM_KEYS:
        out += ["--set", f"{name}={SIZES[size][key]}"]
    return out


def parser(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--size", choices=sorted(SIZES), default="124m",
                   help="model size of issue 21's table (default 124m)")
    p.add_argument("--tiny", action="store_true",
                   help="the tiny CPU smoke size: --size tiny --device cpu --data pattern, "
                        "20 timed steps after 2, learning rate 3e-3 with 5 warmup steps")
    for flag in ("vocab", "hidden", "layers", "heads", "kv_heads", "head_dim", "mlp", "seq", "batch"):
        p.add_argument("--" + flag.replace("_", "-"), dest=flag, type=int, default=None,
                       help=f"override the size's {flag}")
    p.add_argument("--steps", type=int, default=30, help="timed steps (default 30)")
    p.add_argument("--warmup", type=int, default=5,
                   help="untimed warm-up steps, compilation included (default 5)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--sync", choices=["both", "step", "end"], default="both",
                   help="timed loops: 'step' reads every step's loss back before the next "
                        "step (as vishwam bench train does), 'end' dispatches every step and "
                        "waits once at the end; 'both' (default) times one loop of each and "
                        "reports the faster as the headline")
    p.add_argument("--data", choices=["random", "zipf", "pattern"], default=None,
                   help="random: uniform tokens and targets as vishwam bench train; zipf: "
                        "token k drawn with weight 1/(k+1), as `vishwam bench train --tokens "
                        "zipf` (text-like: a few ids fill most of the batch); pattern: a "
                        "learnable repeating sequence, targets the next token (smoke tests)")
    p.add_argument("--lr", type=float, default=6e-4)
    p.add_argument("--lr-warmup", type=int, default=200)
    p.add_argument("--max-steps", type=int, default=5000)
    p.add_argument("--min-lr-ratio", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--beta1", type=float, default=0.9)
    p.add_argument("--beta2", type=float, default=0.95)
    p.add_argument("--adam-eps", type=float, default=1e-8)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--rope-theta", type=float, default=10000.0)
    p.add_argument("--norm-eps", type=float, default=1e-5)
    p.add_argument("--init-std", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--json", default=None, help="also write the figures to this file")
    return p


def resolve(args):
    """The model dimensions and run settings after --tiny and the overrides."""
    if args.tiny:
        args.size = "tiny"
        if args.device == "auto":
            args.device = "cpu"
        if args.data is None:
            args.data = "pattern"
        if args.steps == 30:
            args.steps = 20
        if args.warmup == 5:
            args.warmup = 2
        if args.lr == 6e-4:
            args.lr = 3e-3
        if args.lr_warmup == 200:
            args.lr_warmup = 5
        if args.max_steps == 5000:
            args.max_steps = 100
    if args.data is None:
        args.data = "random"
    dims = dict(SIZES[args.size])
    dims["head_dim"] = None
    for key in dims:
        if getattr(args, key) is not None:
            dims[key] = getattr(args, key)
    if dims["head_dim"] is None:
        dims["head_dim"] = dims["hidden"] // dims["heads"]
    if dims["heads"] % dims["kv_heads"]:
        sys.exit("heads must be a multiple of kv_heads")
    return dims


def describe(size, d):
    return (f"{size} ({d['hidden']} x {d['layers']}, {d['heads']} heads, kv {d['kv_heads']}, "
            f"head {d['head_dim']}, mlp {d['mlp']}, vocab {d['vocab']}, seq {d['seq']}, "
            f"batch {d['batch']})")


def param_count(d):
    """vishwam's count (src/model/params.rs, tied embeddings): embedding, final norm, and per
    block two norms, wq, wk, wv, wo, w_gate, w_up, w_down."""
    h, nh, kv, hd, f = d["hidden"], d["heads"], d["kv_heads"], d["head_dim"], d["mlp"]
    block = 2 * h + h * nh * hd + 2 * h * kv * hd + nh * hd * h + 3 * h * f
    return d["vocab"] * h + h + d["layers"] * block


def lr_at(args, t):
    """vishwam's learning rate of optimizer step t (1-based): src/train/schedule.rs lr_at."""
    peak, w = args.lr, args.lr_warmup
    floor = args.min_lr_ratio * peak
    if w > 0 and t <= w:
        return peak * t / w
    p = min((t - min(w, t)) / max(args.max_steps - w, 1), 1.0)
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * p))


def host_batches(args, d):
    """Two host batches (tokens, targets) of int32 [batch, seq], used alternately."""
    import numpy as np

    b, t, v = d["batch"], d["seq"], d["vocab"]
    out = []
    for i in range(2):
        rng = np.random.default_rng(args.seed + i)
        if args.data == "random":
            tokens = rng.integers(0, v, size=(b, t), dtype=np.int32)
            targets = rng.integers(0, v, size=(b, t), dtype=np.int32)
        elif args.data == "zipf":
            weights = 1.0 / np.arange(1, v + 1)
            p = weights / weights.sum()
            tokens = rng.choice(v, size=(b, t), p=p).astype(np.int32)
            targets = rng.choice(v, size=(b, t), p=p).astype(np.int32)
        else:
            # A fixed cycle of 16 distinct tokens: each token determines the next, so a model
            # learns it from the current token alone. Rows start at different offsets.
            cycle = np.random.default_rng(args.seed).permutation(v)[:16].astype(np.int32)
            starts = rng.integers(0, len(cycle), size=(b, 1))
            idx = (starts + np.arange(t + 1)[None, :]) % len(cycle)
            seqs = cycle[idx]
            tokens, targets = seqs[:, :-1].copy(), seqs[:, 1:].copy()
        out.append((np.ascontiguousarray(tokens), np.ascontiguousarray(targets)))
    return out


def timed_loops(args, step, wait):
    """Runs the warm-up steps, then the timed loop(s). `step(i)` runs optimizer step i
    (0-based) and returns its loss as a device value; `wait(loss)` returns it as a float (and so
    waits for the step). Returns the figures: per-step milliseconds of each loop, the warm-up
    time, and every step's loss in order."""
    losses = []
    i = 0
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        losses.append(wait(step(i)))
        i += 1
    warmup_s = time.perf_counter() - t0
    loops = {}
    modes = ["step", "end"] if args.sync == "both" else [args.sync]
    for mode in modes:
        t0 = time.perf_counter()
        pending = []
        for _ in range(args.steps):
            loss = step(i)
            i += 1
            if mode == "step":
                losses.append(wait(loss))
            else:
                pending.append(loss)
        if pending:
            last = wait(pending[-1])
            elapsed = time.perf_counter() - t0
            losses.extend(wait(x) for x in pending[:-1])
            losses.append(last)
        else:
            elapsed = time.perf_counter() - t0
        loops[mode] = elapsed / max(args.steps, 1) * 1e3
    return loops, warmup_s, losses


def report(framework, version, device, args, d, counted, loops, warmup_s, losses, extra):
    """Prints the one-line summary and the JSON of the figures (the JSON is the last line)."""
    tokens = d["batch"] * d["seq"]
    best_mode = min(loops, key=loops.get)
    ms = loops[best_mode]
    rate = tokens / (ms / 1e3)
    expected = param_count(d)
    figures = {
        "framework": framework,
        "version": version,
        "device": device,
        "size": args.size,
        "dims": d,
        "params": counted,
        "params_vishwam_formula": expected,
        "params_match": counted == expected,
        "tokens_per_step": tokens,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "warmup_s": round(warmup_s, 3),
        "step_ms": round(ms, 3),
        "tokens_per_s": round(rate, 1),
        "headline_loop": best_mode,
        "loops_ms": {k: round(v, 3) for k, v in loops.items()},
        "loops_tokens_per_s": {k: round(tokens / (v / 1e3), 1) for k, v in loops.items()},
        "losses": [round(x, 5) for x in losses],
        "ln_vocab": round(math.log(d["vocab"]), 5),
        "python": platform.python_version(),
    }
    figures.update(extra)
    other = "".join(f"; sync-{k} {v:.2f} ms" for k, v in loops.items() if k != best_mode)
    print(f"{framework} {version} on {device}: {describe(args.size, d)}, {counted:,} params "
          f"({'=' if counted == expected else '!='} vishwam's {expected:,}); warm-up "
          f"{args.warmup} steps {warmup_s:.1f}s; step {ms:.2f} ms (sync-{best_mode}{other}), "
          f"{rate:,.0f} tok/s; loss {losses[0]:.4f} -> {losses[-1]:.4f} (ln V = {math.log(d['vocab']):.4f})")
    line = json.dumps(figures)
    if args.json:
        with open(args.json, "w") as f:
            f.write(line + "\n")
    print(line)
    sys.stdout.flush()


if __name__ == "__main__":
    # `python3 scripts/peer_common.py --vishwam-sets SIZE`: the --set list of that size, one
    # argument a line (for scripts/bench_peers.sh).
    if len(sys.argv) == 3 and sys.argv[1] == "--vishwam-sets":
        print("\n".join(vishwam_sets(sys.argv[2])))
    elif len(sys.argv) == 3 and sys.argv[1] == "--describe":
        d = dict(SIZES[sys.argv[2]])
        d["head_dim"] = d["hidden"] // d["heads"]
        print(describe(sys.argv[2], d))
    else:
        sys.exit("usage: peer_common.py --vishwam-sets SIZE | --describe SIZE")
