//! Printing of the parts with regions or helper values: loops, argmax, inlined regions,
//! and text helpers shared by the printer.

use crate::error::Result;
use crate::ir::{CompareDir, CompareKind, Eqn, Func, ReduceKind};
use crate::literal::{encode_f64, encode_i64};
use crate::print::{Name, Printer};
use crate::{DType, TensorType};
use std::fmt::Display;

impl Printer<'_> {
    pub(crate) fn inline(
        &mut self,
        e: &Eqn,
        names: &mut [Name],
        depth: usize,
        body: &Func,
    ) -> Result<()> {
        let mut sub = vec![Name::Unset; body.types.len()];
        for (p, x) in body.params.iter().zip(&e.inputs) {
            sub[p.value.index()] = names[x.index()];
        }
        self.body(body, &mut sub, depth)?;
        for (o, out) in body.outputs.iter().zip(&e.outputs) {
            names[out.index()] = sub[o.value.index()];
        }
        Ok(())
    }

    /// The equations of `region` at `depth` and its `stablehlo.return`, its parameters named
    /// `%it{n}_{k}` (the block arguments the enclosing op declares).
    fn region(&mut self, region: &Func, n: u32, depth: usize) -> Result<()> {
        let mut sub = vec![Name::Unset; region.types.len()];
        for (k, p) in region.params.iter().enumerate() {
            sub[p.value.index()] = Name::Iter(n, k as u32);
        }
        self.body(region, &mut sub, depth)?;
        self.indent(depth);
        self.ret(region, &sub, "stablehlo.return")
    }

    pub(crate) fn while_loop(
        &mut self,
        f: &Func,
        e: &Eqn,
        names: &mut [Name],
        depth: usize,
        cond: &Func,
        body: &Func,
    ) -> Result<()> {
        let n = self.results(e, names, depth);
        self.out.push_str("stablehlo.while(");
        for (i, x) in e.inputs.iter().enumerate() {
            if i > 0 {
                self.out.push_str(", ");
            }
            self.out.push_str(&format!("%it{n}_{i} = "));
            self.name(names[x.index()])?;
        }
        self.out.push_str(") : ");
        self.types(e.inputs.iter().map(|&x| f.value_type(x)));
        self.out.push('\n');
        for (i, (region, keyword)) in [(cond, "cond"), (body, "do")].into_iter().enumerate() {
            self.indent(depth);
            self.out.push_str(if i == 0 { keyword } else { "} do" });
            self.out.push_str(" {\n");
            self.region(region, n, depth + 1)?;
        }
        self.indent(depth);
        self.out.push_str("}\n");
        Ok(())
    }

    /// `stablehlo.reduce` of several operands with the traced combiner `body` as its region.
    pub(crate) fn reduce_with(
        &mut self,
        f: &Func,
        e: &Eqn,
        names: &mut [Name],
        depth: usize,
        dims: &[usize],
        body: &Func,
    ) -> Result<()> {
        let k = e.outputs.len();
        let (operands, inits) = e.inputs.split_at(k);
        let n = self.results(e, names, depth);
        self.out.push_str("stablehlo.reduce");
        for (i, (x, init)) in operands.iter().zip(inits).enumerate() {
            self.out.push_str(if i == 0 { "(" } else { ", (" });
            self.name(names[x.index()])?;
            self.out.push_str(" init: ");
            self.name(names[init.index()])?;
            self.out.push(')');
        }
        self.out
            .push_str(&format!(" across dimensions = {}", list(dims)));
        self.signature(f, e);
        self.out.push('\n');
        // The region's arguments are the accumulators then the elements; the pretty form
        // lists them in (accumulator, element) pairs, one per operand.
        self.indent(depth);
        self.out.push_str(" reducer");
        for (i, &x) in operands.iter().enumerate() {
            let scalar = TensorType::scalar(f.value_type(x).dtype).mlir();
            self.out.push_str(&format!(
                "(%it{n}_{i}: {scalar}, %it{n}_{}: {scalar}) ",
                k + i
            ));
        }
        self.out.push_str("{\n");
        self.region(body, n, depth + 1)?;
        self.indent(depth);
        self.out.push_str("}\n");
        Ok(())
    }

    pub(crate) fn argmax(
        &mut self,
        f: &Func,
        e: &Eqn,
        names: &mut [Name],
        depth: usize,
        dim: usize,
        index: DType,
    ) -> Result<()> {
        let x = f.value_type(e.inputs[0]);
        let (vs, is) = (TensorType::scalar(x.dtype), TensorType::scalar(index));
        self.indent(depth);
        let iota = self.fresh();
        self.out
            .push_str(&format!("%{iota} = stablehlo.iota dim = {dim} : "));
        self.ty(&x.with_dtype(index));
        self.out.push('\n');
        let init_v = self.constant_line(&reduce_init(ReduceKind::Max, x.dtype), &vs, depth);
        let init_i = self.constant_line(&encode_i64(0, index), &is, depth);
        let n = self.fresh();
        names[e.outputs[0].index()] = Name::Part(n, 1);
        self.indent(depth);
        self.out.push_str(&format!("%{n}:2 = stablehlo.reduce("));
        self.name(names[e.inputs[0].index()])?;
        self.out.push_str(" init: ");
        self.name(init_v)?;
        self.out.push_str(&format!("), (%{iota} init: "));
        self.name(init_i)?;
        self.out
            .push_str(&format!(") across dimensions = [{dim}] : ("));
        let out = f.value_type(e.outputs[0]);
        self.types([x, &x.with_dtype(index), &vs, &is]);
        self.out.push_str(") -> (");
        self.types([&out.with_dtype(x.dtype), out]);
        self.out.push_str(")\n");
        let (a, b, ai, bi) = (self.fresh(), self.fresh(), self.fresh(), self.fresh());
        let (vt, it) = (vs.mlir(), is.mlir());
        self.indent(depth);
        self.out.push_str(&format!(
            " reducer(%{a}: {vt}, %{b}: {vt}) (%{ai}: {it}, %{bi}: {it}) {{\n"
        ));
        let vk = kind_name(CompareKind::for_dtype(x.dtype));
        let ik = kind_name(CompareKind::for_dtype(index));
        let mut lines = Vec::new();
        let gt = self.fresh();
        lines.push(format!(
            "%{gt} = stablehlo.compare GT, %{a}, %{b}, {vk} : ({vt}, {vt}) -> tensor<i1>"
        ));
        let better = if x.dtype.is_float() {
            let (nan, or) = (self.fresh(), self.fresh());
            lines.push(format!(
                "%{nan} = stablehlo.compare NE, %{a}, %{a}, {vk} : ({vt}, {vt}) -> tensor<i1>"
            ));
            lines.push(format!("%{or} = stablehlo.or %{gt}, %{nan} : tensor<i1>"));
            or
        } else {
            gt
        };
        let (eq, lt, tie, pick, v, k) = (
            self.fresh(),
            self.fresh(),
            self.fresh(),
            self.fresh(),
            self.fresh(),
            self.fresh(),
        );
        lines.push(format!(
            "%{eq} = stablehlo.compare EQ, %{a}, %{b}, {vk} : ({vt}, {vt}) -> tensor<i1>"
        ));
        lines.push(format!(
            "%{lt} = stablehlo.compare LT, %{ai}, %{bi}, {ik} : ({it}, {it}) -> tensor<i1>"
        ));
        lines.push(format!("%{tie} = stablehlo.and %{eq}, %{lt} : tensor<i1>"));
        lines.push(format!(
            "%{pick} = stablehlo.or %{better}, %{tie} : tensor<i1>"
        ));
        lines.push(format!(
            "%{v} = stablehlo.select %{better}, %{a}, %{b} : tensor<i1>, {vt}"
        ));
        lines.push(format!(
            "%{k} = stablehlo.select %{pick}, %{ai}, %{bi} : tensor<i1>, {it}"
        ));
        lines.push(format!("stablehlo.return %{v}, %{k} : {vt}, {it}"));
        for l in lines {
            self.indent(depth + 1);
            self.out.push_str(&l);
            self.out.push('\n');
        }
        self.indent(depth);
        self.out.push_str("}\n");
        Ok(())
    }
}

/// The identity of a reduction, as one element of `dtype`.
pub(crate) fn reduce_init(kind: ReduceKind, dtype: DType) -> Vec<u8> {
    let highest = match kind {
        ReduceKind::Sum => return encode_f64(0.0, dtype),
        ReduceKind::Max => false,
        ReduceKind::Min => true,
    };
    let sign = if highest { 1.0 } else { -1.0 };
    match dtype {
        DType::F32 | DType::F64 | DType::BF16 | DType::F16 | DType::F8E5M2 => {
            encode_f64(sign * f64::INFINITY, dtype)
        }
        DType::F8E4M3FN => encode_f64(sign * 448.0, dtype),
        DType::I32 => encode_i64(
            if highest {
                i32::MAX as i64
            } else {
                i32::MIN as i64
            },
            dtype,
        ),
        DType::I64 => encode_i64(if highest { i64::MAX } else { i64::MIN }, dtype),
        DType::U32 | DType::U8 | DType::U64 | DType::I1 => {
            encode_i64(if highest { -1 } else { 0 }, dtype)
        }
    }
}

pub(crate) fn dir_name(d: CompareDir) -> &'static str {
    match d {
        CompareDir::Eq => "EQ",
        CompareDir::Ne => "NE",
        CompareDir::Lt => "LT",
        CompareDir::Le => "LE",
        CompareDir::Gt => "GT",
        CompareDir::Ge => "GE",
    }
}

pub(crate) fn kind_name(k: CompareKind) -> &'static str {
    match k {
        CompareKind::Float => "FLOAT",
        CompareKind::TotalOrder => "TOTALORDER",
        CompareKind::Signed => "SIGNED",
        CompareKind::Unsigned => "UNSIGNED",
    }
}

pub(crate) fn list<T: Display>(xs: &[T]) -> String {
    let items: Vec<String> = xs.iter().map(|x| x.to_string()).collect();
    format!("[{}]", items.join(", "))
}

/// `: 1, 4` for `array<i64: 1, 4>` (empty for an empty array).
pub(crate) fn array_tail(xs: &[i64]) -> String {
    if xs.is_empty() {
        return String::new();
    }
    let items: Vec<String> = xs.iter().map(|x| x.to_string()).collect();
    format!(": {}", items.join(", "))
}

/// A symbol reference body: bare when MLIR allows, quoted otherwise.
pub(crate) fn symbol(name: &str) -> String {
    let bare = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '.'));
    if bare {
        name.to_string()
    } else {
        mlir_string(name)
    }
}

/// A quoted MLIR string literal.
pub(crate) fn mlir_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for b in s.bytes() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\{b:02X}")),
        }
    }
    out.push('"');
    out
}
