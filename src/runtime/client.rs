//! The PJRT client: devices, compilation and host-to-device transfers.

use super::api::bytes_to_string;
use super::key_value::{CallbackStore, KeyValueStore};
use super::multi_process::ProcessPlacement;
use super::staging::{self, StagingPool};
use super::{
    ffi, Api, Buffer, CompileOptions, Device, ElementType, LoadedExecutable, Result, RuntimeError,
    StagingStats,
};
use std::ffi::c_void;
use std::sync::Arc;

/// Options passed to `PJRT_Client_Create`.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// For the CPU plugin: the number of virtual devices (`cpu_device_count`).
    pub cpu_device_count: Option<usize>,
    /// Further named create options, passed as given (e.g. the CUDA plugin's `num_nodes`,
    /// `node_id`, `visible_devices`, or the CPU plugin's `process_id`). A plugin rejects a
    /// name it does not know.
    pub named: Vec<(String, CreateOption)>,
    /// The job's key-value store, reached by the plugin through the `kv_*` callbacks; kept
    /// alive as long as the client.
    pub key_value_store: Option<Arc<dyn KeyValueStore>>,
}

/// The value of one named create option (`PJRT_NamedValue`).
#[derive(Debug, Clone, PartialEq)]
pub enum CreateOption {
    /// `kInt64`.
    Int64(i64),
    /// `kInt64List`.
    Int64List(Vec<i64>),
    /// `kString`.
    Str(String),
    /// `kBool`.
    Bool(bool),
    /// `kFloat`.
    Float(f32),
}

impl ClientOptions {
    /// For the CUDA plugin on one GPU: pretend to be `hosts` hosts of one GPU each, with
    /// mocked NCCL (`enable_mock_nccl`, `num_nodes`, `mock_gpu_topology` "1xNx1", as read by
    /// XLA's `pjrt_c_api_gpu_internal.cc`, which checks the last figure against the local GPU
    /// count). Programs compile for all of them; only the local GPU is addressable, and
    /// collectives do nothing, so results are not meaningful.
    pub fn mock_gpu_hosts(mut self, hosts: usize) -> ClientOptions {
        self.named.extend([
            ("enable_mock_nccl".to_string(), CreateOption::Bool(true)),
            ("num_nodes".to_string(), CreateOption::Int64(hosts as i64)),
            (
                "mock_gpu_topology".to_string(),
                CreateOption::Str(format!("1x{hosts}x1")),
            ),
        ]);
        self
    }

    /// The options as `PJRT_NamedValue`s that borrow from `self`.
    fn named_values(&self) -> Vec<ffi::PJRT_NamedValue> {
        let cpu = self
            .cpu_device_count
            .map(|n| ("cpu_device_count", CreateOption::Int64(n as i64)));
        let mut values: Vec<ffi::PJRT_NamedValue> = Vec::new();
        let mut push = |name: &str, value: &CreateOption| {
            let (type_, raw, size) = match value {
                CreateOption::Int64(v) => (ffi::NAMED_VALUE_INT64, *v as u64, 1),
                CreateOption::Int64List(v) => (
                    ffi::NAMED_VALUE_INT64_LIST,
                    v.as_ptr() as usize as u64,
                    v.len(),
                ),
                CreateOption::Str(v) => {
                    (ffi::NAMED_VALUE_STRING, v.as_ptr() as usize as u64, v.len())
                }
                CreateOption::Bool(v) => (ffi::NAMED_VALUE_BOOL, *v as u64, 1),
                CreateOption::Float(v) => (ffi::NAMED_VALUE_FLOAT, v.to_bits() as u64, 1),
            };
            values.push(ffi::PJRT_NamedValue {
                struct_size: std::mem::size_of::<ffi::PJRT_NamedValue>(),
                extension_start: std::ptr::null_mut(),
                name: name.as_ptr().cast(),
                name_size: name.len(),
                type_,
                value: raw,
                value_size: size,
            });
        };
        // `cpu` lives in this frame only for its integer, which is copied into the value.
        if let Some((name, value)) = &cpu {
            push(name, value);
        }
        for (name, value) in &self.named {
            push(name, value);
        }
        values
    }
}

/// Shared state behind a [`Client`] and every object created from it.
pub(crate) struct ClientInner {
    pub(crate) api: Arc<Api>,
    pub(crate) raw: *mut ffi::PJRT_Client,
    pub(crate) devices: Vec<*mut ffi::PJRT_Device>,
    /// Staging blocks for zero-copy host-to-device transfers (the CPU plugin only).
    pub(crate) staging: Option<Arc<StagingPool>>,
    /// The key-value store behind the plugin's callbacks; dropped after the client is
    /// destroyed (fields drop after `Drop::drop`), as the plugin may use it until then.
    pub(crate) _callback_store: Option<Box<CallbackStore>>,
}

// SAFETY: PJRT clients are thread-safe; the pointers are only used through the PJRT API.
unsafe impl Send for ClientInner {}
// SAFETY: as above.
unsafe impl Sync for ClientInner {}

impl ClientInner {
    /// Platform name, e.g. `cpu`, `cuda`, `tpu`.
    fn platform_name(&self) -> Result<String> {
        let mut args = ffi::PJRT_Client_PlatformName_Args::new();
        args.client = self.raw;
        // SAFETY: valid args; the string is owned by the client.
        unsafe {
            crate::pjrt_call!(*self.api, PJRT_Client_PlatformName, &mut args)?;
            Ok(bytes_to_string(
                args.platform_name.cast(),
                args.platform_name_size,
            ))
        }
    }
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        let mut args = ffi::PJRT_Client_Destroy_Args::new();
        args.client = self.raw;
        // SAFETY: the client is live and every buffer/executable holding it has been dropped.
        let _ = unsafe { crate::pjrt_call!(*self.api, PJRT_Client_Destroy, &mut args) };
    }
}

/// A PJRT client on one plugin: owns the devices and creates buffers and executables.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<ClientInner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("plugin", &self.inner.api.path())
            .field("devices", &self.inner.devices.len())
            .finish()
    }
}

impl Client {
    /// Creates a client on a loaded plugin.
    pub fn new(api: Arc<Api>, options: &ClientOptions) -> Result<Client> {
        let values = options.named_values();
        let callback_store = options.key_value_store.clone().map(CallbackStore::new);
        let mut args = ffi::PJRT_Client_Create_Args::new();
        args.create_options = values.as_ptr();
        args.num_options = values.len();
        if let Some(store) = &callback_store {
            store.install(&mut args);
        }
        // SAFETY: args, the option array and the strings and lists it points into (borrowed
        // from `options`) outlive the call; the callback store outlives the client.
        unsafe { crate::pjrt_call!(*api, PJRT_Client_Create, &mut args)? };
        let raw = args.client;

        let mut dev_args = ffi::PJRT_Client_AddressableDevices_Args::new();
        dev_args.client = raw;
        let listed =
            unsafe { crate::pjrt_call!(*api, PJRT_Client_AddressableDevices, &mut dev_args) };
        let devices = match listed {
            // SAFETY: the plugin returned `num_addressable_devices` device pointers owned by the client.
            Ok(()) => unsafe {
                std::slice::from_raw_parts(
                    dev_args.addressable_devices,
                    dev_args.num_addressable_devices,
                )
                .to_vec()
            },
            Err(e) => {
                let mut destroy = ffi::PJRT_Client_Destroy_Args::new();
                destroy.client = raw;
                // SAFETY: destroying the client we just created.
                let _ = unsafe { crate::pjrt_call!(*api, PJRT_Client_Destroy, &mut destroy) };
                return Err(e);
            }
        };
        let mut client = ClientInner {
            api,
            raw,
            devices,
            staging: None,
            _callback_store: callback_store,
        };
        // On failure `client` drops and destroys the PJRT client.
        let platform = client.platform_name()?;
        client.staging = StagingPool::for_platform(&client.api, &platform);
        Ok(Client {
            inner: Arc::new(client),
        })
    }

    /// The plugin this client runs on.
    pub fn api(&self) -> &Arc<Api> {
        &self.inner.api
    }

    /// Platform name, e.g. `cpu`, `cuda`, `tpu`.
    pub fn platform_name(&self) -> Result<String> {
        self.inner.platform_name()
    }

    /// Platform version string (e.g. the CUDA version or libtpu build).
    pub fn platform_version(&self) -> Result<String> {
        let mut args = ffi::PJRT_Client_PlatformVersion_Args::new();
        args.client = self.inner.raw;
        // SAFETY: valid args; the string is owned by the client.
        unsafe {
            crate::pjrt_call!(*self.inner.api, PJRT_Client_PlatformVersion, &mut args)?;
            Ok(bytes_to_string(
                args.platform_version.cast(),
                args.platform_version_size,
            ))
        }
    }

    /// Number of addressable devices.
    pub fn num_devices(&self) -> usize {
        self.inner.devices.len()
    }

    /// The addressable devices, in the plugin's order.
    pub fn devices(&self) -> Vec<Device> {
        (0..self.inner.devices.len())
            .map(|i| Device::new(self.inner.clone(), i))
            .collect()
    }

    /// Compiles StableHLO MLIR text into an executable loaded on this client's devices.
    pub fn compile(&self, mlir: &str, options: &CompileOptions) -> Result<LoadedExecutable> {
        let format = b"mlir";
        let program = ffi::PJRT_Program {
            struct_size: std::mem::size_of::<ffi::PJRT_Program>(),
            extension_start: std::ptr::null_mut(),
            code: mlir.as_ptr() as *mut _,
            code_size: mlir.len(),
            format: format.as_ptr().cast(),
            format_size: format.len(),
        };
        let proto = options.to_proto_bytes();
        let mut args = ffi::PJRT_Client_Compile_Args::new();
        args.client = self.inner.raw;
        args.program = &program;
        args.compile_options = proto.as_ptr().cast();
        args.compile_options_size = proto.len();
        // SAFETY: program text and options outlive the call; the plugin copies what it keeps.
        unsafe { crate::pjrt_call!(*self.inner.api, PJRT_Client_Compile, &mut args)? };
        LoadedExecutable::from_raw(self.inner.clone(), args.executable)
    }

    /// Loads an executable serialized by [`LoadedExecutable::serialize`] on this client.
    pub fn deserialize_executable(&self, bytes: &[u8]) -> Result<LoadedExecutable> {
        let mut args = ffi::PJRT_Executable_DeserializeAndLoad_Args::new();
        args.client = self.inner.raw;
        args.serialized_executable = bytes.as_ptr().cast();
        args.serialized_executable_size = bytes.len();
        // SAFETY: bytes outlive the call.
        unsafe {
            crate::pjrt_call!(
                *self.inner.api,
                PJRT_Executable_DeserializeAndLoad,
                &mut args
            )?
        };
        LoadedExecutable::from_raw(self.inner.clone(), args.loaded_executable)
    }

    /// Copies a dense row-major host array to device `device` (an index into [`Client::devices`]).
    ///
    /// `data` may be reused as soon as this returns. On the CPU plugin the bytes are copied
    /// into a warm staging block that becomes the device buffer (see [`StagingStats`]);
    /// elsewhere the plugin copies them and this waits until it has.
    pub fn buffer_from_bytes(
        &self,
        data: &[u8],
        element_type: ElementType,
        dims: &[i64],
        device: usize,
    ) -> Result<Buffer> {
        let count: i64 = dims.iter().product();
        let expected = count as usize * element_type.size_in_bytes();
        if data.len() != expected || dims.iter().any(|&d| d < 0) {
            return Err(RuntimeError::HostSize {
                element_type,
                dims: dims.to_vec(),
                expected,
                actual: data.len(),
            });
        }
        let raw_device = *self.inner.devices.get(device).ok_or_else(|| {
            RuntimeError::Other(format!(
                "device index {device} out of range: the client has {} devices",
                self.inner.devices.len()
            ))
        })?;
        if let Some(pool) = &self.inner.staging {
            let staged =
                staging::transfer(&self.inner, pool, data, element_type, dims, raw_device)?;
            if let Some(buffer) = staged {
                return Ok(buffer);
            }
        }
        let mut args = ffi::PJRT_Client_BufferFromHostBuffer_Args::new();
        args.client = self.inner.raw;
        args.data = data.as_ptr() as *const c_void;
        args.type_ = element_type.to_raw();
        args.dims = dims.as_ptr();
        args.num_dims = dims.len();
        args.host_buffer_semantics = ffi::HOST_BUFFER_IMMUTABLE_UNTIL_TRANSFER_COMPLETES;
        args.device = raw_device;
        // SAFETY: `data` stays borrowed until we have awaited `done_with_host_buffer` below.
        unsafe { crate::pjrt_call!(*self.inner.api, PJRT_Client_BufferFromHostBuffer, &mut args)? };
        let buffer = Buffer::from_raw(self.inner.clone(), args.buffer);
        super::event::await_and_destroy(&self.inner.api, args.done_with_host_buffer)?;
        Ok(buffer)
    }

    /// What the staging pool of host-to-device transfers has done; `None` when this client
    /// does not stage (a platform other than the CPU, or a plugin without
    /// `PJRT_Event_OnReady` / `PJRT_Buffer_UnsafePointer`).
    pub fn staging_stats(&self) -> Option<StagingStats> {
        self.inner.staging.as_ref().map(|pool| pool.stats())
    }

    /// Copies a slice of native scalars to a device.
    pub fn buffer_from_slice<T: super::NativeType>(
        &self,
        data: &[T],
        dims: &[i64],
        device: usize,
    ) -> Result<Buffer> {
        self.buffer_from_bytes(bytemuck::cast_slice(data), T::ELEMENT_TYPE, dims, device)
    }
}

/// How to open a client: which platform, how many devices, which plugin.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    /// The platform.
    pub platform: super::Platform,
    /// For the CPU: the number of virtual devices (default 1). Elsewhere: must not exceed the
    /// devices present (checked by the caller that builds the mesh).
    pub devices: Option<usize>,
    /// `--plugin PATH`, highest priority.
    pub plugin: Option<std::path::PathBuf>,
    /// `runtime.plugin` from the config, after `VISHWAM_PJRT_PLUGIN`.
    pub config_plugin: Option<std::path::PathBuf>,
}

impl ClientSpec {
    /// The CPU with `devices` virtual devices and the default plugin search.
    pub fn cpu(devices: usize) -> ClientSpec {
        ClientSpec {
            platform: super::Platform::Cpu,
            devices: Some(devices),
            plugin: None,
            config_plugin: None,
        }
    }

    /// Resolves the plugin, loads it and creates the client.
    pub fn open(&self) -> Result<Client> {
        self.open_as(None)
    }

    /// As [`ClientSpec::open`], as one process of a multi-process job when `placement` is
    /// given: the platform's process options and the job's store
    /// ([`ProcessPlacement::create_options`]).
    pub fn open_as(&self, placement: Option<&ProcessPlacement>) -> Result<Client> {
        let path = super::resolve_plugin(
            self.platform,
            self.plugin.as_deref(),
            self.config_plugin.as_deref(),
        )?;
        let api = Api::shared(&path)?;
        let mut options = ClientOptions {
            cpu_device_count: match self.platform {
                super::Platform::Cpu => Some(self.devices.unwrap_or(1)),
                _ => None,
            },
            ..ClientOptions::default()
        };
        if let Some(placement) = placement {
            options
                .named
                .extend(placement.create_options(self.platform)?);
            options.key_value_store = Some(placement.store.clone());
        }
        Client::new(api, &options)
    }
}
