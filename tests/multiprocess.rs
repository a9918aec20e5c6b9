//! Multi-process runs on the CPU: the key-value store under concurrent clients, joining a job
//! of several processes (in threads here, as real processes through the binary below), a
//! process that dies making the others stop, the per-process data slices, and the CPU
//! plugin's refusal of programs whose devices span processes; `vishwam train` as a job.

#[path = "multiprocess/bootstrap.rs"]
mod bootstrap;
mod common;
#[path = "multiprocess/store.rs"]
mod store;
#[path = "multiprocess/train.rs"]
mod train;
