//! Function-level autodiff: replay a [`Func`] into a fresh graph and run the in-graph core.

use crate::error::{HloError, Result};
use crate::graph::Graph;
use crate::ir::Func;
use crate::Tensor;

struct Replayed {
    graph: Graph,
    params: Vec<Tensor>,
    outputs: Vec<Tensor>,
    wrt: Vec<usize>,
}

fn replay(f: &Func, wrt: &[&str]) -> Result<Replayed> {
    let wrt = wrt
        .iter()
        .map(|w| f.param_index(w))
        .collect::<Result<Vec<_>>>()?;
    let (graph, params, outputs) = Graph::from_func(f)?;
    Ok(Replayed {
        graph,
        params,
        outputs,
        wrt,
    })
}

/// Finishes a transformed graph: the listed outputs, original output shardings kept, and
/// each `grad.<param>` sharded like its parameter.
fn finish(f: &Func, r: &Replayed, keep_outputs: bool, grads: &[Tensor]) -> Result<Func> {
    let mut named: Vec<(String, &Tensor)> = Vec::new();
    if keep_outputs {
        named.extend(
            f.outputs
                .iter()
                .zip(&r.outputs)
                .map(|(o, t)| (o.name.clone(), t)),
        );
    }
    let grad_names: Vec<String> = r
        .wrt
        .iter()
        .map(|&p| format!("grad.{}", f.params[p].name))
        .collect();
    named.extend(grad_names.iter().cloned().zip(grads));
    let refs: Vec<(&str, &Tensor)> = named.iter().map(|(n, t)| (n.as_str(), *t)).collect();
    let mut out = r.graph.finish(&refs)?;
    let first_grad = if keep_outputs { f.outputs.len() } else { 0 };
    if keep_outputs {
        for (o, src) in out.outputs.iter_mut().zip(&f.outputs) {
            o.sharding = src.sharding.clone();
        }
    } else {
        for p in &mut out.params {
            p.donate_to = None;
        }
    }
    for (k, &p) in r.wrt.iter().enumerate() {
        out.outputs[first_grad + k].sharding = f.params[p].sharding.clone();
    }
    out.check()?;
    Ok(out)
}

/// The vector-Jacobian product of `f`: parameters are `f`'s followed by `ct.<output>` for
/// each float output; outputs are `f`'s followed by `grad.<param>` for each of `wrt`.
pub fn vjp(f: &Func, wrt: &[&str]) -> Result<Func> {
    let r = replay(f, wrt)?;
    let (mut outs, mut cts) = (Vec::new(), Vec::new());
    for (o, t) in f.outputs.iter().zip(&r.outputs) {
        if t.dtype().is_float() {
            cts.push(r.graph.param(&format!("ct.{}", o.name), t.ty().clone()));
            outs.push(t.clone());
        }
    }
    let wrt_t: Vec<Tensor> = r.wrt.iter().map(|&p| r.params[p].clone()).collect();
    let grads = r.graph.vjp(&outs, &cts, &wrt_t)?;
    finish(f, &r, true, &grads)
}

/// The gradient of the scalar output `output` of `f` with respect to the parameters `wrt`:
/// a function of `f`'s parameters returning `grad.<param>` for each.
pub fn grad(f: &Func, output: &str, wrt: &[&str]) -> Result<Func> {
    let (r, grads) = scalar_grads(f, output, wrt)?;
    finish(f, &r, false, &grads)
}

/// Like [`grad`], but the result returns `f`'s outputs followed by the gradients.
pub fn value_and_grad(f: &Func, output: &str, wrt: &[&str]) -> Result<Func> {
    let (r, grads) = scalar_grads(f, output, wrt)?;
    finish(f, &r, true, &grads)
}

fn scalar_grads(f: &Func, output: &str, wrt: &[&str]) -> Result<(Replayed, Vec<Tensor>)> {
    let o = f.output_index(output)?;
    let r = replay(f, wrt)?;
    let loss = &r.outputs[o];
    if loss.rank() != 0 || !loss.dtype().is_float() {
        return Err(HloError::Grad {
            detail: format!(
                "output `{output}` is {}, but grad needs a float scalar",
                loss.ty()
            ),
        });
    }
    let wrt_t: Vec<Tensor> = r.wrt.iter().map(|&p| r.params[p].clone()).collect();
    let grads = r.graph.grad(loss, &wrt_t)?;
    Ok((r, grads))
}
