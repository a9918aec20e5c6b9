#!/usr/bin/env python3
"""The JAX peer of `vishwam bench train` (issue 21): the same Llama-style model and AdamW step
(see peer_common.py for what "the same" covers), one jitted train step with the parameters and
optimizer state donated, cuDNN flash attention on GPU (jax.nn.dot_product_attention,
implementation="cudnn"; "xla" on the CPU), f32 master weights cast to bf16 at use, optax's AdamW
when optax is installed (else the same AdamW written out here).

  python3 scripts/peer_jax.py --size 124m            # on the GPU
  python3 scripts/peer_jax.py --tiny                 # CPU smoke test

Prints one summary line, then the JSON of the figures as the last line.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_common as pc  # noqa: E402


def main():
    p = pc.parser(__doc__.splitlines()[0])
    p.add_argument("--optimizer", choices=["auto", "optax", "manual"], default="auto",
                   help="optax's adamw chain (auto: when installed) or the hand-written AdamW")
    p.add_argument("--trace", default=None,
                   help="after the timed loops, write a device trace of --trace-steps steps here")
    p.add_argument("--trace-steps", type=int, default=3)
    p.add_argument("--attention", choices=["auto", "cudnn", "xla"], default="auto",
                   help="jax.nn.dot_product_attention implementation (auto: cudnn on GPU)")
    args = p.parse_args()
    d = pc.resolve(args)
    if args.device == "cpu":
        os.environ["JAX_PLATFORMS"] = "cpu"

    import jax
    import jax.numpy as jnp
    import numpy as np

    dev = jax.devices()[0]
    on_gpu = dev.platform == "gpu"
    if args.device == "cuda" and not on_gpu:
        sys.exit(f"asked for cuda, JAX found {dev.platform}")
    attention_impl = args.attention if args.attention != "auto" else ("cudnn" if on_gpu else "xla")
    optax = None
    if args.optimizer in ("auto", "optax"):
        try:
            import optax  # noqa: F811
        except ImportError:
            if args.optimizer == "optax":
                raise
    f32, cdt = jnp.float32, jnp.bfloat16
    V, H, L = d["vocab"], d["hidden"], d["layers"]
    NH, KV, D, F = d["heads"], d["kv_heads"], d["head_dim"], d["mlp"]
    B, T = d["batch"], d["seq"]

    # ---- parameters (src/model/params.rs) ----
    def init_params(key):
        std = args.init_std
        out_std = std / (2.0 * L) ** 0.5
        keys = iter(jax.random.split(key, 1 + 7 * L))

        def normal(shape, s):
            return jax.random.normal(next(keys), shape, f32) * s

        params = {"embed": normal((V, H), std), "final_norm": jnp.ones((H,), f32), "layers": []}
        for _ in range(L):
            params["layers"].append({
                "attn_norm": jnp.ones((H,), f32),
                "wq": normal((H, NH * D), std),
                "wk": normal((H, KV * D), std),
                "wv": normal((H, KV * D), std),
                "wo": normal((NH * D, H), out_std),
                "mlp_norm": jnp.ones((H,), f32),
                "w_gate": normal((H, F), std),
                "w_up": normal((H, F), std),
                "w_down": normal((F, H), out_std),
            })
        return params

    # Weight decay on the matrices other than the embedding (ParamSpec::decay).
    def decay_mask(params):
        return {
            "embed": False,
            "final_norm": False,
            "layers": [{k: v.ndim >= 2 for k, v in layer.items()} for layer in params["layers"]],
        }

    # ---- forward (src/model/forward.rs, hlo/src/nn.rs) ----
    def rms_norm(x, gain):
        xf = x.astype(f32)
        normed = xf * jax.lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + args.norm_eps)
        return normed.astype(x.dtype) * gain.astype(x.dtype)

    def rope_tables():
        half = D // 2
        inv_freq = jnp.exp(jnp.arange(half, dtype=f32) * (-2.0 * np.log(args.rope_theta) / D))
        angles = jnp.arange(T, dtype=f32)[:, None] * inv_freq  # [T, D/2]
        return jnp.cos(angles).astype(cdt)[:, None, :], jnp.sin(angles).astype(cdt)[:, None, :]

    def rope(x, cos, sin):  # x [B, T, N, D], rotate-half
        x1, x2 = x[..., : D // 2], x[..., D // 2:]
        return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)

    def block(h, p, cos, sin):
        x = rms_norm(h, p["attn_norm"])
        q = (x @ p["wq"].astype(cdt)).reshape(B, T, NH, D)
        k = (x @ p["wk"].astype(cdt)).reshape(B, T, KV, D)
        v = (x @ p["wv"].astype(cdt)).reshape(B, T, KV, D)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        o = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=attention_impl)
        h = h + o.reshape(B, T, NH * D) @ p["wo"].astype(cdt)
        x = rms_norm(h, p["mlp_norm"])
        gated = jax.nn.silu(x @ p["w_gate"].astype(cdt)) * (x @ p["w_up"].astype(cdt))
        return h + gated @ p["w_down"].astype(cdt)

    def loss_fn(params, tokens, targets):
        table = params["embed"].astype(cdt)
        h = jnp.take(table, tokens, axis=0)
        cos, sin = rope_tables()
        for p in params["layers"]:
            h = block(h, p, cos, sin)
        h = rms_norm(h, params["final_norm"])
        logits = jnp.einsum("bth,vh->btv", h, table, preferred_element_type=f32)
        lse = jax.nn.logsumexp(logits, axis=-1)
        picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
        return jnp.mean(lse - picked)

    # ---- AdamW (src/train/optim/adamw.rs, src/train/schedule.rs) ----
    def schedule(t):  # t: 1-based step, traced
        peak, w = args.lr, float(args.lr_warmup)
        floor = args.min_lr_ratio * peak
        prog = jnp.clip((t - w) / max(args.max_steps - w, 1.0), 0.0, 1.0)
        decayed = (jnp.cos(prog * np.pi) + 1.0) * (0.5 * (peak - floor)) + floor
        return jnp.where(t <= w, t * (peak / w), decayed) if w > 0 else decayed

    params = init_params(jax.random.PRNGKey(args.seed))
    mask = decay_mask(params)
    if optax is not None:
        optimizer_name = f"optax {optax.__version__}"
        tx = optax.chain(
            optax.clip_by_global_norm(args.max_grad_norm),
            optax.adamw(
                # optax counts updates from 0, vishwam's schedule from step 1.
                learning_rate=lambda count: schedule(count.astype(f32) + 1.0),
                b1=args.beta1, b2=args.beta2, eps=args.adam_eps,
                weight_decay=args.weight_decay, mask=mask,
            ),
        )
        opt_state = tx.init(params)

        def update(grads, opt_state, params):
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state
    else:
        optimizer_name = "hand-written AdamW"
        opt_state = {
            "t": jnp.zeros((), jnp.int32),
            "m": jax.tree.map(jnp.zeros_like, params),
            "v": jax.tree.map(jnp.zeros_like, params),
        }
        b1, b2 = args.beta1, args.beta2

        def update(grads, opt_state, params):
            t = opt_state["t"] + 1
            tf = t.astype(f32)
            leaves = jax.tree.leaves(grads)
            norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in leaves))
            clip = jnp.minimum(args.max_grad_norm / (norm + 1e-6), 1.0)
            lr = schedule(tf)
            bc1, bc2 = 1.0 - b1 ** tf, 1.0 - b2 ** tf

            def one(p, g, m, v, decay):
                g = g * clip
                m = m * b1 + g * (1.0 - b1)
                v = v * b2 + jnp.square(g) * (1.0 - b2)
                u = (m / bc1) / (jnp.sqrt(v / bc2) + args.adam_eps)
                if decay:
                    u = u + p * args.weight_decay
                return p - u * lr, m, v

            out = jax.tree.map(one, params, grads, opt_state["m"], opt_state["v"], mask)
            is_triple = lambda x: isinstance(x, tuple)  # noqa: E731
            new_p = jax.tree.map(lambda x: x[0], out, is_leaf=is_triple)
            new_m = jax.tree.map(lambda x: x[1], out, is_leaf=is_triple)
            new_v = jax.tree.map(lambda x: x[2], out, is_leaf=is_triple)
            return new_p, {"t": t, "m": new_m, "v": new_v}

    def train_step(params, opt_state, tokens, targets):
        loss, grads = jax.value_and_grad(loss_fn)(params, tokens, targets)
        params, opt_state = update(grads, opt_state, params)
        return params, opt_state, loss

    step_fn = jax.jit(train_step, donate_argnums=(0, 1))
    counted = sum(int(x.size) for x in jax.tree.leaves(params))
    batches = pc.host_batches(args, d)
    state = {"params": params, "opt": opt_state}

    def step(i):
        tokens, targets = batches[i % 2]
        tokens, targets = jax.device_put(tokens, dev), jax.device_put(targets, dev)
        state["params"], state["opt"], loss = step_fn(state["params"], state["opt"], tokens, targets)
        return loss

    loops, warmup_s, losses = pc.timed_loops(args, step, lambda x: float(x))
    if args.trace:
        # A device trace of --trace-steps more steps, after the timed loops (which it does not
        # disturb), for `vishwam bench kernels --trace DIR/plugins/profile/*/*.xplane.pb`.
        jax.block_until_ready(state["params"])
        jax.profiler.start_trace(args.trace)
        for k in range(args.trace_steps):
            float(step(len(losses) + k))
        jax.profiler.stop_trace()
        print(f"trace of {args.trace_steps} steps written under {args.trace}")
    pc.report(
        "jax", jax.__version__, f"{dev.device_kind} ({dev.platform})", args, d, counted,
        loops, warmup_s, losses,
        {"attention": attention_impl, "optimizer": optimizer_name,
         "jaxlib": getattr(__import__("jaxlib"), "__version__", "?"),
         "xla_flags": os.environ.get("XLA_FLAGS", "")},
    )


if __name__ == "__main__":
    main()
