//! Every primitive of vishwam-hlo, traced, printed, compiled by the CPU plugin and run,
//! against a host computation in f64. Each group is one program compiled once.

mod common;

use common::{assert_close, client, erf, rng, Host, Lit, Program};
use vishwam_hlo::{
    nn, CustomCallSpec, DType, DotDims, Graph, Mesh, PartitionSpec, PrintOptions, RngAlgorithm,
    ScatterDims, Tensor, TensorType,
};

fn f64t(shape: &[i64]) -> TensorType {
    TensorType::new(DType::F64, shape)
}

/// Traces `outputs(g)` into a program and runs it on `inputs`.
fn run(
    name: &str,
    inputs: &[Lit],
    build: impl FnOnce(&Graph, &[Tensor]) -> Vec<(&'static str, Tensor)>,
) -> Vec<(String, Lit)> {
    let g = Graph::named(name);
    let params: Vec<Tensor> = inputs
        .iter()
        .enumerate()
        .map(|(i, l)| g.param(&format!("in{i}"), l.ty.clone()))
        .collect();
    let outs = build(&g, &params);
    let refs: Vec<(&str, &Tensor)> = outs.iter().map(|(n, t)| (*n, t)).collect();
    let program = Program::new(g.finish(&refs).unwrap_or_else(|e| panic!("{name}: {e}")));
    let results = program.run(inputs);
    outs.iter()
        .map(|(n, _)| n.to_string())
        .zip(results)
        .collect()
}

fn check(results: &[(String, Lit)], want: &[Host], tol: f64) {
    assert_eq!(results.len(), want.len());
    for ((name, got), w) in results.iter().zip(want) {
        assert_close(name, got, w, tol);
    }
}

fn zip(a: &Host, b: &Host, f: impl Fn(f64, f64) -> f64) -> Host {
    Host {
        shape: a.shape.clone(),
        data: a.data.iter().zip(&b.data).map(|(&x, &y)| f(x, y)).collect(),
    }
}

#[test]
fn elementwise_compare_select_and_convert() {
    let mut r = rng(1);
    let x = Host::random(&[3, 4], 0.2, 1.8, &mut r);
    let y = Host::random(&[3, 4], -1.5, 1.5, &mut r);
    let res = run(
        "elementwise",
        &[Lit::from_host(&x), Lit::from_host(&y)],
        |_, p| {
            let (x, y) = (&p[0], &p[1]);
            vec![
                ("neg", -x),
                ("abs", y.abs()),
                ("sign", y.sign()),
                ("exp", x.exp()),
                ("log", x.log()),
                ("log1p", x.log1p()),
                ("tanh", y.tanh()),
                ("logistic", y.sigmoid()),
                ("sqrt", x.sqrt()),
                ("rsqrt", x.rsqrt()),
                ("sin", y.sin()),
                ("cos", y.cos()),
                ("erf", y.erf()),
                ("add", x + y),
                ("sub", x - y),
                ("mul", x * y),
                ("div", x / y),
                ("max", x.maximum(y)),
                ("min", x.minimum(y)),
                ("pow", x.pow(y)),
                ("scalars", 2.0 - x * 3.0),
                ("gt", x.gt(y).cast(DType::F64)),
                ("le", x.le(y).cast(DType::F64)),
                ("eq", x.eq(x).cast(DType::F64)),
                ("select", y.lt(0.0).select(x, y)),
                ("to_f32", x.cast(DType::F32)),
                ("to_bf16", x.cast(DType::BF16)),
                ("to_i32", (y * 3.0).cast(DType::I32)),
            ]
        },
    );
    let b = |v: bool| if v { 1.0 } else { 0.0 };
    let want = vec![
        x.map(|v| -v),
        y.map(f64::abs),
        y.map(f64::signum),
        x.map(f64::exp),
        x.map(f64::ln),
        x.map(f64::ln_1p),
        y.map(f64::tanh),
        y.map(|v| 1.0 / (1.0 + (-v).exp())),
        x.map(f64::sqrt),
        x.map(|v| 1.0 / v.sqrt()),
        y.map(f64::sin),
        y.map(f64::cos),
        y.map(erf),
        zip(&x, &y, |a, b| a + b),
        zip(&x, &y, |a, b| a - b),
        zip(&x, &y, |a, b| a * b),
        zip(&x, &y, |a, b| a / b),
        zip(&x, &y, f64::max),
        zip(&x, &y, f64::min),
        zip(&x, &y, f64::powf),
        x.map(|v| 2.0 - v * 3.0),
        zip(&x, &y, |a, c| b(a > c)),
        zip(&x, &y, |a, c| b(a <= c)),
        x.map(|_| 1.0),
        zip(&x, &y, |a, c| if c < 0.0 { a } else { c }),
        x.map(|v| v as f32 as f64),
        x.map(|v| half::bf16::from_f64(v).to_f64()),
        y.map(|v| (v * 3.0).trunc()),
    ];
    check(&res, &want, 1e-12);
}

#[test]
fn integer_bitwise_and_bit_reinterpretation() {
    let mut r = rng(2);
    let a: Vec<u32> = (0..6).map(|_| rand::Rng::gen(&mut r)).collect();
    let b: Vec<u32> = (0..6).map(|_| rand::Rng::gen(&mut r)).collect();
    let i: Vec<i32> = (0..6i32).map(|k| k * 7 - 20).collect();
    let res = run(
        "ints",
        &[Lit::u32(&[6], &a), Lit::u32(&[6], &b), Lit::i32(&[6], &i)],
        |_, p| {
            let (a, b, i) = (&p[0], &p[1], &p[2]);
            vec![
                ("and", a.and(b)),
                ("or", a.or(b)),
                ("xor", a.xor(b)),
                ("not", a.not()),
                ("shl", a.shift_left(3)),
                ("shr", a.shift_right_logical(b.shift_right_logical(28))),
                ("iadd", i + i),
                ("imul", i * 3),
                ("idiv", i / 4),
                ("imax", i.maximum(0)),
                ("ineg", -i),
                ("iabs", i.abs()),
                ("band", i.lt(3).and(i.gt(-3)).cast(DType::I32)),
                ("bnot", i.lt(3).not().cast(DType::I32)),
                ("bitcast", a.bitcast(DType::I32)),
                ("uniform", nn::uniform_from_bits(a, DType::F64)),
            ]
        },
    );
    let au: Vec<u64> = a.iter().map(|&v| v as u64).collect();
    let h = |v: Vec<f64>| Host {
        shape: vec![6],
        data: v,
    };
    let m = |f: &dyn Fn(usize) -> f64| h((0..6).map(f).collect());
    let want = vec![
        m(&|k| (a[k] & b[k]) as f64),
        m(&|k| (a[k] | b[k]) as f64),
        m(&|k| (a[k] ^ b[k]) as f64),
        m(&|k| (!a[k]) as f64),
        m(&|k| (a[k] << 3) as f64),
        m(&|k| (a[k] >> (b[k] >> 28)) as f64),
        m(&|k| (2 * i[k]) as f64),
        m(&|k| (3 * i[k]) as f64),
        m(&|k| (i[k] / 4) as f64),
        m(&|k| i[k].max(0) as f64),
        m(&|k| -i[k] as f64),
        m(&|k| i[k].abs() as f64),
        m(&|k| (i[k] < 3 && i[k] > -3) as i32 as f64),
        m(&|k| (i[k] >= 3) as i32 as f64),
        m(&|k| a[k] as i32 as f64),
        m(&|k| (f32::from_bits((au[k] as u32 >> 9) | 0x3f80_0000) - 1.0) as f64),
    ];
    check(&res, &want, 0.0);
}

#[test]
fn shapes_constants_and_iota() {
    let mut r = rng(3);
    let x = Host::random(&[2, 3, 4], -1.0, 1.0, &mut r);
    let res = run("shapes", &[Lit::from_host(&x)], |g, p| {
        let x = &p[0];
        vec![
            ("reshape", x.reshape(&[6, -1])),
            ("transpose", x.transpose(&[2, 0, 1])),
            (
                "broadcast",
                x.slice_axis(1, 0, 1)
                    .broadcast_in_dim(&[5, 2, 3, 4], &[1, 2, 3]),
            ),
            ("slice", x.slice(&[0, 1, 0], &[2, 3, 4], &[1, 1, 2])),
            ("concat", x.concat(&[x * 2.0], 1)),
            ("pad", x.pad(1.5, &[1, -1, 0], &[0, 2, 1], &[0, 1, 2])),
            ("iota", g.iota(&TensorType::new(DType::I32, &[3, 4]), 1)),
            (
                "dense",
                g.constant_f64(&[1.5, -2.25, 3.0, 0.1, -0.0, 7.0], &[2, 3]),
            ),
            ("dense_i32", g.constant_i32(&[1, -2, 3], &[3])),
            (
                "bool",
                g.constant_bytes(&TensorType::new(DType::I1, &[2, 2]), vec![1, 0, 0, 1]),
            ),
            ("bf16", g.full(0.1, &TensorType::new(DType::BF16, &[2]))),
            (
                "f8e4m3",
                g.full(1.5, &TensorType::new(DType::F8E4M3FN, &[2])),
            ),
            (
                "f8e5m2",
                g.full(-3.0, &TensorType::new(DType::F8E5M2, &[2])),
            ),
            (
                "inf",
                g.full(f64::NEG_INFINITY, &TensorType::new(DType::F32, &[2])),
            ),
        ]
    });
    let h = |shape: &[i64], data: &[f64]| Host {
        shape: shape.to_vec(),
        data: data.to_vec(),
    };
    let want = vec![
        Host {
            shape: vec![6, 4],
            data: x.data.clone(),
        },
        Host::from_fn(&[4, 2, 3], |i| x.at(&[i[1], i[2], i[0]])),
        Host::from_fn(&[5, 2, 3, 4], |i| x.at(&[i[1], 0, i[3]])),
        Host::from_fn(&[2, 2, 2], |i| x.at(&[i[0], 1 + i[1], 2 * i[2]])),
        Host::from_fn(&[2, 6, 4], |i| {
            if i[1] < 3 {
                x.at(i)
            } else {
                2.0 * x.at(&[i[0], i[1] - 3, i[2]])
            }
        }),
        // dim0: low 1; dim1: low -1, high 2, interior 1 (size 3 -> 5 -> crop 1 -> +2 = 6);
        // dim2: high 1, interior 2 (size 4 -> 10 -> 11).
        Host::from_fn(&[3, 6, 11], |i| {
            let d0 = i[0] - 1;
            let p1 = i[1] + 1;
            let (d1, r1) = (p1 / 2, p1 % 2);
            let (d2, r2) = (i[2] / 3, i[2] % 3);
            if d0 >= 0 && r1 == 0 && d1 < 3 && r2 == 0 && d2 < 4 {
                x.at(&[d0, d1, d2])
            } else {
                1.5
            }
        }),
        Host::from_fn(&[3, 4], |i| i[1] as f64),
        h(&[2, 3], &[1.5, -2.25, 3.0, 0.1, -0.0, 7.0]),
        h(&[3], &[1.0, -2.0, 3.0]),
        h(&[2, 2], &[1.0, 0.0, 0.0, 1.0]),
        h(&[2], &[half::bf16::from_f64(0.1).to_f64(); 2]),
        h(&[2], &[1.5, 1.5]),
        h(&[2], &[-3.0, -3.0]),
        h(&[2], &[f64::NEG_INFINITY; 2]),
    ];
    check(&res, &want, 0.0);
}

#[test]
fn dynamic_slices_clamp_like_the_host() {
    let mut r = rng(4);
    let x = Host::random(&[5, 6], -1.0, 1.0, &mut r);
    let u = Host::random(&[2, 3], -1.0, 1.0, &mut r);
    for start in [1, 4] {
        let res = run(
            "dynamic",
            &[
                Lit::from_host(&x),
                Lit::from_host(&u),
                Lit::i32(&[], &[start]),
            ],
            |g, p| {
                let j = g.scalar_i64(2, DType::I32);
                vec![
                    (
                        "ds",
                        p[0].dynamic_slice(&[p[2].clone(), j.clone()], &[2, 3]),
                    ),
                    ("dus", p[0].dynamic_update_slice(&p[1], &[p[2].clone(), j])),
                ]
            },
        );
        let s = (start as i64).min(5 - 2);
        let want = vec![
            Host::from_fn(&[2, 3], |i| x.at(&[s + i[0], 2 + i[1]])),
            Host::from_fn(&[5, 6], |i| {
                let (a, b) = (i[0] - s, i[1] - 2);
                if (0..2).contains(&a) && (0..3).contains(&b) {
                    u.at(&[a, b])
                } else {
                    x.at(i)
                }
            }),
        ];
        check(&res, &want, 0.0);
    }
}

#[test]
fn reductions_and_argmax() {
    let mut r = rng(5);
    let x = Host::random(&[3, 4, 5], -1.0, 1.0, &mut r);
    let res = run("reduce", &[Lit::from_host(&x)], |_, p| {
        let x = &p[0];
        vec![
            ("sum", x.sum(&[0, 2], false)),
            ("max", x.max(&[1], true)),
            ("min", x.min(&[-1], false)),
            ("mean", x.mean_all()),
            ("argmax", x.argmax(1, DType::I32)),
            ("argmax_i", (x * 4.0).cast(DType::I32).argmax(0, DType::I64)),
            ("max_i", (x * 4.0).cast(DType::I32).max(&[2], false)),
        ]
    });
    let argmax = |vals: Vec<f64>| {
        let mut best = 0;
        for (k, &v) in vals.iter().enumerate() {
            if v > vals[best] {
                best = k;
            }
        }
        best as f64
    };
    let xi = x.map(|v| (v * 4.0).trunc());
    let want = vec![
        Host::from_fn(&[4], |i| {
            (0..3)
                .flat_map(|a| (0..5).map(move |c| (a, c)))
                .map(|(a, c)| x.at(&[a, i[0], c]))
                .sum()
        }),
        Host::from_fn(&[3, 1, 5], |i| {
            (0..4)
                .map(|b| x.at(&[i[0], b, i[2]]))
                .fold(f64::NEG_INFINITY, f64::max)
        }),
        Host::from_fn(&[3, 4], |i| {
            (0..5)
                .map(|c| x.at(&[i[0], i[1], c]))
                .fold(f64::INFINITY, f64::min)
        }),
        Host {
            shape: vec![],
            data: vec![x.data.iter().sum::<f64>() / 60.0],
        },
        Host::from_fn(&[3, 5], |i| {
            argmax((0..4).map(|b| x.at(&[i[0], b, i[1]])).collect())
        }),
        Host::from_fn(&[4, 5], |i| {
            argmax((0..3).map(|a| xi.at(&[a, i[0], i[1]])).collect())
        }),
        Host::from_fn(&[3, 4], |i| {
            (0..5)
                .map(|c| xi.at(&[i[0], i[1], c]))
                .fold(f64::NEG_INFINITY, f64::max)
        }),
    ];
    check(&res, &want, 1e-12);
}

#[test]
fn reduce_with_combines_several_operands() {
    let mut r = rng(15);
    let x = Host::random(&[3, 4, 5], -3.0, 3.0, &mut r);
    let res = run("reduce_with", &[Lit::from_host(&x)], |g, p| {
        let x = &p[0];
        let lowest = g.scalar(f64::MIN, DType::F64);
        let zero = g.scalar(0.0, DType::F64);
        let ones = g.scalar(1.0, DType::F64).broadcast_to(&[3, 4, 5]);
        // Online softmax with one exponential per combination: the larger maximum wins and
        // the other side's sum is rescaled to it.
        let stats = g.reduce_with(&[x.clone(), ones], &[lowest, zero], &[-1], |_, a, b| {
            let first = a[0].ge(&b[0]);
            let (big, small) = (a[0].maximum(&b[0]), a[0].minimum(&b[0]));
            let scale = (small - &big).exp();
            let sum = first.select(&(&a[1] + &b[1] * &scale), &(&b[1] + &a[1] * &scale));
            vec![big, sum]
        });
        let one = g.scalar(1.0, DType::F64);
        let product = g.reduce_with(std::slice::from_ref(x), &[one], &[0, 2], |_, a, b| {
            vec![&a[0] * &b[0]]
        });
        vec![
            ("max", stats[0].clone()),
            ("sum_exp", stats[1].clone()),
            ("product", product[0].clone()),
        ]
    });
    let row = |i: &[i64]| (0..5).map(|c| x.at(&[i[0], i[1], c])).collect::<Vec<f64>>();
    let want = vec![
        Host::from_fn(&[3, 4], |i| {
            row(i).into_iter().fold(f64::NEG_INFINITY, f64::max)
        }),
        Host::from_fn(&[3, 4], |i| {
            let v = row(i);
            let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            v.iter().map(|z| (z - m).exp()).sum()
        }),
        Host::from_fn(&[4], |i| {
            (0..3)
                .flat_map(|a| (0..5).map(move |c| (a, c)))
                .map(|(a, c)| x.at(&[a, i[0], c]))
                .product()
        }),
    ];
    check(&res, &want, 1e-12);
}

/// Host `dot_general`: batch dims, then lhs free, then rhs free.
pub fn host_dot(a: &Host, b: &Host, d: &DotDims) -> Host {
    let free = |rank: usize, batch: &[usize], contract: &[usize]| -> Vec<usize> {
        (0..rank)
            .filter(|x| !batch.contains(x) && !contract.contains(x))
            .collect()
    };
    let (af, bf) = (
        free(a.shape.len(), &d.lhs_batch, &d.lhs_contract),
        free(b.shape.len(), &d.rhs_batch, &d.rhs_contract),
    );
    let mut shape: Vec<i64> = d.lhs_batch.iter().map(|&k| a.shape[k]).collect();
    shape.extend(af.iter().map(|&k| a.shape[k]));
    shape.extend(bf.iter().map(|&k| b.shape[k]));
    let csizes: Vec<i64> = d.lhs_contract.iter().map(|&k| a.shape[k]).collect();
    let ccount: i64 = csizes.iter().product();
    Host::from_fn(&shape, |o| {
        let nb = d.lhs_batch.len();
        let mut ai = vec![0; a.shape.len()];
        let mut bi = vec![0; b.shape.len()];
        for (k, (&l, &r)) in d.lhs_batch.iter().zip(&d.rhs_batch).enumerate() {
            ai[l] = o[k];
            bi[r] = o[k];
        }
        for (k, &l) in af.iter().enumerate() {
            ai[l] = o[nb + k];
        }
        for (k, &r) in bf.iter().enumerate() {
            bi[r] = o[nb + af.len() + k];
        }
        let mut sum = 0.0;
        for c in 0..ccount {
            let mut rest = c;
            for (k, (&l, &r)) in d.lhs_contract.iter().zip(&d.rhs_contract).enumerate().rev() {
                ai[l] = rest % csizes[k];
                bi[r] = rest % csizes[k];
                rest /= csizes[k];
            }
            sum += a.at(&ai) * b.at(&bi);
        }
        sum
    })
}

#[test]
fn dot_general_dimension_numbers() {
    let mut r = rng(6);
    let a = Host::random(&[2, 3, 4], -1.0, 1.0, &mut r);
    let b = Host::random(&[2, 4, 5], -1.0, 1.0, &mut r);
    let w = Host::random(&[4, 3], -1.0, 1.0, &mut r);
    let cases = vec![
        DotDims {
            lhs_batch: vec![0],
            rhs_batch: vec![0],
            lhs_contract: vec![2],
            rhs_contract: vec![1],
        },
        DotDims {
            lhs_contract: vec![2, 1],
            rhs_contract: vec![0, 1],
            ..Default::default()
        },
        DotDims::default(),
        DotDims {
            lhs_batch: vec![2],
            rhs_batch: vec![1],
            lhs_contract: vec![0],
            rhs_contract: vec![0],
        },
    ];
    let rhs = [&b, &w, &w, &b];
    let inputs = [Lit::from_host(&a), Lit::from_host(&b), Lit::from_host(&w)];
    let cases2 = cases.clone();
    let res = run("dots", &inputs, move |_, p| {
        let names = ["batched", "two_contract", "outer", "batch_not_leading"];
        let rhs = [&p[1], &p[2], &p[2], &p[1]];
        let mut out: Vec<(&'static str, Tensor)> = cases2
            .iter()
            .zip(rhs)
            .zip(names)
            .map(|((d, r), n)| (n, p[0].dot_general(r, d.clone())))
            .collect();
        out.push(("matmul", p[0].matmul(&p[2])));
        out.push((
            "mixed",
            p[0].cast(DType::BF16)
                .dot_general_to(&p[2].cast(DType::BF16), cases2[1].clone(), DType::F32)
                .cast(DType::F64),
        ));
        out
    });
    let mut want: Vec<Host> = cases
        .iter()
        .zip(rhs)
        .map(|(d, r)| host_dot(&a, r, d))
        .collect();
    let mm = DotDims {
        lhs_contract: vec![2],
        rhs_contract: vec![0],
        ..Default::default()
    };
    want.push(host_dot(&a, &w, &mm));
    want.push(host_dot(
        &a.map(|v| half::bf16::from_f64(v).to_f64()),
        &w.map(|v| half::bf16::from_f64(v).to_f64()),
        &cases[1],
    ));
    check(&res[..5], &want[..5], 1e-12);
    check(&res[5..], &want[5..], 1e-5);
}

#[test]
fn gather_take_one_hot_and_scatter_add() {
    let mut r = rng(7);
    let e = Host::random(&[10, 4], -1.0, 1.0, &mut r);
    let ids = Host::random_ints(&[2, 3], 4, &mut r);
    let upd = Host::random(&[2, 3, 4], -1.0, 1.0, &mut r);
    let res = run(
        "gather",
        &[
            Lit::from_host(&e),
            Lit::i32(&[2, 3], &ids.ints()),
            Lit::from_host(&upd),
        ],
        |_, p| {
            let sd = ScatterDims {
                update_window_dims: vec![2],
                inserted_window_dims: vec![0],
                scatter_dims_to_operand_dims: vec![0],
                index_vector_dim: 2,
            };
            vec![
                ("take0", p[0].take(&p[1], 0)),
                ("take1", p[0].take(&p[1], 1)),
                ("one_hot", p[1].one_hot(10, DType::F64)),
                ("scatter_add", p[0].scatter_add(&p[1], &p[2], sd)),
            ]
        },
    );
    let want = vec![
        Host::from_fn(&[2, 3, 4], |i| e.at(&[ids.at(&[i[0], i[1]]) as i64, i[2]])),
        Host::from_fn(&[10, 2, 3], |i| e.at(&[i[0], ids.at(&[i[1], i[2]]) as i64])),
        Host::from_fn(&[2, 3, 10], |i| {
            if ids.at(&[i[0], i[1]]) as i64 == i[2] {
                1.0
            } else {
                0.0
            }
        }),
        Host::from_fn(&[10, 4], |i| {
            let mut v = e.at(i);
            for a in 0..2 {
                for b in 0..3 {
                    if ids.at(&[a, b]) as i64 == i[0] {
                        v += upd.at(&[a, b, i[1]]);
                    }
                }
            }
            v
        }),
    ];
    check(&res, &want, 1e-12);
}

#[test]
fn control_flow_regions_and_random_bits() {
    let mut r = rng(8);
    let x = Host::random(&[3], -1.0, 1.0, &mut r);
    let inputs = [Lit::from_host(&x), Lit::u64(&[2], &[42, 7])];
    let res = run("control", &inputs, |g, p| {
        let x = &p[0];
        let (state, bits) = g.rng_bit_generator(
            &p[1],
            RngAlgorithm::ThreeFry,
            &TensorType::new(DType::U32, &[64]),
        );
        let (_, bits_again) = g.rng_bit_generator(
            &p[1],
            RngAlgorithm::ThreeFry,
            &TensorType::new(DType::U32, &[64]),
        );
        let barrier = g.optimization_barrier(&[x.clone(), x.exp()]);
        let n = g.scalar_i64(0, DType::I32);
        let looped = g.while_loop(
            &[n, x.clone()],
            |g, c| c[0].lt(g.scalar_i64(5, DType::I32)),
            |_, c| vec![&c[0] + 1, &c[1] * 2.0],
        );
        let remat = g.remat("block", std::slice::from_ref(x), |_, a| {
            vec![a[0].tanh() * 3.0]
        });
        let custom = g.custom_vjp(
            "double",
            std::slice::from_ref(x),
            |_, a| vec![&a[0] * 2.0],
            |_, _, _, c| vec![c[0].clone()],
        );
        vec![
            ("state", state),
            ("bits", bits.clone()),
            (
                "same_bits",
                bits.eq(&bits_again).cast(DType::I32).min(&[0], false),
            ),
            ("barrier0", barrier[0].clone()),
            ("barrier1", barrier[1].clone()),
            ("count", looped[0].clone()),
            ("looped", looped[1].clone()),
            ("stop_gradient", x.stop_gradient()),
            ("remat", remat[0].clone()),
            ("custom_vjp", custom[0].clone()),
        ]
    });
    assert_ne!(res[0].1.u64s(), vec![42, 7], "the generator state advances");
    let bits = res[1].1.u32s();
    let ones: u32 = bits.iter().map(|b| b.count_ones()).sum();
    assert!(
        (900..1150).contains(&ones),
        "64 random words have about 1024 one bits, got {ones}"
    );
    let want = vec![
        Host {
            shape: vec![],
            data: vec![1.0],
        },
        x.clone(),
        x.map(f64::exp),
        Host {
            shape: vec![],
            data: vec![5.0],
        },
        x.map(|v| v * 32.0),
        x.clone(),
        x.map(|v| v.tanh() * 3.0),
        x.map(|v| v * 2.0),
    ];
    check(&res[2..], &want, 1e-12);
}

#[test]
fn sharded_program_with_constraint_and_donation_on_a_2x2_mesh() {
    let mesh = Mesh::new(&[("data", 2), ("model", 2)], 4).unwrap();
    let g = Graph::named("sharded");
    let spec = |a: &[Option<&str>]| PartitionSpec::from_axes(a);
    let x = g.param_sharded("x", f64t(&[8, 4]), spec(&[Some("data"), Some("model")]));
    let w = g.param_sharded("w", f64t(&[4, 6]), spec(&[Some("model"), None]));
    let y = x
        .matmul(&w)
        .tanh()
        .sharding_constraint(spec(&[Some("data"), None]));
    let w2 = &w * 0.5;
    let mut f = g.finish(&[("y", &y), ("w", &w2)]).unwrap();
    f.donate("w", "w").unwrap();
    f.set_output_sharding("y", spec(&[Some("data"), None]))
        .unwrap();
    f.set_output_sharding("w", spec(&[Some("model"), None]))
        .unwrap();
    let program = Program::with_options(f, &PrintOptions::with_mesh(mesh.clone()), 4);
    assert!(program.text.contains("sdy.sharding_constraint"));

    let mut r = rng(9);
    let xh = Host::random(&[8, 4], -1.0, 1.0, &mut r);
    let wh = Host::random(&[4, 6], -1.0, 1.0, &mut r);
    let block = |h: &Host, rows: (i64, i64), cols: (i64, i64)| {
        Host::from_fn(&[rows.1 - rows.0, cols.1 - cols.0], |i| {
            h.at(&[rows.0 + i[0], cols.0 + i[1]])
        })
    };
    let per_device: Vec<Vec<(Lit, bool)>> = (0..4)
        .map(|d| {
            let c = mesh.coords(d);
            let (dr, mc) = (c[0] as i64, c[1] as i64);
            vec![
                (
                    Lit::from_host(&block(&xh, (4 * dr, 4 * dr + 4), (2 * mc, 2 * mc + 2))),
                    false,
                ),
                (
                    Lit::from_host(&block(&wh, (2 * mc, 2 * mc + 2), (0, 6))),
                    true,
                ),
            ]
        })
        .collect();
    let out = program.run_devices(per_device);
    let dd = DotDims {
        lhs_contract: vec![1],
        rhs_contract: vec![0],
        ..Default::default()
    };
    let y = host_dot(&xh, &wh, &dd).map(f64::tanh);
    for (d, outs) in out.iter().enumerate() {
        let c = mesh.coords(d);
        assert_close(
            &format!("y on device {d}"),
            &outs[0],
            &block(&y, (4 * c[0] as i64, 4 * c[0] as i64 + 4), (0, 6)),
            1e-12,
        );
        let wd = block(&wh, (2 * c[1] as i64, 2 * c[1] as i64 + 2), (0, 6)).map(|v| v * 0.5);
        assert_close(&format!("w on device {d}"), &outs[1], &wd, 0.0);
    }
    let _ = client();
}

#[test]
fn custom_call_prints_but_needs_a_registered_target() {
    // The CPU plugin has no target of this name: compiling fails with the plugin naming it,
    // which shows that the printed call itself was accepted up to target lookup.
    let g = Graph::named("custom_call");
    let x = g.param("x", f64t(&[4]));
    let mut spec = CustomCallSpec::new("vishwam_test_missing_target", vec![f64t(&[4])]);
    spec.backend_config = "{\"scale\": 0.5}".into();
    let y = g.custom_call(spec, std::slice::from_ref(&x));
    let text = g
        .finish(&[("y", &y[0])])
        .unwrap()
        .to_stablehlo(&PrintOptions::default())
        .unwrap();
    let err = client()
        .compile(&text, &vishwam::runtime::CompileOptions::for_partitions(1))
        .err()
        .expect("no such target");
    assert!(
        err.to_string().contains("vishwam_test_missing_target"),
        "{err}"
    );
}
