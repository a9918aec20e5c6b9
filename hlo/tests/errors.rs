//! Shape errors (recorded at the first failing op, reported by `finish`) and the checker's
//! rejection of hand-built invalid graphs.

use vishwam_hlo::{
    BinaryOp, DType, Eqn, Func, Graph, HloError, Output, Param, Prim, TensorType, UnaryOp, ValueId,
};

fn t(shape: &[i64]) -> TensorType {
    TensorType::new(DType::F32, shape)
}

#[test]
fn matmul_mismatch_names_the_op_and_both_shapes() {
    let g = Graph::new();
    let x = g.param("x", t(&[8, 4]));
    let w = g.param("w", t(&[5, 6]));
    let y = x.matmul(&w);
    assert!(y.is_poisoned());
    let err = g.finish(&[("y", &y)]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "dot_general: lhs f32[8,4] contracting dim 1 (size 4) does not match rhs f32[5,6] dim 0 (size 5)"
    );
    assert!(matches!(err, HloError::Shape { ref op, .. } if op == "dot_general"));
}

#[test]
fn first_error_is_kept_and_poison_propagates() {
    let g = Graph::new();
    let x = g.param("x", t(&[2, 3]));
    let y = g.param("y", t(&[4]));
    let bad = &x + &y;
    // Later ops on the poisoned result add no errors, nor do later unrelated mistakes.
    let worse = bad.exp().matmul(&y).sum_all();
    let _other = x.reshape(&[7]);
    assert!(worse.is_poisoned());
    let err = g.check_error().unwrap_err();
    assert_eq!(
        err.to_string(),
        "add: shapes f32[2,3] and f32[4] do not broadcast"
    );
    assert_eq!(g.finish(&[("out", &worse)]).unwrap_err(), err);
}

#[test]
fn dtype_mismatch_and_bad_axes_are_reported() {
    let g = Graph::new();
    let x = g.param("x", t(&[2, 3]));
    let h = g.param("h", TensorType::new(DType::BF16, &[2, 3]));
    let _ = &x * &h;
    assert_eq!(
        g.check_error().unwrap_err().to_string(),
        "multiply: operand dtypes differ: f32[2,3] vs bf16[2,3] (cast one with .cast())"
    );
    let g = Graph::new();
    let x = g.param("x", t(&[2, 3]));
    let _ = x.sum(&[2], false);
    assert_eq!(
        g.check_error().unwrap_err().to_string(),
        "reduce: axis 2 is out of range for f32[2,3]"
    );
    let g = Graph::new();
    let x = g.param("x", t(&[2, 3]));
    let _ = x.reshape(&[4, 2]);
    assert_eq!(
        g.check_error().unwrap_err().to_string(),
        "reshape: cannot reshape f32[2,3] (6 elements) to f32[4,2] (8 elements)"
    );
}

#[test]
fn tensors_of_another_graph_are_rejected() {
    let (g1, g2) = (Graph::new(), Graph::new());
    let a = g1.param("a", t(&[2]));
    let b = g2.param("b", t(&[2]));
    let _ = &a + &b;
    assert!(matches!(
        g1.check_error(),
        Err(HloError::GraphMismatch { .. })
    ));
    assert!(g2.check_error().is_ok());
}

#[test]
fn errors_inside_regions_name_the_region() {
    let g = Graph::new();
    let x = g.param("x", t(&[3]));
    let out = g.remat("block", &[x], |g, xs| vec![&xs[0] + &g.zeros(&t(&[4]))]);
    assert_eq!(out.len(), 1);
    assert!(out[0].is_poisoned());
    assert_eq!(
        g.check_error().unwrap_err().to_string(),
        "remat `block`/add: shapes f32[3] and f32[4] do not broadcast"
    );
}

/// A valid function `y = exp(x)` built by hand, to be corrupted by the tests below.
fn hand_built() -> Func {
    Func {
        name: "hand".into(),
        params: vec![Param {
            name: "x".into(),
            value: ValueId(0),
            ty: t(&[2]),
            sharding: None,
            donate_to: None,
        }],
        eqns: vec![Eqn {
            prim: Prim::Unary(UnaryOp::Exp),
            inputs: vec![ValueId(0)],
            outputs: vec![ValueId(1)],
        }],
        types: vec![t(&[2]), t(&[2])],
        outputs: vec![Output {
            name: "y".into(),
            value: ValueId(1),
            sharding: None,
        }],
    }
}

#[test]
fn functions_can_be_shared_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Func>();
    send_sync::<HloError>();
}

#[test]
fn checker_accepts_valid_and_rejects_invalid_graphs() {
    assert!(hand_built().check().is_ok());

    let mut f = hand_built();
    f.eqns[0].inputs = vec![ValueId(1)];
    assert_eq!(
        f.check().unwrap_err().to_string(),
        "invalid graph `hand` at equation 0: exponential uses %1 before it is defined"
    );

    let mut f = hand_built();
    f.types[1] = t(&[3]);
    assert_eq!(
        f.check().unwrap_err().to_string(),
        "invalid graph `hand` at equation 0: exponential results are typed (f32[3]) but infer to (f32[2])"
    );

    let mut f = hand_built();
    f.eqns.push(Eqn {
        prim: Prim::Binary(BinaryOp::Add),
        inputs: vec![ValueId(0), ValueId(0)],
        outputs: vec![ValueId(1)],
    });
    assert_eq!(
        f.check().unwrap_err().to_string(),
        "invalid graph `hand` at equation 1: value %1 is defined twice"
    );

    let mut f = hand_built();
    f.eqns[0].prim = Prim::Binary(BinaryOp::Add);
    assert_eq!(
        f.check().unwrap_err().to_string(),
        "invalid graph `hand` at equation 0: add: expects 2 operands, got 1"
    );

    let mut f = hand_built();
    f.outputs[0].value = ValueId(7);
    assert!(f
        .check()
        .unwrap_err()
        .to_string()
        .contains("output `y` returns undefined value %7"));

    let mut f = hand_built();
    f.params[0].ty = TensorType::new(DType::F32, &[3]);
    f.types[0] = TensorType::new(DType::F32, &[3]);
    f.params[0].donate_to = Some(0);
    assert!(f.check().is_err());
    let mut f = hand_built();
    f.donate("x", "y").unwrap();
    assert!(f.check().is_ok());
    assert!(f
        .donate("x", "nope")
        .unwrap_err()
        .to_string()
        .contains("no output named `nope`; available: [y]"));
}

#[test]
fn reduce_with_checks_its_operands_initial_values_and_combiner() {
    let g = Graph::new();
    let x = g.param("x", t(&[2, 3]));
    let y = g.param("y", t(&[3, 2]));
    let zero = g.scalar(0.0, DType::F32);
    let _ = g.reduce_with(
        &[x.clone(), y],
        &[zero.clone(), zero.clone()],
        &[1],
        |_, a, _| a.to_vec(),
    );
    assert_eq!(
        g.check_error().unwrap_err().to_string(),
        "reduce_with: operands must share a shape, got (f32[2,3], f32[3,2])"
    );

    let g = Graph::new();
    let x = g.param("x", t(&[2, 3]));
    let zero = g.scalar(0.0, DType::F32);
    let _ = g.reduce_with(&[x.clone(), x.clone(), x], &[zero], &[1], |_, a, _| {
        a.to_vec()
    });
    assert_eq!(
        g.check_error().unwrap_err().to_string(),
        "reduce_with: needs one initial value per operand, got 3 operands and 1 initial values"
    );

    let g = Graph::new();
    let x = g.param("x", t(&[2, 3]));
    let wide = g.scalar(0.0, DType::F64);
    let _ = g.reduce_with(std::slice::from_ref(&x), &[wide], &[1], |_, a, _| {
        a.to_vec()
    });
    assert_eq!(
        g.check_error().unwrap_err().to_string(),
        "reduce_with: initial values must be scalars of the operands' dtypes (f32[]), got (f64[])"
    );

    let g = Graph::new();
    let x = g.param("x", t(&[2, 3]));
    let zero = g.scalar(0.0, DType::F32);
    let _ = g.reduce_with(std::slice::from_ref(&x), &[zero], &[1], |_, a, b| {
        vec![a[0].clone(), b[0].clone()]
    });
    assert_eq!(
        g.check_error().unwrap_err().to_string(),
        "reduce_with: the combiner returns (f32[], f32[]) but the accumulators are (f32[])"
    );
}
