//! Bindings to the PJRT C API: plugins, clients, devices, executables, buffers.
//!
//! The raw `#[repr(C)]` layer is [`ffi`]; everything else is a safe wrapper whose `Drop`
//! frees the plugin handle. Every PJRT error becomes a [`RuntimeError::Pjrt`] carrying the
//! PJRT status code and message. This module knows nothing of hlo or meshes: it takes MLIR
//! text and [`CompileOptions`].

mod api;
mod buffer;
mod cache;
mod client;
mod compile_options;
mod device;
mod element;
mod error;
mod event;
mod executable;
pub mod ffi;
mod key_value;
mod multi_process;
mod plugin;
mod profiler;
mod staging;

pub use api::{Api, API_MAJOR, MIN_API_MINOR};
pub use buffer::{Buffer, HostCopy};
pub use cache::{CacheOutcome, CompileCache};
pub use client::{Client, ClientOptions, ClientSpec, CreateOption};
pub use compile_options::{CompileOptions, OptionValue};
pub use device::{AttributeValue, Device, MemoryStats};
pub use element::{f8e4m3fn_to_f32, f8e5m2_to_f32, ElementType, NativeType};
pub use error::{PjrtCode, Result, RuntimeError};
pub use executable::{Arg, CompiledMemoryStats, LoadedExecutable};
pub use key_value::{KeyValueError, KeyValueStore};
pub use multi_process::{GlobalDevice, ProcessPlacement};
pub use plugin::{
    cpu_plugin_path, install_cpu_plugin, named_plugin, platform_of_plugin, resolve_plugin,
    vishwam_home, Accelerators, Platform, PlatformChoice, CPU_PLUGIN_PACKAGE, CPU_PLUGIN_VERSION,
};
pub use profiler::{Profiler, EXTENSION_TYPE_PROFILER, PROFILE_OPTIONS};
pub use staging::{StagingStats, MAX_FREE_BLOCKS, MAX_FREE_BYTES, STAGING_ALIGN};
