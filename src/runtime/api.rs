//! Loading a PJRT plugin and calling its function table.

use super::ffi;
use super::{PjrtCode, Result, RuntimeError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// PJRT C API major version vishwam speaks.
pub const API_MAJOR: i32 = 0;
/// Oldest minor version whose struct layouts vishwam's bindings cover.
pub const MIN_API_MINOR: i32 = 81;

/// A loaded plugin: the shared library and its `PJRT_Api` table. The library stays loaded
/// until the process exits: XLA's plugins do not survive being unloaded and loaded again (a
/// second client after the first was dropped crashed the process at exit).
pub struct Api {
    table: *const ffi::PJRT_Api,
    path: PathBuf,
    version: (i32, i32),
    _library: std::mem::ManuallyDrop<libloading::Library>,
}

// SAFETY: the PJRT_Api table is immutable after loading and PJRT functions are thread-safe.
unsafe impl Send for Api {}
// SAFETY: as above.
unsafe impl Sync for Api {}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("path", &self.path)
            .field("version", &self.version)
            .finish()
    }
}

impl Api {
    /// The plugin at `path`, loaded and initialised once per process ([`Api::load`]) and
    /// shared by every client opened on it afterwards.
    pub fn shared(path: &Path) -> Result<Arc<Api>> {
        static LOADED: OnceLock<Mutex<HashMap<PathBuf, Arc<Api>>>> = OnceLock::new();
        let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let mut loaded = LOADED
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(api) = loaded.get(&key) {
            return Ok(api.clone());
        }
        let api = Arc::new(Api::load(path)?);
        loaded.insert(key, api.clone());
        Ok(api)
    }

    /// Opens the plugin at `path`, checks its API version and initialises it.
    pub fn load(path: &Path) -> Result<Api> {
        if !path.is_file() {
            return Err(RuntimeError::PluginLoad {
                path: path.to_path_buf(),
                detail: "no such file; pass --plugin PATH or set VISHWAM_PJRT_PLUGIN".into(),
            });
        }
        // SAFETY: loading a shared library runs its initialisers; PJRT plugins are designed to
        // be dlopen'ed by frameworks this way.
        let library =
            unsafe { libloading::Library::new(path) }.map_err(|e| RuntimeError::PluginLoad {
                path: path.to_path_buf(),
                detail: e.to_string(),
            })?;
        // SAFETY: `GetPjrtApi` is the documented entry point, `const PJRT_Api* GetPjrtApi()`.
        let table = unsafe {
            let get: libloading::Symbol<unsafe extern "C" fn() -> *const ffi::PJRT_Api> = library
                .get(b"GetPjrtApi\0")
                .map_err(|e| RuntimeError::PluginLoad {
                    path: path.to_path_buf(),
                    detail: format!("not a PJRT plugin (no GetPjrtApi symbol): {e}"),
                })?;
            get()
        };
        if table.is_null() {
            return Err(RuntimeError::PluginLoad {
                path: path.to_path_buf(),
                detail: "GetPjrtApi returned null".into(),
            });
        }
        // SAFETY: non-null table returned by the plugin, valid for the library's lifetime.
        let version = unsafe {
            let v = &(*table).pjrt_api_version;
            (v.major_version, v.minor_version)
        };
        if version.0 != API_MAJOR || version.1 < MIN_API_MINOR {
            return Err(RuntimeError::IncompatibleApi {
                path: path.to_path_buf(),
                major: version.0,
                minor: version.1,
                expected_major: API_MAJOR,
                min_minor: MIN_API_MINOR,
            });
        }
        let api = Api {
            table,
            path: path.to_path_buf(),
            version,
            _library: std::mem::ManuallyDrop::new(library),
        };
        let mut args = ffi::PJRT_Plugin_Initialize_Args::new();
        // SAFETY: the table entry is checked by `call!`; args is a valid struct.
        unsafe { crate::pjrt_call!(api, PJRT_Plugin_Initialize, &mut args)? };
        Ok(api)
    }

    /// The plugin file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The PJRT C API version (major, minor) the plugin was built with.
    pub fn version(&self) -> (i32, i32) {
        self.version
    }

    /// The raw function table.
    pub(crate) fn table(&self) -> &ffi::PJRT_Api {
        // SAFETY: non-null, checked at load, lives as long as the library we hold.
        unsafe { &*self.table }
    }

    /// Plugin attributes as `(name, value)` strings (e.g. `xla_version`).
    pub fn attributes(&self) -> Result<Vec<(String, String)>> {
        let mut args = ffi::PJRT_Plugin_Attributes_Args::new();
        // SAFETY: valid args; the attributes live as long as the process.
        unsafe { crate::pjrt_call!(self, PJRT_Plugin_Attributes, &mut args)? };
        if args.num_attributes == 0 {
            return Ok(Vec::new());
        }
        // SAFETY: the plugin returned an array of `num_attributes` named values.
        let values =
            unsafe { super::device::read_named_values(args.attributes, args.num_attributes) };
        Ok(values
            .into_iter()
            .map(|(name, value)| (name, value.to_string()))
            .collect())
    }

    /// Turns a PJRT error pointer into a typed error (and frees it). Null means success.
    pub(crate) fn check(&self, function: &'static str, error: *mut ffi::PJRT_Error) -> Result<()> {
        if error.is_null() {
            return Ok(());
        }
        let table = self.table();
        let mut msg = ffi::PJRT_Error_Message_Args::new();
        msg.error = error;
        let mut code = ffi::PJRT_Error_GetCode_Args::new();
        code.error = error;
        let mut destroy = ffi::PJRT_Error_Destroy_Args::new();
        destroy.error = error;
        // SAFETY: error is a live PJRT_Error from this plugin; the message lives until destroy.
        unsafe {
            let message = match table.PJRT_Error_Message {
                Some(f) => {
                    f(&mut msg);
                    bytes_to_string(msg.message.cast(), msg.message_size)
                }
                None => "<no message>".to_string(),
            };
            let raw_code = match table.PJRT_Error_GetCode {
                Some(f) if f(&mut code).is_null() => code.code,
                _ => 2,
            };
            if let Some(f) = table.PJRT_Error_Destroy {
                f(&mut destroy);
            }
            Err(RuntimeError::Pjrt {
                function,
                code: PjrtCode::from_raw(raw_code),
                message,
            })
        }
    }
}

/// Copies a (pointer, length) byte string from the plugin into an owned `String`.
///
/// # Safety
/// `ptr` must point to `len` readable bytes, or be null.
pub(crate) unsafe fn bytes_to_string(ptr: *const u8, len: usize) -> String {
    if ptr.is_null() {
        return String::new();
    }
    String::from_utf8_lossy(std::slice::from_raw_parts(ptr, len)).into_owned()
}

/// Calls a PJRT function-table entry with an argument struct and checks the returned error.
///
/// Fails with [`RuntimeError::MissingFunction`] when the plugin's table is too short to
/// contain the entry or the entry is null.
#[macro_export]
#[doc(hidden)]
macro_rules! pjrt_call {
    ($api:expr, $name:ident, $args:expr) => {{
        let api: &$crate::runtime::Api = &$api;
        let table = api.table();
        if table.struct_size < $crate::pjrt_slot_end!($name) {
            Err($crate::runtime::RuntimeError::MissingFunction {
                function: stringify!($name),
            })
        } else {
            match table.$name {
                Some(f) => api.check(stringify!($name), f($args)),
                None => Err($crate::runtime::RuntimeError::MissingFunction {
                    function: stringify!($name),
                }),
            }
        }
    }};
}
