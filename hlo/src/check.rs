//! The graph checker: validates any function, including every one autodiff produces.

use crate::error::{HloError, Result};
use crate::infer::{infer, list};
use crate::ir::{Func, Prim};
use std::collections::HashSet;

impl Func {
    /// Validates the function: parameter and output names, SSA order (every value defined
    /// once, before use), every equation's result types re-inferred, donations and
    /// sharding ranks, and every sub-function, recursively.
    pub fn check(&self) -> Result<()> {
        let err = |eqn: Option<usize>, detail: String| HloError::Check {
            func: self.name.clone(),
            eqn,
            detail,
        };
        let n = self.types.len();
        let mut defined = vec![false; n];
        let define =
            |defined: &mut Vec<bool>, id: crate::ValueId, at: Option<usize>| -> Result<()> {
                match defined.get_mut(id.index()) {
                    None => Err(err(
                        at,
                        format!("value %{} has no type (only {n} values)", id.0),
                    )),
                    Some(true) => Err(err(at, format!("value %{} is defined twice", id.0))),
                    Some(d) => {
                        *d = true;
                        Ok(())
                    }
                }
            };
        let mut names = HashSet::new();
        for p in &self.params {
            if !names.insert(p.name.as_str()) {
                return Err(err(None, format!("two parameters are named `{}`", p.name)));
            }
            define(&mut defined, p.value, None)?;
            if &p.ty != self.value_type(p.value) {
                return Err(err(
                    None,
                    format!(
                        "parameter `{}` declares {} but its value has type {}",
                        p.name,
                        p.ty,
                        self.value_type(p.value)
                    ),
                ));
            }
            if let Some(spec) = &p.sharding {
                if spec.dims.len() > p.ty.rank() {
                    return Err(err(
                        None,
                        format!(
                            "parameter `{}` of type {} has a sharding of rank {}",
                            p.name,
                            p.ty,
                            spec.dims.len()
                        ),
                    ));
                }
            }
        }
        for (i, e) in self.eqns.iter().enumerate() {
            let at = Some(i);
            let prim = e.prim.name();
            for x in &e.inputs {
                if !defined.get(x.index()).copied().unwrap_or(false) {
                    return Err(err(
                        at,
                        format!("{prim} uses %{} before it is defined", x.0),
                    ));
                }
            }
            let ins: Vec<&crate::TensorType> =
                e.inputs.iter().map(|&x| self.value_type(x)).collect();
            let want = infer(&e.prim, &ins).map_err(|e| err(at, e.to_string()))?;
            if e.outputs.len() != want.len() {
                return Err(err(
                    at,
                    format!(
                        "{prim} defines {} results but has {}",
                        e.outputs.len(),
                        want.len()
                    ),
                ));
            }
            for &o in &e.outputs {
                define(&mut defined, o, at)?;
            }
            let have: Vec<crate::TensorType> = e
                .outputs
                .iter()
                .map(|&o| self.value_type(o).clone())
                .collect();
            if have != want {
                return Err(err(
                    at,
                    format!(
                        "{prim} results are typed ({}) but infer to ({})",
                        list(&have),
                        list(&want)
                    ),
                ));
            }
            check_subfunctions(&e.prim).map_err(|inner| err(at, format!("in {prim}: {inner}")))?;
        }
        let mut out_names = HashSet::new();
        for o in &self.outputs {
            if !out_names.insert(o.name.as_str()) {
                return Err(err(None, format!("two outputs are named `{}`", o.name)));
            }
            if !defined.get(o.value.index()).copied().unwrap_or(false) {
                return Err(err(
                    None,
                    format!("output `{}` returns undefined value %{}", o.name, o.value.0),
                ));
            }
            if let Some(spec) = &o.sharding {
                let ty = self.value_type(o.value);
                if spec.dims.len() > ty.rank() {
                    return Err(err(
                        None,
                        format!(
                            "output `{}` of type {ty} has a sharding of rank {}",
                            o.name,
                            spec.dims.len()
                        ),
                    ));
                }
            }
        }
        let mut aliased = HashSet::new();
        for p in &self.params {
            let Some(o) = p.donate_to else { continue };
            let Some(out) = self.outputs.get(o) else {
                return Err(err(
                    None,
                    format!(
                        "parameter `{}` is donated to output {o}, but there are {} outputs",
                        p.name,
                        self.outputs.len()
                    ),
                ));
            };
            if self.value_type(out.value) != &p.ty {
                return Err(err(
                    None,
                    format!(
                        "parameter `{}` of type {} is donated to output `{}` of type {}",
                        p.name,
                        p.ty,
                        out.name,
                        self.value_type(out.value)
                    ),
                ));
            }
            if !aliased.insert(o) {
                return Err(err(
                    None,
                    format!("output `{}` aliases two parameters", out.name),
                ));
            }
        }
        Ok(())
    }
}

fn check_subfunctions(prim: &Prim) -> Result<()> {
    match prim {
        Prim::While { cond, body } => {
            cond.check()?;
            body.check()
        }
        Prim::Remat { body, .. }
        | Prim::ReduceWith { body, .. }
        | Prim::ManualComputation { body, .. } => body.check(),
        Prim::CustomVjp { fwd, bwd, .. } => {
            fwd.check()?;
            bwd.check()
        }
        Prim::Constant { .. }
        | Prim::Iota { .. }
        | Prim::Convert { .. }
        | Prim::BitcastConvert { .. }
        | Prim::Unary(_)
        | Prim::Binary(_)
        | Prim::Compare { .. }
        | Prim::Select
        | Prim::DotGeneral { .. }
        | Prim::Reshape { .. }
        | Prim::Transpose { .. }
        | Prim::BroadcastInDim { .. }
        | Prim::Slice { .. }
        | Prim::DynamicSlice { .. }
        | Prim::DynamicUpdateSlice
        | Prim::Concatenate { .. }
        | Prim::Pad { .. }
        | Prim::Reduce { .. }
        | Prim::Argmax { .. }
        | Prim::Gather { .. }
        | Prim::ScatterAdd { .. }
        | Prim::RngBitGenerator { .. }
        | Prim::ShardingConstraint { .. }
        | Prim::OptimizationBarrier
        | Prim::StopGradient
        | Prim::CustomCall(_) => Ok(()),
    }
}
