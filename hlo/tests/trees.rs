//! Trees of tensors: stable names, rebuilding, and the loop, remat, custom-gradient and
//! function forms over trees. Numbers through XLA are checked in the workspace's tests
//! (`tests/hlo_grads.rs`); here, structure and errors.

use vishwam_hlo::{tree_struct, DType, Graph, HloError, Prim, Tensor, TensorMap, TensorType, Tree};

fn t(shape: &[i64]) -> TensorType {
    TensorType::new(DType::F32, shape)
}

struct Moments {
    m: TensorMap,
    v: TensorMap,
}
tree_struct!(Moments { m => "opt.m", v => "opt.v" });

struct State {
    params: TensorMap,
    opt: Moments,
    step: Tensor,
    scale: Option<(Tensor, Tensor)>,
    history: Vec<Tensor>,
}
tree_struct!(State {
    params => "params",
    opt => "",
    step,
    scale => "loss_scale",
    history => "fp8.layers",
});

fn state(g: &Graph, with_scale: bool) -> State {
    let map = |prefix: &str| -> TensorMap {
        ["b", "a"]
            .iter()
            .map(|k| (k.to_string(), g.param(&format!("{prefix}{k}"), t(&[2]))))
            .collect()
    };
    State {
        params: map("p"),
        opt: Moments {
            m: map("m"),
            v: map("v"),
        },
        step: g.param("step", TensorType::new(DType::I32, &[])),
        scale: with_scale.then(|| (g.param("s", t(&[])), g.param("n", t(&[])))),
        history: vec![g.param("h0", t(&[3])), g.param("h1", t(&[3]))],
    }
}

#[test]
fn leaves_are_named_by_their_paths_in_a_fixed_order() {
    let g = Graph::new();
    let names: Vec<String> = state(&g, true)
        .flatten()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        names,
        [
            "params.a",
            "params.b",
            "opt.m.a",
            "opt.m.b",
            "opt.v.a",
            "opt.v.b",
            "step",
            "loss_scale.0",
            "loss_scale.1",
            "fp8.layers.0",
            "fp8.layers.1",
        ]
    );
    // `None` contributes no leaves.
    assert_eq!(state(&g, false).leaves().len(), 9);
}

#[test]
fn rebuilding_checks_the_number_and_types_of_the_leaves() {
    let g = Graph::new();
    let s = state(&g, false);
    let doubled: Vec<Tensor> = s.leaves().iter().map(|x| x + x).collect();
    let r = s.rebuild(doubled.clone()).unwrap();
    assert_eq!(r.step.id(), doubled[6].id());
    assert_eq!(r.opt.v.get("b").unwrap().id(), doubled[5].id());

    let err = s.rebuild(doubled[1..].to_vec()).err().unwrap().to_string();
    assert!(err.contains("9 leaves, 8 were given"), "{err}");
    let mut wrong = doubled;
    wrong[6] = g.param("f", t(&[]));
    let err = s.rebuild(wrong).err().unwrap().to_string();
    assert!(err.contains("leaf `step` is i32[]"), "{err}");
}

#[test]
fn a_loop_carries_a_tree_and_returns_the_body_error() {
    let g = Graph::new();
    let s = state(&g, true);
    let out = g
        .while_tree(
            &s,
            |_, c| Ok(c.step.lt(4i64)),
            |_, c| {
                Ok(State {
                    step: &c.step + 1i64,
                    history: c.history.iter().map(|h| h * 2.0).collect(),
                    params: c.params.clone(),
                    opt: Moments {
                        m: c.opt.m.clone(),
                        v: c.opt.v.clone(),
                    },
                    scale: c.scale.clone(),
                })
            },
        )
        .unwrap();
    let f = g.finish_tree(&out).unwrap();
    assert_eq!(f.outputs[6].name, "step");
    assert!(f.eqns.iter().any(|e| matches!(e.prim, Prim::While { .. })));

    // An error inside the body comes out of the loop, not through a side channel.
    let g = Graph::new();
    let s = state(&g, false);
    let err = g
        .while_tree(
            &s,
            |_, c| Ok(c.step.lt(4i64)),
            |_, c| {
                c.params.get("missing")?;
                Ok(State {
                    ..state(&Graph::new(), false)
                })
            },
        )
        .err()
        .unwrap();
    assert!(matches!(err, HloError::UnknownName { .. }), "{err}");

    // A body that changes the structure is refused.
    let g = Graph::new();
    let s = state(&g, false);
    let err = g
        .while_tree(&s, |_, c| Ok(c.step.lt(4i64)), |g, _| Ok(state(g, true)))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("9 leaves, 11 were given"), "{err}");
}

#[test]
fn remat_and_custom_vjp_take_and_return_trees() {
    let g = Graph::new();
    let x = g.param("x", t(&[4]));
    let w = g.param("w", t(&[4]));
    let mut inputs = TensorMap::new();
    inputs.insert("x", x.clone());
    inputs.insert("w", w.clone());
    let (y, z) = g
        .remat_tree("block", &inputs, |_, i| {
            let (x, w) = (i.get("x")?, i.get("w")?);
            Ok(((x * w).tanh(), x.exp()))
        })
        .unwrap();
    assert!(g
        .remat_tree("bad", &inputs, |_, i| i.get("nope").cloned())
        .is_err());

    // Straight-through sign: forward takes the sign, backward passes the cotangent unchanged.
    let rounded = g
        .custom_vjp_tree(
            "ste",
            &(y.clone(),),
            |_, a: &(Tensor,)| Ok((a.0.sign(),)),
            |_, _, _, ct: &(Tensor,)| Ok((ct.0.clone(),)),
        )
        .unwrap();
    let loss = (rounded.0 + z).sum_all();
    let grads = g.grad(&loss, &[x, w]).unwrap();
    let f = g
        .finish_tree(
            &[
                ("gx".to_string(), grads[0].clone()),
                ("gw".into(), grads[1].clone()),
            ]
            .into_iter()
            .collect::<TensorMap>(),
        )
        .unwrap();
    let names: Vec<&str> = f.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["gw", "gx"]);
    assert!(f
        .eqns
        .iter()
        .any(|e| matches!(e.prim, Prim::OptimizationBarrier)));
}

#[test]
fn a_function_takes_its_inputs_as_a_tree() {
    let template = state(&Graph::new(), true);
    let g = Graph::new();
    let s = g
        .input_tree("", &template, |name| {
            name.starts_with("params.")
                .then(vishwam_hlo::PartitionSpec::default)
        })
        .unwrap();
    let f = g.finish_tree(&s).unwrap();
    let names: Vec<&str> = f.params.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names[..3], ["params.a", "params.b", "opt.m.a"]);
    assert!(f.params[0].sharding.is_some() && f.params[2].sharding.is_none());
}

#[test]
fn a_shape_error_inside_a_region_surfaces_when_the_function_is_finished() {
    let g = Graph::new();
    let a = g.param("a", t(&[2, 3]));
    let b = g.param("b", t(&[4, 5]));
    // The closure itself succeeds; the matmul inside it records a shape error.
    let out = g
        .remat_tree("bad_matmul", &(a, b), |_, (a, b)| Ok(a.matmul(b)))
        .unwrap();
    let err = g.finish_tree(&out).err().unwrap().to_string();
    assert!(err.contains("bad_matmul"), "{err}");
}
