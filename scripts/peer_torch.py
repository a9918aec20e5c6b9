#!/usr/bin/env python3
"""The PyTorch peer of `vishwam bench train` (issue 21): the same Llama-style model and AdamW
step (see peer_common.py for what "the same" covers), the model and loss under torch.compile
(default mode; --mode max-autotune and the others on request), SDPA flash attention
(F.scaled_dot_product_attention, is_causal=True, grouped-query heads through enable_gqa or,
where that cannot run, repeat_interleave), bf16 autocast over f32 master weights,
clip_grad_norm_ (foreach) and torch.optim.AdamW(fused=True) on CUDA.

  python3 scripts/peer_torch.py --size 124m            # on the GPU
  python3 scripts/peer_torch.py --tiny                 # CPU smoke test

Prints one summary line, then the JSON of the figures as the last line.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_common as pc  # noqa: E402


def main():
    p = pc.parser(__doc__.splitlines()[0])
    p.add_argument("--mode", default="default",
                   help="torch.compile mode: default, max-autotune, max-autotune-no-cudagraphs, "
                        "reduce-overhead; 'eager' runs without torch.compile")
    p.add_argument("--sdpa", choices=["flash", "cudnn", "efficient", "any"], default="flash",
                   help="the only SDPA backend allowed on CUDA (default flash; any: torch picks)")
    p.add_argument("--gqa", choices=["auto", "native", "repeat"], default="auto",
                   help="grouped-query heads: SDPA's enable_gqa (native), repeat_interleave of "
                        "K and V (repeat), or native where the chosen backend runs it (auto)")
    args = p.parse_args()
    d = pc.resolve(args)

    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    if args.device == "cpu" or (args.device == "auto" and not torch.cuda.is_available()):
        dev = torch.device("cpu")
    else:
        dev = torch.device("cuda")
    on_gpu = dev.type == "cuda"
    cdt = torch.bfloat16
    V, H, L = d["vocab"], d["hidden"], d["layers"]
    NH, KV, D, F_ = d["heads"], d["kv_heads"], d["head_dim"], d["mlp"]
    B, T = d["batch"], d["seq"]
    torch.manual_seed(args.seed)

    if on_gpu and args.sdpa != "any":
        torch.backends.cuda.enable_flash_sdp(args.sdpa == "flash")
        torch.backends.cuda.enable_cudnn_sdp(args.sdpa == "cudnn")
        torch.backends.cuda.enable_mem_efficient_sdp(args.sdpa == "efficient")
        torch.backends.cuda.enable_math_sdp(False)

    # Does the allowed backend run grouped-query heads natively? (A tiny eager probe.)
    gqa = args.gqa
    if gqa == "auto":
        gqa = "native"
        if NH != KV:
            try:
                q = torch.randn(1, NH, 16, D, device=dev, dtype=cdt)
                k = torch.randn(1, KV, 16, D, device=dev, dtype=cdt)
                F.scaled_dot_product_attention(q, k, k, is_causal=True, enable_gqa=True)
            except (RuntimeError, TypeError) as e:
                print(f"SDPA enable_gqa does not run here ({str(e).splitlines()[0][:120]}); "
                      "repeating K and V instead", file=sys.stderr)
                gqa = "repeat"

    # ---- model (src/model/forward.rs, params.rs, hlo/src/nn.rs) ----
    def rms_norm(x, gain):
        xf = x.float()
        normed = xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + args.norm_eps)
        return normed.to(x.dtype) * gain.to(x.dtype)

    def rope(x, cos, sin):  # x [B, T, N, D], rotate-half
        x1, x2 = x[..., : D // 2], x[..., D // 2:]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn_norm = nn.Parameter(torch.ones(H))
            self.wq = nn.Linear(H, NH * D, bias=False)
            self.wk = nn.Linear(H, KV * D, bias=False)
            self.wv = nn.Linear(H, KV * D, bias=False)
            self.wo = nn.Linear(NH * D, H, bias=False)
            self.mlp_norm = nn.Parameter(torch.ones(H))
            self.w_gate = nn.Linear(H, F_, bias=False)
            self.w_up = nn.Linear(H, F_, bias=False)
            self.w_down = nn.Linear(F_, H, bias=False)

        def forward(self, h, cos, sin):
            x = rms_norm(h, self.attn_norm)
            q = rope(self.wq(x).view(B, T, NH, D), cos, sin).transpose(1, 2)
            k = rope(self.wk(x).view(B, T, KV, D), cos, sin).transpose(1, 2)
            v = self.wv(x).view(B, T, KV, D).transpose(1, 2)
            if gqa == "native":
                o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=NH != KV)
            else:
                k = k.repeat_interleave(NH // KV, dim=1)
                v = v.repeat_interleave(NH // KV, dim=1)
                o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            h = h + self.wo(o.transpose(1, 2).reshape(B, T, NH * D))
            x = rms_norm(h, self.mlp_norm)
            return h + self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(V, H)
            self.layers = nn.ModuleList(Block() for _ in range(L))
            self.final_norm = nn.Parameter(torch.ones(H))
            inv_freq = torch.exp(torch.arange(D // 2, dtype=torch.float32)
                                 * (-2.0 * torch.log(torch.tensor(args.rope_theta)) / D))
            angles = torch.arange(T, dtype=torch.float32)[:, None] * inv_freq
            self.register_buffer("cos", angles.cos().to(cdt)[:, None, :], persistent=False)
            self.register_buffer("sin", angles.sin().to(cdt)[:, None, :], persistent=False)
            std, out_std = args.init_std, args.init_std / (2.0 * L) ** 0.5
            for name, prm in self.named_parameters():
                if prm.ndim >= 2:
                    s = out_std if name.endswith(("wo.weight", "w_down.weight")) else std
                    nn.init.normal_(prm, 0.0, s)

        def forward(self, tokens, targets):
            with torch.autocast(dev.type, dtype=cdt):
                table = self.embed.weight.to(cdt)
                h = F.embedding(tokens, table)
                for layer in self.layers:
                    h = layer(h, self.cos, self.sin)
                h = rms_norm(h, self.final_norm)
                logits = F.linear(h, self.embed.weight)  # tied head, bf16 under autocast
            return F.cross_entropy(logits.float().view(-1, V), targets.view(-1))

    model = Model().to(dev)
    counted = sum(prm.numel() for prm in model.parameters())
    compiled = model if args.mode == "eager" else torch.compile(
        model, mode=None if args.mode == "default" else args.mode, dynamic=False)
    cudagraphs = args.mode in ("reduce-overhead", "max-autotune")

    # ---- AdamW (src/train/optim/adamw.rs): decay on the matrices other than the embedding ----
    decay = [prm for n, prm in model.named_parameters() if prm.ndim >= 2 and n != "embed.weight"]
    no_decay = [prm for n, prm in model.named_parameters() if not (prm.ndim >= 2 and n != "embed.weight")]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=pc.lr_at(args, 1), betas=(args.beta1, args.beta2), eps=args.adam_eps,
        **({"fused": True} if on_gpu else {"foreach": True}),
    )
    params = list(model.parameters())

    host = []
    for tokens, targets in pc.host_batches(args, d):
        t, y = torch.from_numpy(tokens).long(), torch.from_numpy(targets).long()
        if on_gpu:
            t, y = t.pin_memory(), y.pin_memory()
        host.append((t, y))

    def step(i):
        t, y = host[i % 2]
        t, y = t.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        if cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        loss = compiled(t, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm, foreach=True)
        lr = pc.lr_at(args, i + 1)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach().clone() if cudagraphs else loss.detach()

    loops, warmup_s, losses = pc.timed_loops(args, step, lambda x: float(x.item()))
    device = torch.cuda.get_device_name(dev) + " (cuda)" if on_gpu else "cpu"
    pc.report(
        "torch", torch.__version__, device, args, d, counted, loops, warmup_s, losses,
        {"compile_mode": args.mode, "sdpa": args.sdpa if on_gpu else "cpu", "gqa": gqa,
         "optimizer": "AdamW(fused=True)" if on_gpu else "AdamW(foreach=True)",
         "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if on_gpu else None},
    )


if __name__ == "__main__":
    main()
