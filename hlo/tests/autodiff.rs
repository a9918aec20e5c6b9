//! Structure of the backward pass: symbolic zeros, fan-out accumulation, stop_gradient,
//! integer inputs, errors for non-differentiable primitives, remat and custom_vjp. Every
//! function produced here goes through `finish`, which runs the checker.

use vishwam_hlo::{
    grad, value_and_grad, vjp, BinaryOp, CustomCallSpec, DType, Func, Graph, HloError, Prim,
    TensorType,
};

fn t(shape: &[i64]) -> TensorType {
    TensorType::new(DType::F32, shape)
}

fn count(f: &Func, pred: impl Fn(&Prim) -> bool) -> usize {
    f.eqns.iter().filter(|e| pred(&e.prim)).count()
}

fn adds(f: &Func) -> usize {
    count(f, |p| matches!(p, Prim::Binary(BinaryOp::Add)))
}

#[test]
fn unrelated_inputs_get_explicit_zeros_and_unrelated_branches_cost_nothing() {
    let g = Graph::new();
    let x = g.param("x", t(&[3]));
    let z = g.param("z", t(&[2, 2]));
    let _unused = z.exp().tanh();
    let loss = x.sum_all();
    let grads = g.grad(&loss, &[x.clone(), z.clone()]).unwrap();
    let f = g.finish(&[("gx", &grads[0]), ("gz", &grads[1])]).unwrap();
    // d sum / dx is a broadcast of the seed; dz is a zeros constant; nothing else survives.
    assert!(matches!(
        f.eqns.last().map(|e| &e.prim),
        Some(Prim::Constant { .. })
    ));
    assert_eq!(count(&f, |p| matches!(p, Prim::Unary(_))), 0);
    assert_eq!(f.eqns.len(), 3, "{:?}", f.eqns);
}

#[test]
fn fan_out_accumulates_once_per_extra_use() {
    let g = Graph::new();
    let x = g.param("x", t(&[3]));
    let loss = (&x * &x + &x).sum_all();
    let gx = g.grad(&loss, std::slice::from_ref(&x)).unwrap();
    let f = g.finish(&[("gx", &gx[0])]).unwrap();
    // x is used three times: two additions accumulate its three cotangent contributions.
    assert_eq!(adds(&f), 2);
}

#[test]
fn stop_gradient_blocks_and_integer_values_carry_nothing() {
    let g = Graph::new();
    let x = g.param("x", t(&[3]));
    let loss = (x.stop_gradient() * &x).sum_all();
    let gx = g.grad(&loss, std::slice::from_ref(&x)).unwrap();
    let f = g.finish(&[("gx", &gx[0])]).unwrap();
    assert_eq!(adds(&f), 0, "only one path reaches x");

    let g = Graph::new();
    let table = g.param("table", t(&[10, 4]));
    let ids = g.param("ids", TensorType::new(DType::I32, &[2, 3]));
    let loss = table.take(&ids, 0).tanh().sum_all();
    let gt = g.grad(&loss, std::slice::from_ref(&table)).unwrap();
    let f = g.finish(&[("gt", &gt[0])]).unwrap();
    assert_eq!(count(&f, |p| matches!(p, Prim::ScatterAdd { .. })), 1);
    let err = g.grad(&loss, &[ids]).unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot differentiate with respect to i32[2,3]"),
        "{err}"
    );
}

#[test]
fn non_differentiable_prims_fail_only_when_a_cotangent_flows() {
    let g = Graph::new();
    let x = g.param("x", t(&[3]));
    let n = g.scalar_i64(0, DType::I32);
    let looped = g.while_loop(
        &[n, x.clone()],
        |g, c| c[0].lt(g.scalar_i64(3, DType::I32)),
        |_, c| vec![&c[0] + 1, c[1].sin()],
    );
    // The loop's integer counter does not need a cotangent: differentiating through x alone works.
    let ok = (x.exp() + looped[0].cast(DType::F32)).sum_all();
    assert!(g.grad(&ok, std::slice::from_ref(&x)).is_ok());
    let err = g
        .grad(&looped[1].sum_all(), std::slice::from_ref(&x))
        .unwrap_err();
    assert!(
        matches!(err, HloError::NotDifferentiable { ref prim, .. } if prim == "while"),
        "{err}"
    );

    let g = Graph::new();
    let x = g.param("x", t(&[2, 3]));
    let init = g.scalar(1.0, DType::F32);
    let product = g.reduce_with(std::slice::from_ref(&x), &[init], &[1], |_, a, b| {
        vec![&a[0] * &b[0]]
    });
    let err = g
        .grad(&product[0].sum_all(), std::slice::from_ref(&x))
        .unwrap_err();
    assert!(
        matches!(err, HloError::NotDifferentiable { ref prim, .. } if prim == "reduce_with"),
        "{err}"
    );

    let g = Graph::new();
    let x = g.param("x", t(&[3]));
    let spec = |target: &str| CustomCallSpec::new(target, vec![t(&[3])]);
    let y = g.custom_call(spec("my_kernel"), std::slice::from_ref(&x));
    let err = g
        .grad(&y[0].sum_all(), std::slice::from_ref(&x))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("target `my_kernel` has no gradient rule"),
        "{err}"
    );

    // Wrapped in a custom vjp, the same kernel is differentiable through its backward rule.
    let y = g.custom_vjp(
        "kernel",
        std::slice::from_ref(&x),
        |g, xs| g.custom_call(spec("my_kernel"), xs),
        |g, _xs, _ys, cts| g.custom_call(spec("my_kernel_bwd"), cts),
    );
    let gx = g.grad(&y[0].sum_all(), std::slice::from_ref(&x)).unwrap();
    let f = g.finish(&[("gx", &gx[0])]).unwrap();
    let targets: Vec<&str> = f
        .eqns
        .iter()
        .filter_map(|e| match &e.prim {
            Prim::CustomCall(s) => Some(s.target.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(targets, ["my_kernel_bwd"]);
}

#[test]
fn custom_call_options_are_validated_and_printed() {
    let g = Graph::new();
    let x = g.param("x", t(&[2, 3]));
    let mut spec = CustomCallSpec::new("__cudnn$fmhaSoftmax", vec![t(&[3, 2]), t(&[])]);
    spec.backend_config = "{\"mask_type\": \"CAUSAL\"}".into();
    spec.operand_layouts = vec![vec![0, 1]];
    spec.result_layouts = vec![vec![1, 0], vec![]];
    let out = g.custom_call(spec.clone(), std::slice::from_ref(&x));
    let f = g.finish(&[("o", &out[0]), ("s", &out[1])]).unwrap();
    let text = f
        .to_stablehlo(&vishwam_hlo::PrintOptions::default())
        .unwrap();
    assert!(text.contains(
        r#"%0:2 = stablehlo.custom_call @__cudnn$fmhaSoftmax(%arg0) {backend_config = "{\"mask_type\": \"CAUSAL\"}", has_side_effect = false, api_version = 2 : i32, operand_layouts = [dense<[0, 1]> : tensor<2xindex>], result_layouts = [dense<[1, 0]> : tensor<2xindex>, dense<> : tensor<0xindex>]} : (tensor<2x3xf32>) -> (tensor<3x2xf32>, tensor<f32>)"#
    ), "{text}");

    for bad in [
        CustomCallSpec {
            api_version: 4,
            ..spec.clone()
        },
        CustomCallSpec {
            operand_layouts: vec![vec![0, 0]],
            ..spec.clone()
        },
        CustomCallSpec {
            result_layouts: vec![vec![1, 0]],
            ..spec
        },
    ] {
        let g = Graph::new();
        let x = g.param("x", t(&[2, 3]));
        g.custom_call(bad, std::slice::from_ref(&x));
        assert!(g
            .check_error()
            .unwrap_err()
            .to_string()
            .starts_with("custom_call: `__cudnn$fmhaSoftmax`: "));
    }
}

#[test]
fn function_transforms_produce_checked_functions() {
    let g = Graph::named("f");
    let x = g.param("x", t(&[4, 3]));
    let w = g.param("w", t(&[3, 2]));
    let ids = g.param("ids", TensorType::new(DType::I32, &[4]));
    let y = x.matmul(&w).tanh();
    let loss = y.square().mean_all();
    let mut f = g
        .finish(&[("loss", &loss), ("y", &y), ("ids", &ids)])
        .unwrap();
    f.set_param_sharding(
        "w",
        vishwam_hlo::PartitionSpec::from_axes(&[None, Some("model")]),
    )
    .unwrap();

    let vg = value_and_grad(&f, "loss", &["w", "x"]).unwrap();
    let names: Vec<&str> = vg.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["loss", "y", "ids", "grad.w", "grad.x"]);
    assert_eq!(
        vg.outputs[3].sharding, f.params[1].sharding,
        "grads are sharded like params"
    );
    vg.check().unwrap();

    let gr = grad(&f, "loss", &["w"]).unwrap();
    assert_eq!(gr.outputs.len(), 1);
    assert_eq!(gr.value_type(gr.outputs[0].value), &t(&[3, 2]));

    let v = vjp(&f, &["x"]).unwrap();
    let params: Vec<&str> = v.params.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(params, ["x", "w", "ids", "ct.loss", "ct.y"]);

    assert!(grad(&f, "y", &["x"])
        .unwrap_err()
        .to_string()
        .contains("needs a float scalar"));
    assert!(grad(&f, "loss", &["nope"]).is_err());
}

#[test]
fn remat_on_and_off_emit_the_same_backward_computation() {
    let build = |remat: bool| {
        let g = Graph::new();
        let x = g.param("x", t(&[4, 8]));
        let w = g.param("w", t(&[8, 8]));
        let mut h = x.clone();
        for _ in 0..3 {
            let layer =
                |_: &Graph, a: &[vishwam_hlo::Tensor]| vec![&a[0] + a[0].matmul(&a[1]).tanh()];
            h = if remat {
                g.remat("layer", &[h.clone(), w.clone()], layer)[0].clone()
            } else {
                layer(&g, &[h.clone(), w.clone()])[0].clone()
            };
        }
        let loss = h.square().mean_all();
        let gw = g.grad(&loss, &[w.clone(), x.clone()]).unwrap();
        g.finish(&[("loss", &loss), ("gw", &gw[0]), ("gx", &gw[1])])
            .unwrap()
    };
    let (on, off) = (build(true), build(false));
    let barriers = |f: &Func| count(f, |p| matches!(p, Prim::OptimizationBarrier));
    assert_eq!(barriers(&on), 3);
    assert_eq!(barriers(&off), 0);
    // Off: 3 forward + 6 backward matmuls. On: the forward ones live inside the Remat bodies,
    // and the backward has 3 recomputed + 6 backward matmuls.
    let dots = |f: &Func| count(f, |p| matches!(p, Prim::DotGeneral { .. }));
    assert_eq!(dots(&off), 3 * 3);
    assert_eq!(count(&on, |p| matches!(p, Prim::Remat { .. })), 3);
    assert_eq!(dots(&on), 3 * 3);
}

#[test]
fn nested_remat_regions_differentiate() {
    let g = Graph::new();
    let x = g.param("x", t(&[5]));
    let y = g.remat("outer", std::slice::from_ref(&x), |g, a| {
        let inner = g.remat("inner", &[a[0].clone()], |_, b| vec![b[0].sin() * &b[0]]);
        vec![inner[0].exp()]
    });
    let gx = g.grad(&y[0].sum_all(), std::slice::from_ref(&x)).unwrap();
    let f = g.finish(&[("gx", &gx[0])]).unwrap();
    // The outer recomputation re-emits the inner region, which is recomputed again.
    assert_eq!(count(&f, |p| matches!(p, Prim::OptimizationBarrier)), 2);
    assert_eq!(count(&f, |p| matches!(p, Prim::Remat { .. })), 1);
}

#[test]
fn multi_output_cotangents_may_be_partly_zero() {
    let g = Graph::new();
    let x = g.param("x", t(&[3]));
    let b = g.optimization_barrier(&[x.exp(), x.sin()]);
    let gx = g.grad(&b[1].sum_all(), std::slice::from_ref(&x)).unwrap();
    let f = g.finish(&[("gx", &gx[0])]).unwrap();
    assert_eq!(
        count(&f, |p| matches!(p, Prim::Unary(vishwam_hlo::UnaryOp::Exp))),
        0
    );
    assert_eq!(
        count(&f, |p| matches!(p, Prim::Unary(vishwam_hlo::UnaryOp::Cos))),
        1
    );
}
