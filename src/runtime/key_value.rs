//! The key-value store a multi-process client shares with its peers, and the C callbacks
//! through which the plugin reaches it (`kv_get_callback`, `kv_try_get_callback`,
//! `kv_put_callback` of `PJRT_Client_Create_Args`).
//!
//! The CUDA plugin exchanges its processes' topologies (`local_topology/cuda/<node>`,
//! `global_topology/cuda`) and NCCL clique ids through them, at client creation and at the
//! first collective, so the store is kept alive with the client ([`CallbackStore`] lives in
//! the client and is dropped after `PJRT_Client_Destroy`).

use super::{ffi, PjrtCode};
use std::ffi::{c_char, c_void};
use std::sync::Arc;
use std::time::Duration;

/// Why a store operation failed, as the plugin will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValueError {
    /// The PJRT status code the plugin receives (`DeadlineExceeded` for a get that timed
    /// out, `NotFound` for a missing key of try-get, `Unavailable` for a lost store,
    /// `Aborted` when the job failed).
    pub code: PjrtCode,
    /// What happened.
    pub message: String,
}

/// A store shared by the processes of one job; implementations must be thread-safe (the
/// plugin calls from several threads).
pub trait KeyValueStore: Send + Sync + std::fmt::Debug {
    /// The value of `key`, waiting up to `timeout` for it to be put.
    fn get(&self, key: &[u8], timeout: Duration) -> Result<Vec<u8>, KeyValueError>;
    /// The value of `key` if it exists now.
    fn try_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KeyValueError>;
    /// Stores `value` under `key`.
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), KeyValueError>;
}

/// The callbacks' `user_arg`: the store, owned by the client that was created with it.
#[derive(Debug)]
pub(crate) struct CallbackStore {
    store: Arc<dyn KeyValueStore>,
}

impl CallbackStore {
    /// Boxes `store` so that its address is stable for the client's lifetime.
    pub(crate) fn new(store: Arc<dyn KeyValueStore>) -> Box<CallbackStore> {
        Box::new(CallbackStore { store })
    }

    /// Fills the callback fields of `args` with this store.
    pub(crate) fn install(self: &CallbackStore, args: &mut ffi::PJRT_Client_Create_Args) {
        let user_arg = self as *const CallbackStore as *mut c_void;
        args.kv_get_callback = Some(kv_get);
        args.kv_get_user_arg = user_arg;
        args.kv_try_get_callback = Some(kv_try_get);
        args.kv_try_get_user_arg = user_arg;
        args.kv_put_callback = Some(kv_put);
        args.kv_put_user_arg = user_arg;
    }
}

/// The wait of a get whose timeout is negative (a year: longer than any job).
const WAIT_FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// Bytes of the length header in front of every value handed to the plugin.
const HEADER: usize = std::mem::size_of::<usize>();

/// Copies `value` into a block the plugin frees with [`free_value`]: a `usize` length header,
/// then the bytes; the pointer returned points past the header.
fn allocate_value(value: &[u8]) -> *mut c_char {
    let layout = std::alloc::Layout::from_size_align(HEADER + value.len(), HEADER)
        .expect("a value smaller than isize::MAX");
    // SAFETY: the layout has a non-zero size (the header); the block is written in full below.
    unsafe {
        let block = std::alloc::alloc(layout);
        if block.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        (block as *mut usize).write(value.len());
        std::ptr::copy_nonoverlapping(value.as_ptr(), block.add(HEADER), value.len());
        block.add(HEADER) as *mut c_char
    }
}

/// `value_deleter_callback`: frees a value made by [`allocate_value`].
unsafe extern "C" fn free_value(value: *mut c_char) {
    if value.is_null() {
        return;
    }
    // SAFETY: `value` came from `allocate_value`, so a length header precedes it.
    unsafe {
        let block = (value as *mut u8).sub(HEADER);
        let len = (block as *const usize).read();
        let layout = std::alloc::Layout::from_size_align_unchecked(HEADER + len, HEADER);
        std::alloc::dealloc(block, layout);
    }
}

fn code_to_raw(code: PjrtCode) -> i32 {
    match code {
        PjrtCode::Cancelled => 1,
        PjrtCode::Unknown => 2,
        PjrtCode::InvalidArgument => 3,
        PjrtCode::DeadlineExceeded => 4,
        PjrtCode::NotFound => 5,
        PjrtCode::AlreadyExists => 6,
        PjrtCode::PermissionDenied => 7,
        PjrtCode::ResourceExhausted => 8,
        PjrtCode::FailedPrecondition => 9,
        PjrtCode::Aborted => 10,
        PjrtCode::OutOfRange => 11,
        PjrtCode::Unimplemented => 12,
        PjrtCode::Internal => 13,
        PjrtCode::Unavailable => 14,
        PjrtCode::DataLoss => 15,
        PjrtCode::Unauthenticated => 16,
        PjrtCode::Other(raw) => raw,
    }
}

/// Turns `error` into the plugin's `PJRT_Error` through its `callback_error`.
///
/// # Safety
/// `callback_error` must be the pointer the plugin passed in the callback's args.
unsafe fn report(
    callback_error: *mut ffi::PJRT_CallbackError,
    error: &KeyValueError,
) -> *mut ffi::PJRT_Error {
    // SAFETY: the plugin passes a valid pointer to its error constructor.
    match unsafe { callback_error.as_ref() }.copied().flatten() {
        Some(make) => unsafe {
            make(
                code_to_raw(error.code),
                error.message.as_ptr().cast(),
                error.message.len(),
            )
        },
        None => {
            tracing::error!(
                "key-value store: {} (the plugin gave no error callback)",
                error.message
            );
            std::ptr::null_mut()
        }
    }
}

/// Runs a callback body, turning a panic into an `Internal` error (no unwinding into C).
fn guarded(body: impl FnOnce() -> Result<(), KeyValueError>) -> Result<(), KeyValueError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or_else(|_| {
        Err(KeyValueError {
            code: PjrtCode::Internal,
            message: "the key-value callback panicked".into(),
        })
    })
}

/// # Safety
/// `ptr` must point at `len` readable bytes, or `len` must be 0.
unsafe fn bytes<'a>(ptr: *const c_char, len: usize) -> &'a [u8] {
    match len {
        0 => &[],
        // SAFETY: as the caller promises.
        _ => unsafe { std::slice::from_raw_parts(ptr.cast(), len) },
    }
}

unsafe extern "C" fn kv_get(args: *mut ffi::PJRT_KeyValueGetCallback_Args) -> *mut ffi::PJRT_Error {
    // SAFETY: the plugin passes valid args whose user_arg is our CallbackStore.
    let args = unsafe { &mut *args };
    let store = unsafe { &*(args.user_arg as *const CallbackStore) };
    let result = guarded(|| {
        let key = unsafe { bytes(args.key, args.key_size) };
        // A negative timeout (an infinite `absl::Duration` cast to int) waits as long as the
        // job lives: the store ends every wait when a process fails.
        let timeout = match args.timeout_in_ms {
            ms if ms < 0 => WAIT_FOREVER,
            ms => Duration::from_millis(ms as u64),
        };
        let value = store.store.get(key, timeout)?;
        args.value_size = value.len();
        args.value = allocate_value(&value);
        args.value_deleter_callback = Some(free_value);
        Ok(())
    });
    match result {
        Ok(()) => std::ptr::null_mut(),
        // SAFETY: the plugin's own callback_error.
        Err(e) => unsafe { report(args.callback_error, &e) },
    }
}

unsafe extern "C" fn kv_try_get(
    args: *mut ffi::PJRT_KeyValueTryGetCallback_Args,
) -> *mut ffi::PJRT_Error {
    // SAFETY: as in kv_get.
    let args = unsafe { &mut *args };
    let store = unsafe { &*(args.user_arg as *const CallbackStore) };
    let result = guarded(|| {
        let key = unsafe { bytes(args.key, args.key_size) };
        match store.store.try_get(key)? {
            Some(value) => {
                args.value_size = value.len();
                args.value = allocate_value(&value);
                args.value_deleter_callback = Some(free_value);
                Ok(())
            }
            None => Err(KeyValueError {
                code: PjrtCode::NotFound,
                message: format!("key {:?} not found", key.escape_ascii().to_string()),
            }),
        }
    });
    match result {
        Ok(()) => std::ptr::null_mut(),
        // SAFETY: the plugin's own callback_error.
        Err(e) => unsafe { report(args.callback_error, &e) },
    }
}

unsafe extern "C" fn kv_put(args: *mut ffi::PJRT_KeyValuePutCallback_Args) -> *mut ffi::PJRT_Error {
    // SAFETY: as in kv_get; key and value live for the call.
    let args = unsafe { &mut *args };
    let store = unsafe { &*(args.user_arg as *const CallbackStore) };
    let result = guarded(|| {
        let (key, value) = unsafe {
            (
                bytes(args.key, args.key_size),
                bytes(args.value, args.value_size),
            )
        };
        store.store.put(key, value)
    });
    match result {
        Ok(()) => std::ptr::null_mut(),
        // SAFETY: the plugin's own callback_error.
        Err(e) => unsafe { report(args.callback_error, &e) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    #[derive(Debug, Default)]
    struct MapStore(Mutex<HashMap<Vec<u8>, Vec<u8>>>);

    impl KeyValueStore for MapStore {
        fn get(&self, key: &[u8], _timeout: Duration) -> Result<Vec<u8>, KeyValueError> {
            self.try_get(key)?.ok_or(KeyValueError {
                code: PjrtCode::DeadlineExceeded,
                message: "timed out".into(),
            })
        }
        fn try_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KeyValueError> {
            Ok(self.0.lock().unwrap().get(key).cloned())
        }
        fn put(&self, key: &[u8], value: &[u8]) -> Result<(), KeyValueError> {
            self.0.lock().unwrap().insert(key.to_vec(), value.to_vec());
            Ok(())
        }
    }

    /// What the plugin does: put through the callback, get the value back through the other
    /// callbacks, copy it, then call the deleter; a missing key reaches the error callback.
    #[test]
    fn callbacks_round_trip_binary_values_as_the_plugin_calls_them() {
        static ERRORS: Mutex<Vec<(i32, String)>> = Mutex::new(Vec::new());
        unsafe extern "C" fn make_error(
            code: i32,
            m: *const c_char,
            n: usize,
        ) -> *mut ffi::PJRT_Error {
            let message = String::from_utf8_lossy(unsafe { bytes(m, n) }).into_owned();
            ERRORS.lock().unwrap().push((code, message));
            std::ptr::NonNull::dangling().as_ptr()
        }
        let holder = CallbackStore::new(Arc::new(MapStore::default()));
        let mut create = ffi::PJRT_Client_Create_Args::new();
        holder.install(&mut create);
        let mut make: ffi::PJRT_CallbackError = Some(make_error);
        let key = b"global_topology/cuda\0x";
        let value: Vec<u8> = (0..=255u8).collect();
        let mut put = ffi::PJRT_KeyValuePutCallback_Args::new();
        (put.key, put.key_size) = (key.as_ptr().cast(), key.len());
        (put.value, put.value_size) = (value.as_ptr().cast(), value.len());
        put.callback_error = &mut make;
        put.user_arg = create.kv_put_user_arg;
        assert!(unsafe { create.kv_put_callback.unwrap()(&mut put) }.is_null());

        let mut get = ffi::PJRT_KeyValueGetCallback_Args::new();
        (get.key, get.key_size, get.timeout_in_ms) = (key.as_ptr().cast(), key.len(), 1000);
        get.callback_error = &mut make;
        get.user_arg = create.kv_get_user_arg;
        assert!(unsafe { create.kv_get_callback.unwrap()(&mut get) }.is_null());
        let copied = unsafe { bytes(get.value, get.value_size) }.to_vec();
        unsafe { get.value_deleter_callback.unwrap()(get.value) };
        assert_eq!(copied, value);

        let mut try_get = ffi::PJRT_KeyValueTryGetCallback_Args::new();
        (try_get.key, try_get.key_size) = (b"missing".as_ptr().cast(), 7);
        try_get.callback_error = &mut make;
        try_get.user_arg = create.kv_try_get_user_arg;
        assert!(!unsafe { create.kv_try_get_callback.unwrap()(&mut try_get) }.is_null());
        let errors = ERRORS.lock().unwrap().clone();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, 5, "NOT_FOUND");
        assert!(errors[0].1.contains("missing"), "{errors:?}");
    }
}
