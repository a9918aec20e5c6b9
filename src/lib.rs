//! vishwam: a Rust trainer for language models on real XLA through the PJRT C API.

pub mod config;
pub mod data;
pub mod distributed;
pub mod engine;
pub mod generate;
pub mod model;
pub mod paths;
pub mod plan;
pub mod plot;
pub mod reference;
pub mod runtime;
pub mod train;
pub mod verify;
