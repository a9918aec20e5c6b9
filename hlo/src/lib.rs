//! Tracing, reverse-mode autodiff and StableHLO emission.
