//! The PJRT profiler extension: a plugin's own tracer (device kernels, copies, its host
//! threads), found on the `PJRT_Api`'s extension chain and driven through its
//! `PLUGIN_Profiler_Api` table. A capture is create (with serialized
//! `tensorflow.ProfileOptions`), start, stop, collect (serialized
//! `tensorflow.profiler.XSpace`), destroy.
//!
//! Layouts as in openxla/xla `xla/pjrt/c/pjrt_c_api.h` (`PJRT_Extension_Type_Profiler` is the
//! second enumerator, 1), `xla/pjrt/c/pjrt_c_api_profiler_extension.h` (the extension: its
//! `PJRT_Extension_Base` header, then the `PLUGIN_Profiler_Api*`) and
//! `xla/backends/profiler/plugin/profiler_c_api.h` (the table and its argument structs).
//! Checked on jax 0.11.2's plugins: the CPU plugin has no profiler extension (its chain holds
//! other extension types only).

use super::api::{bytes_to_string, Api};
use super::ffi::PJRT_Extension_Base;
use super::{PjrtCode, Result, RuntimeError};
use std::ffi::{c_char, c_int, c_void};
use std::sync::Arc;

/// `PJRT_Extension_Type_Profiler`.
pub const EXTENSION_TYPE_PROFILER: c_int = 1;

/// `PJRT_Profiler_Extension`: the chain header, then the table (null in an extension that
/// only carries a trace context id).
#[repr(C)]
struct ProfilerExtension {
    base: PJRT_Extension_Base,
    profiler_api: *const ProfilerApi,
}

/// Opaque `PLUGIN_Profiler`.
#[repr(C)]
struct PluginProfiler {
    _private: [u8; 0],
}

/// Opaque `PLUGIN_Profiler_Error`.
#[repr(C)]
struct PluginError {
    _private: [u8; 0],
}

/// `PLUGIN_Profiler_Error_Destroy_Args`.
#[repr(C)]
struct ErrorDestroyArgs {
    struct_size: usize,
    priv_: *mut c_void,
    error: *mut PluginError,
}

/// `PLUGIN_Profiler_Error_Message_Args`.
#[repr(C)]
struct ErrorMessageArgs {
    struct_size: usize,
    priv_: *mut c_void,
    error: *const PluginError,
    message: *const c_char,
    message_size: usize,
}

/// `PLUGIN_Profiler_Error_GetCode_Args`.
#[repr(C)]
struct ErrorCodeArgs {
    struct_size: usize,
    priv_: *mut c_void,
    error: *const PluginError,
    code: c_int,
}

/// `PLUGIN_Profiler_Create_Args`.
#[repr(C)]
struct CreateArgs {
    struct_size: usize,
    options: *const c_char,
    options_size: usize,
    profiler: *mut PluginProfiler,
}

/// `PLUGIN_Profiler_{Destroy,Start,Stop}_Args`: the size and the handle.
#[repr(C)]
struct HandleArgs {
    struct_size: usize,
    profiler: *mut PluginProfiler,
}

/// `PLUGIN_Profiler_CollectData_Args`.
#[repr(C)]
struct CollectArgs {
    struct_size: usize,
    profiler: *mut PluginProfiler,
    buffer: *mut u8,
    buffer_size_in_bytes: usize,
}

type ErrorFn<A> = Option<unsafe extern "C" fn(*mut A) -> *mut PluginError>;

/// `PLUGIN_Profiler_Api`.
#[repr(C)]
struct ProfilerApi {
    struct_size: usize,
    priv_: *mut c_void,
    error_destroy: Option<unsafe extern "C" fn(*mut ErrorDestroyArgs)>,
    error_message: Option<unsafe extern "C" fn(*mut ErrorMessageArgs)>,
    error_get_code: ErrorFn<ErrorCodeArgs>,
    create: ErrorFn<CreateArgs>,
    destroy: ErrorFn<HandleArgs>,
    start: ErrorFn<HandleArgs>,
    stop: ErrorFn<HandleArgs>,
    collect_data: ErrorFn<CollectArgs>,
}

/// The profiler table of `api`'s plugin, if its extension chain has one whose table reaches
/// `collect_data`.
fn profiler_api(api: &Api) -> Option<*const ProfilerApi> {
    let mut at = api.table().extension_start as *const PJRT_Extension_Base;
    // A chain longer than this is corrupt (jax 0.11.2's CPU plugin has 6 entries).
    for _ in 0..256 {
        if at.is_null() {
            return None;
        }
        // SAFETY: a non-null chain entry of the plugin, static for the library's lifetime;
        // every entry starts with a PJRT_Extension_Base.
        let base = unsafe { &*at };
        if base.type_ == EXTENSION_TYPE_PROFILER {
            // SAFETY: an entry of type Profiler is a PJRT_Profiler_Extension.
            let table = unsafe { (*at.cast::<ProfilerExtension>()).profiler_api };
            let needed = std::mem::size_of::<ProfilerApi>();
            // SAFETY: a non-null table starts with its struct_size.
            return (!table.is_null() && unsafe { (*table).struct_size } >= needed)
                .then_some(table);
        }
        at = base.next;
    }
    None
}

impl Api {
    /// True when the plugin exposes the profiler extension ([`Profiler::start`] can run).
    pub fn has_profiler(&self) -> bool {
        profiler_api(self).is_some()
    }
}

/// The `tensorflow.ProfileOptions` vishwam captures with, serialized: `version` 1 (field 5),
/// `host_tracer_level` 2 (field 2: the plugin's own TraceMe spans and XLA op executions),
/// `device_tracer_level` 1 (field 3: device activity), every device type (`device_type` 0).
pub const PROFILE_OPTIONS: &[u8] = &[0x28, 0x01, 0x10, 0x02, 0x18, 0x01];

/// A running capture of the plugin's profiler; destroyed on drop.
pub struct Profiler {
    api: Arc<Api>,
    table: *const ProfilerApi,
    handle: *mut PluginProfiler,
}

// SAFETY: the handle is only used through &mut self / drop; the plugin's profiler may be
// driven from any one thread at a time.
unsafe impl Send for Profiler {}

impl std::fmt::Debug for Profiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profiler")
            .field("plugin", &self.api.path())
            .finish()
    }
}

impl Profiler {
    /// Creates the plugin's profiler with `options` (serialized `tensorflow.ProfileOptions`,
    /// e.g. [`PROFILE_OPTIONS`]) and starts it. [`RuntimeError::MissingFunction`] when the
    /// plugin has no profiler extension.
    pub fn start(api: &Arc<Api>, options: &[u8]) -> Result<Profiler> {
        let table = profiler_api(api).ok_or(RuntimeError::MissingFunction {
            function: "PJRT profiler extension",
        })?;
        let mut create = CreateArgs {
            struct_size: std::mem::size_of::<CreateArgs>(),
            options: options.as_ptr().cast(),
            options_size: options.len(),
            profiler: std::ptr::null_mut(),
        };
        // SAFETY: the table was checked to reach collect_data; the args are valid and
        // `options` outlives the call.
        unsafe {
            call(
                table,
                "PLUGIN_Profiler_Create",
                (*table).create,
                &mut create,
            )?
        };
        let profiler = Profiler {
            api: api.clone(),
            table,
            handle: create.profiler,
        };
        let mut args = profiler.handle_args();
        // SAFETY: a live handle from create.
        unsafe { call(table, "PLUGIN_Profiler_Start", (*table).start, &mut args)? };
        Ok(profiler)
    }

    fn handle_args(&self) -> HandleArgs {
        HandleArgs {
            struct_size: std::mem::size_of::<HandleArgs>(),
            profiler: self.handle,
        }
    }

    /// Stops the capture and returns what it collected: serialized
    /// `tensorflow.profiler.XSpace` bytes, as the plugin wrote them.
    pub fn stop_and_collect(self) -> Result<Vec<u8>> {
        let table = self.table;
        let mut args = self.handle_args();
        // SAFETY: a live handle; the table reaches these entries (checked at start).
        unsafe { call(table, "PLUGIN_Profiler_Stop", (*table).stop, &mut args)? };
        let mut collect = CollectArgs {
            struct_size: std::mem::size_of::<CollectArgs>(),
            profiler: self.handle,
            buffer: std::ptr::null_mut(),
            buffer_size_in_bytes: 0,
        };
        // SAFETY: reading an entry of the checked table.
        let collect_fn = unsafe { (*table).collect_data };
        // SAFETY: as above. XLA's plugin tracer answers a null buffer with its own buffer
        // (valid until destroy) and its size; the C API also allows answering with the size
        // only and filling a caller's buffer of that size on a second call.
        unsafe {
            call(
                table,
                "PLUGIN_Profiler_CollectData",
                collect_fn,
                &mut collect,
            )?
        };
        let size = collect.buffer_size_in_bytes;
        if collect.buffer.is_null() && size > 0 {
            let mut owned = vec![0u8; size];
            collect.buffer = owned.as_mut_ptr();
            // SAFETY: the buffer has the size the plugin asked for.
            unsafe {
                call(
                    table,
                    "PLUGIN_Profiler_CollectData",
                    collect_fn,
                    &mut collect,
                )?
            };
            return Ok(owned);
        }
        if size == 0 {
            return Ok(Vec::new());
        }
        // SAFETY: the plugin's buffer of `size` bytes, alive until destroy (in drop, after
        // this copy).
        Ok(unsafe { std::slice::from_raw_parts(collect.buffer, size) }.to_vec())
    }
}

impl Drop for Profiler {
    fn drop(&mut self) {
        let mut args = self.handle_args();
        // SAFETY: destroys the handle create made, once; the table outlives the process.
        let destroy = unsafe { (*self.table).destroy };
        if let Err(e) = unsafe { call(self.table, "PLUGIN_Profiler_Destroy", destroy, &mut args) } {
            tracing::warn!("destroying the plugin's profiler: {e}");
        }
    }
}

/// Calls a profiler-table entry and turns its error (if any) into a [`RuntimeError::Pjrt`],
/// freeing it.
///
/// # Safety
/// `table` is a valid profiler table whose size was checked; `args` fits `f`.
unsafe fn call<A>(
    table: *const ProfilerApi,
    function: &'static str,
    f: ErrorFn<A>,
    args: &mut A,
) -> Result<()> {
    let f = f.ok_or(RuntimeError::MissingFunction { function })?;
    let error = f(args);
    if error.is_null() {
        return Ok(());
    }
    let table = &*table;
    let mut message = ErrorMessageArgs {
        struct_size: std::mem::size_of::<ErrorMessageArgs>(),
        priv_: table.priv_,
        error,
        message: std::ptr::null(),
        message_size: 0,
    };
    let text = match table.error_message {
        Some(m) => {
            m(&mut message);
            bytes_to_string(message.message.cast(), message.message_size)
        }
        None => "<no message>".to_string(),
    };
    let mut code = ErrorCodeArgs {
        struct_size: std::mem::size_of::<ErrorCodeArgs>(),
        priv_: table.priv_,
        error,
        code: 2,
    };
    let raw_code = match table.error_get_code {
        Some(g) if g(&mut code).is_null() => code.code,
        _ => 2,
    };
    if let Some(d) = table.error_destroy {
        let mut destroy = ErrorDestroyArgs {
            struct_size: std::mem::size_of::<ErrorDestroyArgs>(),
            priv_: table.priv_,
            error,
        };
        d(&mut destroy);
    }
    Err(RuntimeError::Pjrt {
        function,
        code: PjrtCode::from_raw(raw_code),
        message: text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn layouts_match_the_c_headers() {
        // Sizes as PROFILER_DEFINE_STRUCT_TRAITS computes them on x86-64.
        assert_eq!(size_of::<ErrorDestroyArgs>(), 24);
        assert_eq!(offset_of!(ErrorMessageArgs, message_size), 32);
        assert_eq!(offset_of!(ErrorCodeArgs, code), 24);
        assert_eq!(size_of::<CreateArgs>(), 32);
        assert_eq!(size_of::<HandleArgs>(), 16);
        assert_eq!(offset_of!(CollectArgs, buffer), 16);
        assert_eq!(offset_of!(CollectArgs, buffer_size_in_bytes), 24);
        assert_eq!(offset_of!(ProfilerApi, create), 40);
        assert_eq!(offset_of!(ProfilerApi, collect_data), 72);
        assert_eq!(offset_of!(ProfilerExtension, profiler_api), 24);
    }
}
