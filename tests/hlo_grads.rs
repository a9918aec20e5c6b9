//! Every gradient rule against central finite differences in f64 on random inputs (relative
//! error below 1e-6), composite models (MLP, softmax cross-entropy, attention), and remat on
//! and off giving identical gradients. Each function is compiled once (value-and-grad and
//! the plain loss); the finite differences rerun the loss program.

mod common;

use common::{rng, Host, Lit, Program};
use rand::Rng;
use vishwam_hlo::{
    nn, value_and_grad, DType, DotDims, Graph, Mesh, PartitionSpec, PrintOptions, ScatterDims,
    Tensor, TensorType,
};

const STEP: f64 = 1e-5;
const TOLERANCE: f64 = 1e-6;

/// `sum(out * c)` for a fixed random `c`: a scalar whose cotangent for `out` is not uniform.
fn weighted(out: &Tensor, seed: u64) -> Tensor {
    let mut r = rng(seed);
    let n = out.ty().num_elements() as usize;
    let c: Vec<f64> = (0..n).map(|_| r.gen_range(-1.0..1.0)).collect();
    let c = out.graph().constant_f64(&c, out.shape());
    (out.cast(DType::F64) * c).sum_all()
}

/// Traces `loss(g, params)`, compiles value-and-grad and the plain loss, returns the device
/// gradients of the float inputs after checking them against finite differences.
fn check_grads(
    name: &str,
    inputs: &[Lit],
    loss: impl FnOnce(&Graph, &[Tensor]) -> Tensor,
) -> Vec<Lit> {
    check_grads_with(name, inputs, &PrintOptions::default(), loss)
}

fn check_grads_with(
    name: &str,
    inputs: &[Lit],
    opts: &PrintOptions,
    loss: impl FnOnce(&Graph, &[Tensor]) -> Tensor,
) -> Vec<Lit> {
    let g = Graph::named(name);
    let params: Vec<Tensor> = inputs
        .iter()
        .enumerate()
        .map(|(i, l)| g.param(&format!("in{i}"), l.ty.clone()))
        .collect();
    let l = loss(&g, &params);
    let f = g
        .finish(&[("loss", &l)])
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let wrt: Vec<String> = f
        .params
        .iter()
        .filter(|p| p.ty.dtype.is_float())
        .map(|p| p.name.clone())
        .collect();
    let wrt_refs: Vec<&str> = wrt.iter().map(String::as_str).collect();
    let vg = value_and_grad(&f, "loss", &wrt_refs).unwrap_or_else(|e| panic!("{name}: {e}"));
    let vg_program = Program::with_options(vg, opts, 1);
    let loss_program = Program::with_options(f, opts, 1);
    let out = vg_program.run(inputs);
    let value = out[0].values()[0];
    let plain = loss_program.run(inputs)[0].values()[0];
    assert!(
        (value - plain).abs() <= 1e-12 * value.abs().max(1.0),
        "{name}: loss {value} vs {plain}"
    );
    let grads = out[1..].to_vec();
    let float_inputs: Vec<usize> = (0..inputs.len())
        .filter(|&i| inputs[i].ty.dtype.is_float())
        .collect();
    for (k, &i) in float_inputs.iter().enumerate() {
        assert_eq!(
            inputs[i].ty.dtype,
            DType::F64,
            "{name}: finite differences need f64 inputs"
        );
        let got = grads[k].values();
        for j in 0..got.len() {
            let at = |delta: f64| {
                let mut args = inputs.to_vec();
                let mut v = args[i].values();
                v[j] += delta;
                args[i] = Lit::f64(&args[i].ty.shape, &v);
                loss_program.run(&args)[0].values()[0]
            };
            let fd = (at(STEP) - at(-STEP)) / (2.0 * STEP);
            let err = (got[j] - fd).abs() / got[j].abs().max(fd.abs()).max(1e-3);
            assert!(err < TOLERANCE, "{name}: d loss / d in{i}[{j}]: autodiff {}, finite differences {fd} (relative error {err:.2e})", got[j]);
        }
    }
    grads
}

fn random(shape: &[i64], lo: f64, hi: f64, seed: u64) -> Lit {
    Lit::from_host(&Host::random(shape, lo, hi, &mut rng(seed)))
}

/// Random values with magnitude in [0.2, 1.5] and random sign (away from kinks at 0).
fn signed(shape: &[i64], seed: u64) -> Lit {
    let mut r = rng(seed);
    let mut h = Host::random(shape, 0.2, 1.5, &mut r);
    for v in &mut h.data {
        if r.gen::<bool>() {
            *v = -*v;
        }
    }
    Lit::from_host(&h)
}

#[test]
fn unary_rules() {
    type Op = fn(&Tensor) -> Tensor;
    let ops: [(&str, Op, bool); 14] = [
        ("neg", |x| -x, false),
        ("abs", |x| x.abs(), false),
        ("sign", |x| x.sign() * x, false),
        ("exp", |x| x.exp(), false),
        ("log", |x| x.log(), true),
        ("log1p", |x| x.log1p(), true),
        ("tanh", |x| x.tanh(), false),
        ("logistic", |x| x.sigmoid(), false),
        ("sqrt", |x| x.sqrt(), true),
        ("rsqrt", |x| x.rsqrt(), true),
        ("sin", |x| x.sin(), false),
        ("cos", |x| x.cos(), false),
        ("erf", |x| x.erf(), false),
        ("square", |x| x.square(), false),
    ];
    for (k, (name, op, positive)) in ops.into_iter().enumerate() {
        let x = if positive {
            random(&[2, 3], 0.4, 1.6, k as u64)
        } else {
            signed(&[2, 3], k as u64)
        };
        check_grads(name, &[x], |_, p| weighted(&op(&p[0]), 100 + k as u64));
    }
}

#[test]
fn binary_rules_with_broadcasting() {
    type Op = fn(&Tensor, &Tensor) -> Tensor;
    let ops: [(&str, Op); 8] = [
        ("add", |a, b| a + b),
        ("sub", |a, b| a - b),
        ("mul", |a, b| a * b),
        ("div", |a, b| a / b),
        ("max", |a, b| a.maximum(b)),
        ("min", |a, b| a.minimum(b)),
        ("pow", |a, b| a.pow(b)),
        ("scalars", |a, b| (2.0 - a * 3.0) / (b * b + 1.0)),
    ];
    for (k, (name, op)) in ops.into_iter().enumerate() {
        let a = random(&[3, 4], 0.3, 1.7, 10 + k as u64);
        let b = if name == "pow" {
            signed(&[4], 20 + k as u64)
        } else {
            random(&[4], 0.3, 1.7, 20 + k as u64)
        };
        check_grads(name, &[a, b], |_, p| {
            weighted(&op(&p[0], &p[1]), 200 + k as u64)
        });
    }
}

#[test]
fn select_compare_and_convert() {
    let (x, y) = (signed(&[3, 4], 30), signed(&[3, 4], 31));
    check_grads("select", &[x.clone(), y.clone()], |_, p| {
        weighted(&p[0].gt(&p[1]).select(&p[0] * &p[1], p[1].exp()), 32)
    });
    // Through f32 the finite differences would measure f32 rounding, so check the rule
    // exactly: the cotangent is converted back to f64.
    let g = Graph::new();
    let xt = g.param("x", TensorType::new(DType::F64, &[3, 4]));
    let loss = weighted(&xt.cast(DType::F32), 33);
    let f = g.finish(&[("loss", &loss)]).unwrap();
    let out = Program::new(value_and_grad(&f, "loss", &["x"]).unwrap()).run(&[x]);
    let mut r = rng(33);
    let c: Vec<f64> = (0..12).map(|_| r.gen_range(-1.0..1.0)).collect();
    let want: Vec<f64> = c.iter().map(|&v| v as f32 as f64).collect();
    assert_eq!(out[1].values(), want);
}

#[test]
fn dot_general_rules() {
    let cases = [
        (
            "batched",
            DotDims {
                lhs_batch: vec![0],
                rhs_batch: vec![0],
                lhs_contract: vec![2],
                rhs_contract: vec![1],
            },
            vec![2, 4, 5],
        ),
        (
            "two_contract",
            DotDims {
                lhs_contract: vec![2, 1],
                rhs_contract: vec![0, 1],
                ..Default::default()
            },
            vec![4, 3],
        ),
        ("outer", DotDims::default(), vec![2]),
        (
            "batch_not_leading",
            DotDims {
                lhs_batch: vec![2],
                rhs_batch: vec![1],
                lhs_contract: vec![0],
                rhs_contract: vec![0],
            },
            vec![2, 4, 3],
        ),
        (
            "contract_first",
            DotDims {
                lhs_contract: vec![0],
                rhs_contract: vec![1],
                ..Default::default()
            },
            vec![5, 2],
        ),
    ];
    for (k, (name, dims, rhs_shape)) in cases.into_iter().enumerate() {
        let a = signed(&[2, 3, 4], 40 + k as u64);
        let b = signed(&rhs_shape, 50 + k as u64);
        check_grads(name, &[a, b], |_, p| {
            weighted(&p[0].dot_general(&p[1], dims), 60 + k as u64)
        });
    }
    let a = signed(&[2, 3, 4], 41);
    let w = signed(&[4, 5], 42);
    check_grads("matmul", &[a, w], |_, p| {
        weighted(&p[0].matmul(&p[1]).tanh(), 61)
    });
}

#[test]
fn shape_rules() {
    let x = signed(&[2, 3, 4], 70);
    check_grads("reshape", std::slice::from_ref(&x), |_, p| {
        weighted(&p[0].reshape(&[4, 6]).sin(), 71)
    });
    check_grads("transpose", std::slice::from_ref(&x), |_, p| {
        weighted(&p[0].transpose(&[2, 0, 1]).sin(), 72)
    });
    check_grads("broadcast_in_dim", &[signed(&[2, 1, 4], 73)], |_, p| {
        weighted(&p[0].broadcast_in_dim(&[5, 2, 3, 4], &[1, 2, 3]).sin(), 74)
    });
    check_grads("slice", std::slice::from_ref(&x), |_, p| {
        weighted(&p[0].slice(&[0, 1, 1], &[2, 3, 4], &[1, 1, 2]).sin(), 75)
    });
    check_grads(
        "concatenate",
        &[x.clone(), signed(&[2, 2, 4], 76)],
        |_, p| weighted(&p[0].concat(&[p[1].exp()], 1), 77),
    );
    check_grads("pad", &[x.clone(), random(&[], 0.5, 1.5, 78)], |_, p| {
        weighted(
            &p[0]
                .pad_with(&p[1], &[1, -1, 0], &[0, 2, -1], &[0, 1, 2])
                .sin(),
            79,
        )
    });
    let x2 = signed(&[5, 6], 80);
    let u = signed(&[2, 3], 81);
    for start in [1, 4] {
        let inputs = [x2.clone(), u.clone(), Lit::i32(&[], &[start])];
        check_grads("dynamic_slice", &inputs, |g, p| {
            let j = g.scalar_i64(2, DType::I32);
            weighted(
                &p[0]
                    .dynamic_slice(&[p[2].clone(), j.clone()], &[2, 3])
                    .sin(),
                82,
            ) + weighted(
                &p[0]
                    .dynamic_update_slice(&p[1].exp(), &[p[2].clone(), j])
                    .sin(),
                83,
            )
        });
    }
}

#[test]
fn reduce_rules() {
    let x = signed(&[3, 4, 5], 90);
    check_grads("sum", std::slice::from_ref(&x), |_, p| {
        weighted(&p[0].sum(&[0, 2], false).sin(), 91)
    });
    check_grads("max", std::slice::from_ref(&x), |_, p| {
        weighted(&p[0].max(&[1], true), 92)
    });
    check_grads("min", std::slice::from_ref(&x), |_, p| {
        weighted(&p[0].min(&[2, 0], false), 93)
    });
    check_grads("mean", &[x], |_, p| {
        p[0].mean(&[1], false).square().mean_all()
    });
}

#[test]
fn gather_and_scatter_rules() {
    let e = signed(&[10, 4], 100);
    let ids = Lit::i32(&[2, 3], &[3, 1, 3, 0, 9, 1]);
    let upd = signed(&[2, 3, 4], 101);
    check_grads("take", &[e.clone(), ids.clone()], |_, p| {
        weighted(&p[0].take(&p[1], 0).tanh(), 102)
    });
    check_grads(
        "take_axis1",
        &[signed(&[4, 10], 103), ids.clone()],
        |_, p| weighted(&p[0].take(&p[1], 1).tanh(), 104),
    );
    check_grads("scatter_add", &[e, ids, upd], |_, p| {
        let sd = ScatterDims {
            update_window_dims: vec![2],
            inserted_window_dims: vec![0],
            scatter_dims_to_operand_dims: vec![0],
            index_vector_dim: 2,
        };
        weighted(&p[0].scatter_add(&p[1], &p[2].sin(), sd).tanh(), 105)
    });
}

#[test]
fn identity_like_rules_barrier_sharding_stop_gradient_and_custom_vjp() {
    let x = signed(&[4, 2], 110);
    check_grads("optimization_barrier", std::slice::from_ref(&x), |g, p| {
        let b = g.optimization_barrier(&[p[0].sin(), p[0].exp()]);
        weighted(&(&b[0] * &b[1]), 111)
    });
    let mesh = Mesh::new(&[("data", 1)], 1).unwrap();
    check_grads_with(
        "sharding_constraint",
        std::slice::from_ref(&x),
        &PrintOptions::with_mesh(mesh),
        |_, p| {
            weighted(
                &p[0]
                    .sin()
                    .sharding_constraint(PartitionSpec::from_axes(&[Some("data")])),
                112,
            )
        },
    );
    // stop_gradient and custom_vjp deliberately differ from finite differences: check exactly.
    let g = Graph::new();
    let xt = g.param("x", TensorType::new(DType::F64, &[4, 2]));
    let sg = (xt.stop_gradient() * &xt).sum_all();
    let cv = g.custom_vjp(
        "triple_grad",
        std::slice::from_ref(&xt),
        |_, a| vec![a[0].sin()],
        |_, _, _, c| vec![&c[0] * 3.0],
    );
    let loss = sg + cv[0].sum_all();
    let f = g.finish(&[("loss", &loss)]).unwrap();
    let out =
        Program::new(value_and_grad(&f, "loss", &["x"]).unwrap()).run(std::slice::from_ref(&x));
    let want: Vec<f64> = x.values().iter().map(|v| v + 3.0).collect();
    assert_eq!(out[1].values(), want);
}

#[test]
fn nn_compositions() {
    let x = signed(&[2, 3, 6], 120);
    type Op = fn(&Tensor) -> Tensor;
    let ops: [(&str, Op); 8] = [
        ("softmax", |x| nn::softmax(x, -1)),
        ("log_softmax", |x| nn::log_softmax(x, 1)),
        ("logsumexp", |x| nn::logsumexp(x, &[0, 2], false)),
        ("silu", nn::silu),
        ("gelu", |x| nn::gelu(x, false)),
        ("gelu_tanh", |x| nn::gelu(x, true)),
        ("top_k", |x| nn::top_k(x, 2).0),
        ("dropout", |x| {
            let bits = x.graph().iota(&TensorType::new(DType::U32, x.shape()), 2) * 0x3456_7891;
            nn::dropout(x, 0.3, &bits)
        }),
    ];
    for (k, (name, op)) in ops.into_iter().enumerate() {
        check_grads(name, std::slice::from_ref(&x), |_, p| {
            weighted(&op(&p[0]), 130 + k as u64)
        });
    }
    check_grads("rms_norm", &[x.clone(), signed(&[6], 121)], |_, p| {
        weighted(&nn::rms_norm(&p[0], &p[1], 1e-6), 140)
    });
    check_grads("rope", &[signed(&[2, 3, 2, 8], 122)], |g, p| {
        let pos = g.iota(&TensorType::new(DType::I32, &[3]), 0) + 5;
        weighted(&nn::rope(&p[0], &pos, 10000.0), 141)
    });
    let labels = Lit::i32(&[2, 3], &[0, 5, 2, 2, 4, 1]);
    check_grads("cross_entropy", &[x, labels], |_, p| {
        nn::cross_entropy(&p[0], &p[1]).mean_all()
    });
}

/// A 2-layer MLP with GELU and a squared-error loss.
fn mlp(p: &[Tensor]) -> Tensor {
    let h = nn::gelu(&(p[0].matmul(&p[1]) + &p[2]), true);
    (h.matmul(&p[3]) - &p[4]).square().mean_all()
}

#[test]
fn composite_models_match_finite_differences() {
    let inputs = [
        signed(&[4, 5], 150),
        signed(&[5, 8], 151),
        signed(&[8], 152),
        signed(&[8, 3], 153),
        signed(&[4, 3], 154),
    ];
    check_grads("mlp", &inputs, |_, p| mlp(p));

    let labels = Lit::i32(&[4], &[2, 0, 6, 1]);
    check_grads(
        "softmax_cross_entropy",
        &[signed(&[4, 5], 155), signed(&[5, 7], 156), labels],
        |_, p| nn::cross_entropy(&p[0].matmul(&p[1]), &p[2]).mean_all(),
    );

    // Causal self-attention: (B, T, D) with two heads, RoPE, and an output projection.
    let inputs = [
        signed(&[2, 4, 6], 157),
        signed(&[6, 6], 158),
        signed(&[6, 6], 159),
        signed(&[6, 6], 160),
        signed(&[6, 6], 161),
    ];
    check_grads("attention", &inputs, |g, p| weighted(&attention(g, p), 162));
}

fn attention(g: &Graph, p: &[Tensor]) -> Tensor {
    let (b, t, d, h) = (2, 4, 6, 2);
    let split = |x: Tensor| x.reshape(&[b, t, h, d / h]);
    let pos = g.iota(&TensorType::new(DType::I32, &[t]), 0);
    let q = nn::rope(&split(p[0].matmul(&p[1])), &pos, 10000.0).transpose(&[0, 2, 1, 3]);
    let k = nn::rope(&split(p[0].matmul(&p[2])), &pos, 10000.0).transpose(&[0, 2, 3, 1]);
    let v = split(p[0].matmul(&p[3])).transpose(&[0, 2, 1, 3]);
    let row = g.iota(&TensorType::new(DType::I32, &[t, t]), 0);
    let col = g.iota(&TensorType::new(DType::I32, &[t, t]), 1);
    let scores = q.matmul(&k) * (1.0 / ((d / h) as f64).sqrt());
    let probs = nn::softmax(&row.ge(&col).select(&scores, -1e9), -1);
    probs
        .matmul(&v)
        .transpose(&[0, 2, 1, 3])
        .reshape(&[b, t, d])
        .matmul(&p[4])
}

#[test]
fn remat_on_and_off_give_identical_gradients() {
    let inputs = [
        signed(&[4, 6], 170),
        signed(&[6, 6], 171),
        signed(&[6, 6], 172),
        signed(&[6], 173),
    ];
    let model = |remat: bool| {
        move |g: &Graph, p: &[Tensor]| {
            let block = |g: &Graph, a: &[Tensor]| {
                let inner = |_: &Graph, b: &[Tensor]| vec![nn::silu(&b[0].matmul(&b[1]))];
                let hidden = if remat {
                    g.remat(
                        "mlp_in",
                        &[nn::rms_norm(&a[0], &a[3], 1e-6), a[1].clone()],
                        inner,
                    )
                } else {
                    inner(g, &[nn::rms_norm(&a[0], &a[3], 1e-6), a[1].clone()])
                };
                vec![&a[0] + hidden[0].matmul(&a[2])]
            };
            let mut x = p[0].clone();
            for _ in 0..3 {
                let args = [x.clone(), p[1].clone(), p[2].clone(), p[3].clone()];
                x = if remat {
                    g.remat("block", &args, block)
                } else {
                    block(g, &args)
                }[0]
                .clone();
            }
            weighted(&x, 174)
        }
    };
    let on = check_grads("remat_on", &inputs, model(true));
    let off = check_grads("remat_off", &inputs, model(false));
    for (k, (a, b)) in on.iter().zip(&off).enumerate() {
        for (j, (x, y)) in a.values().iter().zip(b.values()).enumerate() {
            assert!(
                (x - y).abs() <= 1e-14 * x.abs().max(1.0),
                "grad {k}[{j}]: remat {x}, no remat {y}"
            );
        }
    }
}
