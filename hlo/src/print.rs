//! StableHLO MLIR text: the module, `func.func public @main`, shardings and donation.
//!
//! Printing is one pass over the equations into a single `String` buffer. Values are named
//! `%argN` (parameters) and `%N` (results; `%N#i` for multi-result operations); remat and
//! custom-vjp regions are inlined, loop bodies become regions.

use crate::error::{HloError, Result};
use crate::ir::Func;
use crate::literal::{decode_float, Literal};
use crate::{DType, TensorType};
use std::fmt::Write;
use vishwam_mesh::{Mesh, PartitionSpec};

/// How to print a module.
#[derive(Debug, Clone)]
pub struct PrintOptions {
    /// The device mesh; when given, `sdy.mesh` is declared, every argument and result gets a
    /// `sdy.sharding` (replicated unless set) and `mhlo.num_partitions` is its device count.
    pub mesh: Option<Mesh>,
    /// The symbol of the mesh (`@mesh`).
    pub mesh_name: String,
    /// The module name; the function's name when `None`.
    pub module_name: Option<String>,
    /// Whether a `dot_general` of two f32 (or f64) operands may round them to TF32 on GPUs
    /// (XLA's `DEFAULT` precision). When false (the default) such dots are printed with
    /// `HIGHEST` precision and compute in full f32; set it for programs whose compute dtype
    /// is narrower than f32, where f32 dots are backward-pass cotangent products.
    pub tf32_f32_dots: bool,
}

impl Default for PrintOptions {
    fn default() -> Self {
        PrintOptions {
            mesh: None,
            mesh_name: "mesh".into(),
            module_name: None,
            tf32_f32_dots: false,
        }
    }
}

impl PrintOptions {
    /// Options that print for `mesh`.
    pub fn with_mesh(mesh: Mesh) -> Self {
        PrintOptions {
            mesh: Some(mesh),
            ..PrintOptions::default()
        }
    }
}

/// The name of a value in the printed text.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Name {
    /// Not (yet) printed.
    Unset,
    /// `%argN`.
    Arg(u32),
    /// `%N`.
    Val(u32),
    /// `%N#i`.
    Part(u32, u32),
    /// `%itN_i` (a loop-carried block argument).
    Iter(u32, u32),
}

/// The printing state: the output buffer and a module-wide counter for fresh names.
pub(crate) struct Printer<'a> {
    pub out: String,
    pub opts: &'a PrintOptions,
    next: u32,
}

impl Func {
    /// Prints the function as a StableHLO module for the PJRT plugins. Fails when the function
    /// does not pass [`Func::check`], or a sharding is used without a mesh or does not fit it.
    pub fn to_stablehlo(&self, opts: &PrintOptions) -> Result<String> {
        self.check()?;
        let mut p = Printer {
            out: String::with_capacity(256 + 160 * self.eqns.len()),
            opts,
            next: 0,
        };
        p.module(self)?;
        Ok(p.out)
    }
}

impl<'a> Printer<'a> {
    /// A fresh number for a result or block argument.
    pub fn fresh(&mut self) -> u32 {
        self.next += 1;
        self.next - 1
    }

    /// Writes a value's name.
    pub fn name(&mut self, n: Name) -> Result<()> {
        match n {
            Name::Unset => {
                return Err(HloError::Print {
                    detail: "a value is used before it is printed".into(),
                })
            }
            Name::Arg(i) => write!(self.out, "%arg{i}"),
            Name::Val(i) => write!(self.out, "%{i}"),
            Name::Part(i, k) => write!(self.out, "%{i}#{k}"),
            Name::Iter(i, k) => write!(self.out, "%it{i}_{k}"),
        }
        .map_err(fmt_err)
    }

    /// Writes `t`.
    pub fn ty(&mut self, t: &TensorType) {
        t.write_mlir(&mut self.out);
    }

    /// Writes types separated by `, `.
    pub fn types<'t>(&mut self, types: impl IntoIterator<Item = &'t TensorType>) {
        for (i, t) in types.into_iter().enumerate() {
            if i > 0 {
                self.out.push_str(", ");
            }
            t.write_mlir(&mut self.out);
        }
    }

    /// Writes `n` levels of indentation.
    pub fn indent(&mut self, depth: usize) {
        for _ in 0..depth {
            self.out.push_str("  ");
        }
    }

    /// The mesh, or an error saying that `what` needs one.
    pub fn mesh(&self, what: &str) -> Result<&'a Mesh> {
        self.opts.mesh.as_ref().ok_or_else(|| HloError::Print {
            detail: format!("{what} has a sharding but no mesh was given (set PrintOptions::mesh)"),
        })
    }

    /// Writes ` {sdy.sharding = ...}`-style attribute entries for a value; validates the spec.
    fn sharding_attr(
        &mut self,
        what: &str,
        spec: Option<&PartitionSpec>,
        ty: &TensorType,
        attrs: &mut Vec<String>,
    ) -> Result<()> {
        let mesh = match (&self.opts.mesh, spec) {
            (None, None) => return Ok(()),
            (None, Some(_)) => self.mesh(what)?,
            (Some(m), _) => m,
        };
        let replicated = PartitionSpec::replicated();
        let spec = spec.unwrap_or(&replicated);
        spec.validate(mesh, &ty.shape)
            .map_err(|source| HloError::Sharding {
                name: what.to_string(),
                source,
            })?;
        attrs.push(format!(
            "sdy.sharding = {}",
            spec.sdy_sharding(&self.opts.mesh_name, ty.rank())
        ));
        Ok(())
    }

    fn module(&mut self, f: &Func) -> Result<()> {
        let name = sanitize(self.opts.module_name.as_deref().unwrap_or(&f.name));
        let partitions = self.opts.mesh.as_ref().map_or(1, |m| m.num_devices());
        writeln!(
            self.out,
            "module @{name} attributes {{mhlo.num_partitions = {partitions} : i32, mhlo.num_replicas = 1 : i32}} {{"
        )
        .map_err(fmt_err)?;
        if let Some(mesh) = &self.opts.mesh {
            writeln!(self.out, "  {}", mesh.sdy_mesh_decl(&self.opts.mesh_name))
                .map_err(fmt_err)?;
        }
        self.out.push_str("  func.func public @main(");
        let mut names = vec![Name::Unset; f.types.len()];
        for (i, p) in f.params.iter().enumerate() {
            if i > 0 {
                self.out.push_str(", ");
            }
            names[p.value.index()] = Name::Arg(i as u32);
            write!(self.out, "%arg{i}: ").map_err(fmt_err)?;
            self.ty(&p.ty);
            let mut attrs = Vec::new();
            self.sharding_attr(
                &format!("parameter `{}`", p.name),
                p.sharding.as_ref(),
                &p.ty,
                &mut attrs,
            )?;
            if let Some(o) = p.donate_to {
                attrs.push(format!("tf.aliasing_output = {o} : i32"));
            }
            self.attrs(&attrs);
        }
        self.out.push_str(") -> (");
        for (i, o) in f.outputs.iter().enumerate() {
            if i > 0 {
                self.out.push_str(", ");
            }
            let ty = f.value_type(o.value);
            self.ty(ty);
            let mut attrs = Vec::new();
            self.sharding_attr(
                &format!("output `{}`", o.name),
                o.sharding.as_ref(),
                ty,
                &mut attrs,
            )?;
            self.attrs(&attrs);
        }
        self.out.push_str(") {\n");
        self.body(f, &mut names, 2)?;
        self.indent(2);
        self.ret(f, &names, "return")?;
        self.out.push_str("  }\n}\n");
        Ok(())
    }

    fn attrs(&mut self, attrs: &[String]) {
        if !attrs.is_empty() {
            self.out.push_str(" {");
            self.out.push_str(&attrs.join(", "));
            self.out.push('}');
        }
    }

    /// Prints every equation of `f` at `depth`.
    pub fn body(&mut self, f: &Func, names: &mut [Name], depth: usize) -> Result<()> {
        for e in &f.eqns {
            self.eqn(f, e, names, depth)?;
        }
        Ok(())
    }

    /// Writes `<op> %a, %b : A, B` for the outputs of `f` (`op` is `return` or
    /// `stablehlo.return`), without indentation, and a newline.
    pub fn ret(&mut self, f: &Func, names: &[Name], op: &str) -> Result<()> {
        self.out.push_str(op);
        for (i, o) in f.outputs.iter().enumerate() {
            self.out.push_str(if i == 0 { " " } else { ", " });
            self.name(names[o.value.index()])?;
        }
        if !f.outputs.is_empty() {
            self.out.push_str(" : ");
            self.types(f.outputs.iter().map(|o| f.value_type(o.value)));
        }
        self.out.push('\n');
        Ok(())
    }

    /// Writes a literal of type `ty` (the part inside `dense<...>`).
    pub fn literal(&mut self, lit: &Literal, ty: &TensorType) {
        let size = ty.dtype.size_bytes();
        match lit {
            Literal::Splat(bytes) => write_element(&mut self.out, bytes, ty.dtype),
            // An empty constant prints as a splat (of zero): MLIR has no empty hex form.
            Literal::Dense(_) if ty.num_elements() == 0 => {
                write_element(&mut self.out, &vec![0; size], ty.dtype)
            }
            Literal::Dense(bytes) if ty.dtype == DType::I1 => {
                write_bool_list(&mut self.out, bytes, &ty.shape)
            }
            Literal::Dense(bytes) => {
                self.out.push_str("\"0x");
                for b in bytes.iter() {
                    let _ = write!(self.out, "{b:02X}");
                }
                self.out.push('"');
            }
        }
    }
}

fn fmt_err(_: std::fmt::Error) -> HloError {
    HloError::Print {
        detail: "formatting failed".into(),
    }
}

/// A symbol name made of characters MLIR accepts unquoted.
fn sanitize(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        s.insert(0, '_');
    }
    s
}

/// Writes one element exactly: shortest round-trip decimal for finite wide floats, the bit
/// pattern in hex for non-finite values and 8-bit floats, decimal integers, `true`/`false`.
pub(crate) fn write_element(out: &mut String, bytes: &[u8], dtype: DType) {
    let hex = |out: &mut String| {
        out.push_str("0x");
        for b in bytes.iter().rev() {
            let _ = write!(out, "{b:02X}");
        }
    };
    let int = |n: usize| {
        let mut buf = [0u8; 8];
        buf[..n].copy_from_slice(&bytes[..n]);
        u64::from_le_bytes(buf)
    };
    match dtype {
        DType::F32 | DType::F64 | DType::BF16 | DType::F16 => match decode_float(bytes, dtype) {
            Some(v) if v.is_finite() => {
                let s = format!("{v:e}");
                match s.find('e') {
                    Some(e) if !s[..e].contains('.') => {
                        out.push_str(&s[..e]);
                        out.push_str(".0");
                        out.push_str(&s[e..]);
                    }
                    _ => out.push_str(&s),
                }
            }
            _ => hex(out),
        },
        DType::F8E4M3FN | DType::F8E5M2 => hex(out),
        DType::I32 => {
            let _ = write!(out, "{}", int(4) as u32 as i32);
        }
        DType::I64 => {
            let _ = write!(out, "{}", int(8) as i64);
        }
        DType::U32 => {
            let _ = write!(out, "{}", int(4));
        }
        DType::U8 => {
            let _ = write!(out, "{}", int(1));
        }
        DType::U64 => {
            let _ = write!(out, "{}", int(8));
        }
        DType::I1 => out.push_str(if bytes.first().copied().unwrap_or(0) != 0 {
            "true"
        } else {
            "false"
        }),
    }
}

fn write_bool_list(out: &mut String, bytes: &[u8], shape: &[i64]) {
    fn rec(out: &mut String, bytes: &[u8], shape: &[i64], pos: &mut usize) {
        match shape.split_first() {
            None => {
                out.push_str(if bytes.get(*pos).copied().unwrap_or(0) != 0 {
                    "true"
                } else {
                    "false"
                });
                *pos += 1;
            }
            Some((&n, rest)) => {
                out.push('[');
                for i in 0..n {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    rec(out, bytes, rest, pos);
                }
                out.push(']');
            }
        }
    }
    rec(out, bytes, shape, &mut 0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::literal::encode_f64;

    fn elem(v: f64, d: DType) -> String {
        let mut s = String::new();
        write_element(&mut s, &encode_f64(v, d), d);
        s
    }

    #[test]
    fn elements_print_exactly() {
        assert_eq!(elem(1.0, DType::F32), "1.0e0");
        assert_eq!(elem(-0.0, DType::F32), "-0.0e0");
        assert_eq!(elem(0.1, DType::F32), "1.0000000149011612e-1");
        assert_eq!(elem(f64::INFINITY, DType::F32), "0x7F800000");
        assert_eq!(elem(f64::NEG_INFINITY, DType::BF16), "0xFF80");
        assert_eq!(elem(1.0, DType::F8E4M3FN), "0x38");
        assert_eq!(elem(-3.0, DType::I32), "-3");
        assert_eq!(elem(1.0, DType::I1), "true");
        assert_eq!(elem(f64::NAN, DType::F64), "0x7FF8000000000000");
    }
}
