//! Tensor methods, one family per file.

pub mod constant;
pub mod control;
pub mod elementwise;
pub mod index;
pub mod linalg;
mod operators;
pub mod reduce;
pub mod shape;

pub use elementwise::Operand;
