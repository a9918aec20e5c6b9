//! Times tracing, differentiating and printing the train step of a Llama-style model.
//!
//! `cargo run --release -p vishwam-hlo --example trace_llama -- [layers] [width] [remat]`
//! (defaults: 24 layers, width 1024, remat on). The step is one function: forward, loss,
//! gradients and an AdamW update of every parameter, with parameters and optimizer state
//! donated to their updated outputs.

use std::time::Instant;
use vishwam_hlo::{nn, DType, Graph, PrintOptions, Tensor, TensorMap, TensorType};

struct Config {
    layers: usize,
    width: i64,
    heads: i64,
    mlp: i64,
    vocab: i64,
    batch: i64,
    seq: i64,
    remat: bool,
}

fn param_types(c: &Config) -> Vec<(String, TensorType)> {
    let t = |s: &[i64]| TensorType::new(DType::F32, s);
    let mut p = vec![
        ("embed".to_string(), t(&[c.vocab, c.width])),
        ("final_norm".into(), t(&[c.width])),
    ];
    for l in 0..c.layers {
        let k = |n: &str| format!("layers.{l}.{n}");
        p.push((k("attn_norm"), t(&[c.width])));
        for w in ["attn.wq", "attn.wk", "attn.wv", "attn.wo"] {
            p.push((k(w), t(&[c.width, c.width])));
        }
        p.push((k("mlp_norm"), t(&[c.width])));
        p.push((k("mlp.w1"), t(&[c.width, c.mlp])));
        p.push((k("mlp.w3"), t(&[c.width, c.mlp])));
        p.push((k("mlp.w2"), t(&[c.mlp, c.width])));
    }
    p
}

fn block(c: &Config, p: &TensorMap, x: &Tensor, pos: &Tensor, mask: &Tensor) -> Tensor {
    let get = |k: &str| p.get(k).expect("parameter").clone();
    let (b, s, h) = (c.batch, c.seq, c.heads);
    let hd = c.width / h;
    let n = nn::rms_norm(x, &get("attn_norm"), 1e-5);
    let split = |t: Tensor| t.reshape(&[b, s, h, hd]);
    let q = nn::rope(&split(n.matmul(&get("attn.wq"))), pos, 10000.0);
    let k = nn::rope(&split(n.matmul(&get("attn.wk"))), pos, 10000.0);
    let v = split(n.matmul(&get("attn.wv")));
    // (B, H, S, D) x (B, H, D, S) -> (B, H, S, S)
    let (q, k, v) = (
        q.transpose(&[0, 2, 1, 3]),
        k.transpose(&[0, 2, 3, 1]),
        v.transpose(&[0, 2, 1, 3]),
    );
    let scores = q.matmul(&k) * (1.0 / (hd as f64).sqrt());
    let probs = nn::softmax(&mask.select(&scores, -1e9), -1);
    let attn = probs
        .matmul(&v)
        .transpose(&[0, 2, 1, 3])
        .reshape(&[b, s, c.width]);
    let x = x + attn.matmul(&get("attn.wo"));
    let n = nn::rms_norm(&x, &get("mlp_norm"), 1e-5);
    let hidden = nn::silu(&n.matmul(&get("mlp.w1"))) * n.matmul(&get("mlp.w3"));
    &x + hidden.matmul(&get("mlp.w2"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let layers = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(24);
    let width = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1024);
    let remat = args.get(3).is_none_or(|a| a != "0");
    let c = Config {
        layers,
        width,
        heads: width / 64,
        mlp: width * 8 / 3 / 64 * 64,
        vocab: 32000,
        batch: 8,
        seq: 1024,
        remat,
    };

    let start = Instant::now();
    let g = Graph::named("train_step");
    let types = param_types(&c);
    let params = g.params(types.iter().map(|(n, t)| (n.as_str(), t.clone())));
    let moments: Vec<(Tensor, Tensor)> = types
        .iter()
        .map(|(n, t)| {
            (
                g.param(&format!("opt.m.{n}"), t.clone()),
                g.param(&format!("opt.v.{n}"), t.clone()),
            )
        })
        .collect();
    let tokens = g.param("tokens", TensorType::new(DType::I32, &[c.batch, c.seq]));
    let labels = g.param("labels", TensorType::new(DType::I32, &[c.batch, c.seq]));
    let pos = g.iota(&TensorType::new(DType::I32, &[c.seq]), 0);
    let row = g.iota(&TensorType::new(DType::I32, &[c.seq, c.seq]), 0);
    let col = g.iota(&TensorType::new(DType::I32, &[c.seq, c.seq]), 1);
    let mask = row.ge(&col);
    let mut x = params.get("embed")?.take(&tokens, 0);
    for l in 0..c.layers {
        let p = params.subtree(&format!("layers.{l}"));
        x = if c.remat {
            let mut inputs = p.clone();
            inputs.insert("x", x.clone());
            let out = g.remat_map(&format!("layer{l}"), &inputs, |g, i| {
                let mut m = TensorMap::new();
                let pos = g.iota(&TensorType::new(DType::I32, &[c.seq]), 0);
                let row = g.iota(&TensorType::new(DType::I32, &[c.seq, c.seq]), 0);
                let col = g.iota(&TensorType::new(DType::I32, &[c.seq, c.seq]), 1);
                m.insert(
                    "x",
                    block(&c, i, i.get("x").expect("x"), &pos, &row.ge(&col)),
                );
                m
            });
            out.get("x")?.clone()
        } else {
            block(&c, &p, &x, &pos, &mask)
        };
    }
    let x = nn::rms_norm(&x, params.get("final_norm")?, 1e-5);
    let logits = x.matmul(&params.get("embed")?.transpose(&[1, 0]));
    let loss = nn::cross_entropy(&logits, &labels).mean_all();
    let traced = start.elapsed();

    let wrt: Vec<Tensor> = types
        .iter()
        .map(|(n, _)| params.get(n).cloned())
        .collect::<Result<_, _>>()?;
    let grads = g.grad(&loss, &wrt)?;
    let differentiated = start.elapsed();

    let (lr, b1, b2, eps, wd) = (3e-4, 0.9, 0.95, 1e-8, 0.1);
    let mut outputs: Vec<(String, Tensor)> = vec![("loss".into(), loss.clone())];
    for ((((name, _), p), grad), (m, v)) in types.iter().zip(&wrt).zip(&grads).zip(&moments) {
        let m2 = m * b1 + grad * (1.0 - b1);
        let v2 = v * b2 + grad.square() * (1.0 - b2);
        let update = &m2 / (v2.sqrt() + eps) + p * wd;
        outputs.push((name.to_string(), p - update * lr));
        outputs.push((format!("opt.m.{name}"), m2));
        outputs.push((format!("opt.v.{name}"), v2));
    }
    let refs: Vec<(&str, &Tensor)> = outputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut f = g.finish(&refs)?;
    for (name, _) in &outputs[1..] {
        f.donate(name, name)?;
    }
    let finished = start.elapsed();
    let text = f.to_stablehlo(&PrintOptions::default())?;
    let printed = start.elapsed();
    println!(
        "layers {} width {} remat {}: {} params, {} eqns, {} bytes printed",
        c.layers,
        c.width,
        c.remat,
        f.params.len(),
        f.eqns.len(),
        text.len()
    );
    println!(
        "trace {:.1} ms, grad {:.1} ms, finish+check {:.1} ms, print {:.1} ms, total {:.1} ms",
        traced.as_secs_f64() * 1e3,
        (differentiated - traced).as_secs_f64() * 1e3,
        (finished - differentiated).as_secs_f64() * 1e3,
        (printed - finished).as_secs_f64() * 1e3,
        printed.as_secs_f64() * 1e3
    );
    if let Some(path) = args.get(4) {
        std::fs::write(path, &text)?;
    }
    Ok(())
}
