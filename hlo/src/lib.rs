//! Tracing, reverse-mode autodiff and StableHLO emission for vishwam.
//!
//! Model code is written against [`Tensor`] handles of a [`Graph`]; every operation appends
//! an equation over a closed set of primitives ([`Prim`]). [`Graph::finish`] yields a checked
//! [`Func`]; [`Graph::vjp`] and [`Graph::grad`] append the backward pass to the same graph;
//! [`vjp`], [`grad`] and [`value_and_grad`] transform whole functions; [`Func::to_stablehlo`]
//! prints MLIR text for the XLA PJRT plugins.
//!
//! ```
//! use vishwam_hlo::{DType, Graph, PrintOptions, TensorType};
//! let g = Graph::new();
//! let x = g.param("x", TensorType::new(DType::F32, &[8, 4]));
//! let w = g.param("w", TensorType::new(DType::F32, &[4, 2]));
//! let loss = x.matmul(&w).tanh().square().mean_all();
//! let grads = g.grad(&loss, &[w.clone()]).unwrap();
//! let f = g.finish(&[("loss", &loss), ("grad.w", &grads[0])]).unwrap();
//! let text = f.to_stablehlo(&PrintOptions::default()).unwrap();
//! assert!(text.contains("stablehlo.dot_general"));
//! ```
//!
//! Adding a primitive: one variant of [`Prim`] (with [`Prim::name`] and
//! [`Prim::num_outputs`]), its shape rule in `infer.rs`, its gradient rule in `ad_rules.rs`
//! and its text in `print_ops.rs`. Each of those is a `match` without a catch-all arm, so the
//! compiler names every place to fill.

#![warn(missing_docs)]

mod ad;
mod ad_rules;
mod attrs;
mod check;
mod custom_vjp;
mod dtype;
mod error;
mod graph;
mod infer;
mod infer_index;
mod infer_shape;
mod ir;
mod literal;
mod manual;
pub mod nn;
mod ops;
mod print;
mod print_ops;
mod print_regions;
mod pytree;
mod remat;
mod tensor;
mod transform;
mod tree;
mod tree_ops;
mod types;

pub use dtype::DType;
pub use error::{HloError, Result};
pub use graph::Graph;
pub use infer::{infer, output_types};
pub use ir::{
    BinaryOp, CompareDir, CompareKind, CustomCallSpec, DotDims, Eqn, Func, GatherDims, Output,
    Param, Prim, ReduceKind, RngAlgorithm, ScatterDims, UnaryOp, ValueId,
};
pub use literal::Literal;
pub use manual::ManualAxes;
pub use ops::elementwise::broadcast_shapes;
pub use ops::Operand;
pub use print::PrintOptions;
pub use pytree::{join_name, Tree};
pub use tensor::Tensor;
pub use transform::{grad, value_and_grad, vjp};
pub use tree::TensorMap;
pub use types::TensorType;
pub use vishwam_mesh::{Mesh, PartitionSpec};
