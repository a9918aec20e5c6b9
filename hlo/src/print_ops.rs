//! The text of each primitive (pretty StableHLO forms, generic form for gather/scatter).

use crate::error::{HloError, Result};
use crate::ir::{BinaryOp, Eqn, Func, Prim, ReduceKind, RngAlgorithm, UnaryOp};
use crate::print::{write_element, Name, Printer};
use crate::print_regions::{
    array_tail, dir_name, kind_name, list, mlir_string, reduce_init, symbol,
};
use crate::{DType, TensorType};

impl Printer<'_> {
    /// Prints one equation at `depth`, naming its results in `names`.
    pub fn eqn(&mut self, f: &Func, e: &Eqn, names: &mut [Name], depth: usize) -> Result<()> {
        let in_ty = |k: usize| f.value_type(e.inputs[k]);
        let out_ty = |k: usize| f.value_type(e.outputs[k]);
        match &e.prim {
            Prim::Constant { ty, value } => {
                self.results(e, names, depth);
                self.out.push_str("stablehlo.constant dense<");
                self.literal(value, ty);
                self.out.push_str("> : ");
                self.ty(ty);
            }
            Prim::Iota { ty, dim } => {
                self.results(e, names, depth);
                self.out.push_str(&format!("stablehlo.iota dim = {dim} : "));
                self.ty(ty);
            }
            Prim::Convert { .. } => self.simple("stablehlo.convert", f, e, names, depth, "")?,
            Prim::BitcastConvert { .. } => {
                self.simple("stablehlo.bitcast_convert", f, e, names, depth, "")?
            }
            Prim::Unary(UnaryOp::Erf) => {
                self.results(e, names, depth);
                self.out.push_str("chlo.erf ");
                self.operands(e, names)?;
                self.out.push_str(" : ");
                self.ty(in_ty(0));
                self.out.push_str(" -> ");
                self.ty(out_ty(0));
            }
            Prim::Unary(op) => {
                let name = match op {
                    UnaryOp::Neg => "negate",
                    UnaryOp::Abs => "abs",
                    UnaryOp::Sign => "sign",
                    UnaryOp::Exp => "exponential",
                    UnaryOp::Log => "log",
                    UnaryOp::Log1p => "log_plus_one",
                    UnaryOp::Tanh => "tanh",
                    UnaryOp::Logistic => "logistic",
                    UnaryOp::Sqrt => "sqrt",
                    UnaryOp::Rsqrt => "rsqrt",
                    UnaryOp::Sin => "sine",
                    UnaryOp::Cos => "cosine",
                    UnaryOp::Erf => "erf",
                    UnaryOp::Not => "not",
                };
                self.same_typed(&format!("stablehlo.{name}"), f, e, names, depth)?;
            }
            Prim::Binary(op) => {
                let name = match op {
                    BinaryOp::Add => "add",
                    BinaryOp::Sub => "subtract",
                    BinaryOp::Mul => "multiply",
                    BinaryOp::Div => "divide",
                    BinaryOp::Max => "maximum",
                    BinaryOp::Min => "minimum",
                    BinaryOp::Pow => "power",
                    BinaryOp::And => "and",
                    BinaryOp::Or => "or",
                    BinaryOp::Xor => "xor",
                    BinaryOp::ShiftLeft => "shift_left",
                    BinaryOp::ShiftRightLogical => "shift_right_logical",
                };
                self.same_typed(&format!("stablehlo.{name}"), f, e, names, depth)?;
            }
            Prim::Compare { dir, kind } => {
                self.results(e, names, depth);
                self.out
                    .push_str(&format!("stablehlo.compare {}, ", dir_name(*dir)));
                self.operands(e, names)?;
                self.out.push_str(&format!(", {}", kind_name(*kind)));
                self.signature(f, e);
            }
            Prim::Select => {
                self.results(e, names, depth);
                self.out.push_str("stablehlo.select ");
                self.operands(e, names)?;
                self.out.push_str(" : ");
                self.types([in_ty(0), in_ty(1)]);
            }
            Prim::DotGeneral { dims, .. } => {
                let mut attrs = String::new();
                if !dims.lhs_batch.is_empty() {
                    attrs.push_str(&format!(
                        ", batching_dims = {} x {}",
                        list(&dims.lhs_batch),
                        list(&dims.rhs_batch)
                    ));
                }
                attrs.push_str(&format!(
                    ", contracting_dims = {} x {}",
                    list(&dims.lhs_contract),
                    list(&dims.rhs_contract)
                ));
                // An f32 (or f64) product is computed in full precision unless the options
                // allow TF32: XLA's DEFAULT lets GPUs round f32 operands to TF32 (10 mantissa
                // bits), which an f32 program did not ask for. Narrower operands keep DEFAULT,
                // where the attribute changes nothing.
                let wide = |t: &TensorType| matches!(t.dtype, DType::F32 | DType::F64);
                if !self.opts.tf32_f32_dots && wide(in_ty(0)) && wide(in_ty(1)) {
                    attrs.push_str(", precision = [HIGHEST, HIGHEST]");
                }
                self.simple("stablehlo.dot_general", f, e, names, depth, &attrs)?;
            }
            Prim::Reshape { .. } => self.simple("stablehlo.reshape", f, e, names, depth, "")?,
            Prim::Transpose { perm } => self.simple(
                "stablehlo.transpose",
                f,
                e,
                names,
                depth,
                &format!(", dims = {}", list(perm)),
            )?,
            Prim::BroadcastInDim { dims, .. } => self.simple(
                "stablehlo.broadcast_in_dim",
                f,
                e,
                names,
                depth,
                &format!(", dims = {}", list(dims)),
            )?,
            Prim::Slice {
                start,
                limit,
                stride,
            } => {
                let ranges: Vec<String> = (0..start.len())
                    .map(|d| match stride[d] {
                        1 => format!("{}:{}", start[d], limit[d]),
                        s => format!("{}:{}:{s}", start[d], limit[d]),
                    })
                    .collect();
                self.simple(
                    "stablehlo.slice",
                    f,
                    e,
                    names,
                    depth,
                    &format!(" [{}]", ranges.join(", ")),
                )?
            }
            Prim::DynamicSlice { sizes } => self.simple(
                "stablehlo.dynamic_slice",
                f,
                e,
                names,
                depth,
                &format!(", sizes = {}", list(sizes)),
            )?,
            Prim::DynamicUpdateSlice => {
                self.simple("stablehlo.dynamic_update_slice", f, e, names, depth, "")?
            }
            Prim::Concatenate { dim } => self.simple(
                "stablehlo.concatenate",
                f,
                e,
                names,
                depth,
                &format!(", dim = {dim}"),
            )?,
            Prim::Pad {
                low,
                high,
                interior,
            } => {
                let attrs = format!(
                    ", low = {}, high = {}, interior = {}",
                    list(low),
                    list(high),
                    list(interior)
                );
                self.simple("stablehlo.pad", f, e, names, depth, &attrs)?
            }
            Prim::Reduce { kind, dims } => {
                let x = in_ty(0);
                let scalar = TensorType::scalar(x.dtype);
                let init = self.constant_line(&reduce_init(*kind, x.dtype), &scalar, depth);
                let combiner = match kind {
                    ReduceKind::Sum => "add",
                    ReduceKind::Max => "maximum",
                    ReduceKind::Min => "minimum",
                };
                self.results(e, names, depth);
                self.out.push_str("stablehlo.reduce(");
                self.name(names[e.inputs[0].index()])?;
                self.out.push_str(" init: ");
                self.name(init)?;
                self.out.push_str(&format!(
                    ") applies stablehlo.{combiner} across dimensions = {} : (",
                    list(dims)
                ));
                self.types([x, &scalar]);
                self.out.push_str(") -> ");
                self.ty(out_ty(0));
            }
            Prim::ReduceWith { dims, body } => {
                return self.reduce_with(f, e, names, depth, dims, body)
            }
            Prim::Argmax { dim, index_dtype } => {
                return self.argmax(f, e, names, depth, *dim, *index_dtype)
            }
            Prim::Gather {
                dims,
                slice_sizes,
                indices_are_sorted,
            } => {
                self.results(e, names, depth);
                self.out.push_str("\"stablehlo.gather\"(");
                self.operands(e, names)?;
                self.out.push_str(&format!(
                    ") <{{dimension_numbers = #stablehlo.gather<offset_dims = {}, collapsed_slice_dims = {}, start_index_map = {}, index_vector_dim = {}>, indices_are_sorted = {indices_are_sorted}, slice_sizes = array<i64{}>}}>",
                    list(&dims.offset_dims), list(&dims.collapsed_slice_dims), list(&dims.start_index_map),
                    dims.index_vector_dim, array_tail(slice_sizes)
                ));
                self.signature(f, e);
            }
            Prim::ScatterAdd {
                dims,
                indices_are_sorted,
                unique_indices,
            } => {
                self.results(e, names, depth);
                self.out.push_str("\"stablehlo.scatter\"(");
                self.operands(e, names)?;
                self.out.push_str(&format!(
                    ") <{{indices_are_sorted = {indices_are_sorted}, scatter_dimension_numbers = #stablehlo.scatter<update_window_dims = {}, inserted_window_dims = {}, scatter_dims_to_operand_dims = {}, index_vector_dim = {}>, unique_indices = {unique_indices}}}> ({{\n",
                    list(&dims.update_window_dims), list(&dims.inserted_window_dims),
                    list(&dims.scatter_dims_to_operand_dims), dims.index_vector_dim
                ));
                let scalar = TensorType::scalar(in_ty(0).dtype);
                let (a, b, s) = (self.fresh(), self.fresh(), self.fresh());
                let t = scalar.mlir();
                self.indent(depth);
                self.out.push_str(&format!("^bb0(%{a}: {t}, %{b}: {t}):\n"));
                self.indent(depth + 1);
                self.out
                    .push_str(&format!("%{s} = stablehlo.add %{a}, %{b} : {t}\n"));
                self.indent(depth + 1);
                self.out.push_str(&format!("stablehlo.return %{s} : {t}\n"));
                self.indent(depth);
                self.out.push_str("})");
                self.signature(f, e);
            }
            Prim::RngBitGenerator { algorithm, .. } => {
                let alg = match algorithm {
                    RngAlgorithm::Default => "DEFAULT",
                    RngAlgorithm::ThreeFry => "THREE_FRY",
                    RngAlgorithm::Philox => "PHILOX",
                };
                self.simple(
                    "stablehlo.rng_bit_generator",
                    f,
                    e,
                    names,
                    depth,
                    &format!(", algorithm = {alg}"),
                )?
            }
            Prim::ShardingConstraint { spec } => {
                let x = in_ty(0);
                let mesh = self.mesh("a sharding constraint")?;
                spec.validate(mesh, &x.shape)
                    .map_err(|source| HloError::Sharding {
                        name: "sharding_constraint".into(),
                        source,
                    })?;
                self.results(e, names, depth);
                self.out.push_str("sdy.sharding_constraint ");
                self.operands(e, names)?;
                let mesh_name = self.opts.mesh_name.clone();
                self.out.push_str(&format!(
                    " <@{mesh_name}, [{}]> : ",
                    spec.sdy_dims(x.rank())
                ));
                self.ty(x);
            }
            Prim::OptimizationBarrier => {
                if e.inputs.is_empty() {
                    return Ok(());
                }
                self.results(e, names, depth);
                self.out.push_str("stablehlo.optimization_barrier ");
                self.operands(e, names)?;
                self.out.push_str(" : ");
                self.types(e.inputs.iter().map(|&x| f.value_type(x)));
            }
            Prim::StopGradient => {
                names[e.outputs[0].index()] = names[e.inputs[0].index()];
                return Ok(());
            }
            Prim::While { cond, body } => return self.while_loop(f, e, names, depth, cond, body),
            Prim::CustomCall(spec) => {
                self.results(e, names, depth);
                self.out
                    .push_str(&format!("stablehlo.custom_call @{}(", symbol(&spec.target)));
                self.operands(e, names)?;
                self.out.push_str(&format!(
                    ") {{backend_config = {}, has_side_effect = {}, api_version = {} : i32",
                    mlir_string(&spec.backend_config),
                    spec.has_side_effect,
                    spec.api_version
                ));
                for (name, layouts) in [
                    ("operand_layouts", &spec.operand_layouts),
                    ("result_layouts", &spec.result_layouts),
                ] {
                    if !layouts.is_empty() {
                        let items: Vec<String> = layouts
                            .iter()
                            .map(|l| {
                                if l.is_empty() {
                                    "dense<> : tensor<0xindex>".to_string()
                                } else {
                                    format!("dense<{}> : tensor<{}xindex>", list(l), l.len())
                                }
                            })
                            .collect();
                        self.out
                            .push_str(&format!(", {name} = [{}]", items.join(", ")));
                    }
                }
                self.out.push_str("} : (");
                self.types(e.inputs.iter().map(|&x| f.value_type(x)));
                self.out.push_str(") -> ");
                if spec.result_types.len() == 1 {
                    self.ty(&spec.result_types[0]);
                } else {
                    self.out.push('(');
                    self.types(&spec.result_types);
                    self.out.push(')');
                }
            }
            Prim::ManualComputation { manual, body, .. } => {
                return self.manual_computation(f, e, names, depth, manual, body)
            }
            Prim::Remat { body, .. } => return self.inline(e, names, depth, body),
            Prim::CustomVjp { fwd, .. } => return self.inline(e, names, depth, fwd),
        }
        self.out.push('\n');
        Ok(())
    }

    /// Indents and writes `%N = ` (or `%N:k = `), naming the results.
    pub(crate) fn results(&mut self, e: &Eqn, names: &mut [Name], depth: usize) -> u32 {
        self.indent(depth);
        let n = self.fresh();
        match e.outputs.len() {
            0 => {}
            1 => {
                names[e.outputs[0].index()] = Name::Val(n);
                self.out.push_str(&format!("%{n} = "));
            }
            k => {
                for (i, o) in e.outputs.iter().enumerate() {
                    names[o.index()] = Name::Part(n, i as u32);
                }
                self.out.push_str(&format!("%{n}:{k} = "));
            }
        }
        n
    }

    fn operands(&mut self, e: &Eqn, names: &[Name]) -> Result<()> {
        for (i, x) in e.inputs.iter().enumerate() {
            if i > 0 {
                self.out.push_str(", ");
            }
            self.name(names[x.index()])?;
        }
        Ok(())
    }

    /// ` : (A, B) -> R` or ` : (A) -> (R, S)`.
    pub(crate) fn signature(&mut self, f: &Func, e: &Eqn) {
        self.out.push_str(" : (");
        self.types(e.inputs.iter().map(|&x| f.value_type(x)));
        self.out.push_str(") -> ");
        if e.outputs.len() == 1 {
            self.ty(f.value_type(e.outputs[0]));
        } else {
            self.out.push('(');
            self.types(e.outputs.iter().map(|&o| f.value_type(o)));
            self.out.push(')');
        }
    }

    /// `%N = op %a, %b<attrs> : (A, B) -> R`.
    fn simple(
        &mut self,
        op: &str,
        f: &Func,
        e: &Eqn,
        names: &mut [Name],
        depth: usize,
        attrs: &str,
    ) -> Result<()> {
        self.results(e, names, depth);
        self.out.push_str(op);
        self.out.push(' ');
        self.operands(e, names)?;
        self.out.push_str(attrs);
        self.signature(f, e);
        Ok(())
    }

    /// `%N = op %a, %b : T` for elementwise ops whose operands and result share one type.
    fn same_typed(
        &mut self,
        op: &str,
        f: &Func,
        e: &Eqn,
        names: &mut [Name],
        depth: usize,
    ) -> Result<()> {
        self.results(e, names, depth);
        self.out.push_str(op);
        self.out.push(' ');
        self.operands(e, names)?;
        self.out.push_str(" : ");
        self.ty(f.value_type(e.outputs[0]));
        Ok(())
    }

    /// Prints `%N = stablehlo.constant dense<v> : ty` and returns its name.
    pub(crate) fn constant_line(&mut self, element: &[u8], ty: &TensorType, depth: usize) -> Name {
        self.indent(depth);
        let n = self.fresh();
        self.out
            .push_str(&format!("%{n} = stablehlo.constant dense<"));
        write_element(&mut self.out, element, ty.dtype);
        self.out.push_str("> : ");
        self.ty(ty);
        self.out.push('\n');
        Name::Val(n)
    }
}
