//! A client as one process of a multi-process job: the create options each platform takes,
//! and the job's global device list.

use super::api::bytes_to_string;
use super::{ffi, Client, CreateOption, KeyValueStore, Platform, Result, RuntimeError};
use std::sync::Arc;

/// Where this process sits in a multi-process job, for `PJRT_Client_Create`.
#[derive(Debug, Clone)]
pub struct ProcessPlacement {
    /// This process, 0-based.
    pub process_id: usize,
    /// Processes in the job.
    pub num_processes: usize,
    /// The job's key-value store (the plugin's `kv_*` callbacks).
    pub store: Arc<dyn KeyValueStore>,
    /// CUDA only: the local GPU ordinals this process uses (`visible_devices`).
    pub visible_devices: Option<Vec<i64>>,
    /// Further named create options, passed as given after the platform's own.
    pub extra_options: Vec<(String, CreateOption)>,
}

impl ProcessPlacement {
    /// The named create options of `platform` for this process:
    /// - cpu: `process_id` (the CPU plugin's only multi-process option; it ignores the
    ///   store and cannot compile a program whose devices span processes);
    /// - cuda: `num_nodes`, `node_id` and, when given, `visible_devices` (the plugin then
    ///   exchanges its topology through the store at creation, and NCCL ids at the first
    ///   collective);
    /// - tpu: none (libtpu finds its peers from the TPU VM's environment, `TPU_WORKER_ID`,
    ///   `TPU_WORKER_HOSTNAMES`); the store is still passed.
    pub fn create_options(&self, platform: Platform) -> Result<Vec<(String, CreateOption)>> {
        if self.visible_devices.is_some() && platform != Platform::Cuda {
            return Err(RuntimeError::Other(format!(
                "--visible-devices is a CUDA plugin option (visible_devices); the platform \
                 here is {}",
                platform.name()
            )));
        }
        let int = |name: &str, v: usize| (name.to_string(), CreateOption::Int64(v as i64));
        let mut options = match platform {
            Platform::Cpu => vec![int("process_id", self.process_id)],
            Platform::Cuda => {
                let mut options = vec![
                    int("num_nodes", self.num_processes),
                    int("node_id", self.process_id),
                ];
                if let Some(visible) = &self.visible_devices {
                    options.push((
                        "visible_devices".to_string(),
                        CreateOption::Int64List(visible.clone()),
                    ));
                }
                options
            }
            Platform::Tpu => Vec::new(),
        };
        for (name, value) in &self.extra_options {
            if options.iter().any(|(own, _)| own == name) || name == "cpu_device_count" {
                return Err(RuntimeError::Other(format!(
                    "client option {name} is set by vishwam itself for a multi-process run \
                     (from --process-id, --num-processes, --visible-devices or --devices); \
                     remove --client-option {name}=..."
                )));
            }
            options.push((name.clone(), value.clone()));
        }
        Ok(options)
    }
}

/// One device of the job as a client sees it (`PJRT_Client_Devices`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalDevice {
    /// The global device id.
    pub id: i32,
    /// The process that owns it.
    pub process_index: i32,
    /// The device kind.
    pub kind: String,
    /// Whether this process can issue work to it.
    pub addressable: bool,
}

impl Client {
    /// This client's process index (0 in a single-process run).
    pub fn process_index(&self) -> Result<i32> {
        let mut args = ffi::PJRT_Client_ProcessIndex_Args::new();
        args.client = self.inner.raw;
        // SAFETY: valid args.
        unsafe { crate::pjrt_call!(*self.inner.api, PJRT_Client_ProcessIndex, &mut args)? };
        Ok(args.process_index)
    }

    /// Every device the plugin knows, addressable or not, in its order. A plugin that joined
    /// its peers through the store (CUDA with `num_nodes`) lists the whole job; the CPU
    /// plugin lists only its own process's devices.
    pub fn global_devices(&self) -> Result<Vec<GlobalDevice>> {
        let api = &*self.inner.api;
        let mut args = ffi::PJRT_Client_Devices_Args::new();
        args.client = self.inner.raw;
        // SAFETY: valid args; the array is owned by the client.
        unsafe { crate::pjrt_call!(*api, PJRT_Client_Devices, &mut args)? };
        let raw: Vec<*mut ffi::PJRT_Device> = match args.num_devices {
            0 => Vec::new(),
            // SAFETY: the plugin returned `num_devices` pointers owned by the client.
            n => unsafe { std::slice::from_raw_parts(args.devices, n) }.to_vec(),
        };
        raw.into_iter()
            .map(|device| {
                let mut description = ffi::PJRT_Device_GetDescription_Args::new();
                description.device = device;
                let mut addressable = ffi::PJRT_Device_IsAddressable_Args::new();
                addressable.device = device;
                // SAFETY: a live device of this client; the description and the kind string
                // are owned by it.
                unsafe {
                    crate::pjrt_call!(*api, PJRT_Device_GetDescription, &mut description)?;
                    crate::pjrt_call!(*api, PJRT_Device_IsAddressable, &mut addressable)?;
                    let mut id = ffi::PJRT_DeviceDescription_Id_Args::new();
                    id.device_description = description.device_description;
                    crate::pjrt_call!(*api, PJRT_DeviceDescription_Id, &mut id)?;
                    let mut process = ffi::PJRT_DeviceDescription_ProcessIndex_Args::new();
                    process.device_description = description.device_description;
                    crate::pjrt_call!(*api, PJRT_DeviceDescription_ProcessIndex, &mut process)?;
                    let mut kind = ffi::PJRT_DeviceDescription_Kind_Args::new();
                    kind.device_description = description.device_description;
                    crate::pjrt_call!(*api, PJRT_DeviceDescription_Kind, &mut kind)?;
                    Ok(GlobalDevice {
                        id: id.id,
                        process_index: process.process_index,
                        kind: bytes_to_string(kind.device_kind.cast(), kind.device_kind_size),
                        addressable: addressable.is_addressable,
                    })
                }
            })
            .collect()
    }
}
