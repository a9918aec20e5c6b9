//! Tensor handles: a value of a graph with its type.

use crate::graph::Graph;
use crate::ir::ValueId;
use crate::{DType, TensorType};
use std::fmt;

/// A value being traced: its id, its type and the graph that records operations on it.
/// Cloning is cheap-ish (the shape is copied); operations on it append equations.
#[derive(Clone)]
pub struct Tensor {
    graph: Graph,
    id: ValueId,
    ty: TensorType,
    poisoned: bool,
}

impl Tensor {
    pub(crate) fn new(graph: Graph, id: ValueId, ty: TensorType, poisoned: bool) -> Tensor {
        Tensor {
            graph,
            id,
            ty,
            poisoned,
        }
    }

    /// The graph this tensor belongs to.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The value id inside the graph.
    pub fn id(&self) -> ValueId {
        self.id
    }

    /// The type (dtype and shape).
    pub fn ty(&self) -> &TensorType {
        &self.ty
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.ty.dtype
    }

    /// The shape.
    pub fn shape(&self) -> &[i64] {
        &self.ty.shape
    }

    /// The number of dimensions.
    pub fn rank(&self) -> usize {
        self.ty.rank()
    }

    /// True when this tensor stands for the result of an operation that failed.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Tensor(%{}: {}{})",
            self.id.0,
            self.ty,
            if self.poisoned { ", poisoned" } else { "" }
        )
    }
}
