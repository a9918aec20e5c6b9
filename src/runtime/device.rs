//! Devices and their descriptions and memory statistics.

use super::api::bytes_to_string;
use super::client::ClientInner;
use super::{ffi, Result};
use std::sync::Arc;

/// One addressable device of a client.
#[derive(Clone)]
pub struct Device {
    client: Arc<ClientInner>,
    index: usize,
}

/// Allocator statistics of a device (what the plugin reports; `None` when not reported).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Bytes currently allocated.
    pub bytes_in_use: i64,
    /// Peak bytes allocated.
    pub peak_bytes_in_use: Option<i64>,
    /// Allocation limit.
    pub bytes_limit: Option<i64>,
    /// Number of allocations.
    pub num_allocs: Option<i64>,
    /// Largest single allocation.
    pub largest_alloc_size: Option<i64>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("index", &self.index)
            .field("id", &self.id().ok())
            .finish()
    }
}

impl Device {
    pub(crate) fn new(client: Arc<ClientInner>, index: usize) -> Device {
        Device { client, index }
    }

    /// Position of this device in the client's addressable-device list.
    pub fn index(&self) -> usize {
        self.index
    }

    fn raw(&self) -> *mut ffi::PJRT_Device {
        self.client.devices[self.index]
    }

    fn description(&self) -> Result<*mut ffi::PJRT_DeviceDescription> {
        let mut args = ffi::PJRT_Device_GetDescription_Args::new();
        args.device = self.raw();
        // SAFETY: valid device; the description is owned by the device.
        unsafe { crate::pjrt_call!(*self.client.api, PJRT_Device_GetDescription, &mut args)? };
        Ok(args.device_description)
    }

    /// The global device id.
    pub fn id(&self) -> Result<i32> {
        let mut args = ffi::PJRT_DeviceDescription_Id_Args::new();
        args.device_description = self.description()?;
        // SAFETY: valid description.
        unsafe { crate::pjrt_call!(*self.client.api, PJRT_DeviceDescription_Id, &mut args)? };
        Ok(args.id)
    }

    /// The device kind, e.g. `cpu` or `NVIDIA H100 80GB HBM3`.
    pub fn kind(&self) -> Result<String> {
        let mut args = ffi::PJRT_DeviceDescription_Kind_Args::new();
        args.device_description = self.description()?;
        // SAFETY: valid description; the string is owned by the device.
        unsafe {
            crate::pjrt_call!(*self.client.api, PJRT_DeviceDescription_Kind, &mut args)?;
            Ok(bytes_to_string(
                args.device_kind.cast(),
                args.device_kind_size,
            ))
        }
    }

    /// A short human-readable description from the plugin.
    pub fn describe(&self) -> Result<String> {
        let mut args = ffi::PJRT_DeviceDescription_ToString_Args::new();
        args.device_description = self.description()?;
        // SAFETY: valid description; the string is owned by the device.
        unsafe {
            crate::pjrt_call!(*self.client.api, PJRT_DeviceDescription_ToString, &mut args)?;
            Ok(bytes_to_string(args.to_string.cast(), args.to_string_size))
        }
    }

    /// Allocator statistics; fails with `Unimplemented` where the plugin does not report them.
    pub fn memory_stats(&self) -> Result<MemoryStats> {
        let mut a = ffi::PJRT_Device_MemoryStats_Args::new();
        a.device = self.raw();
        // SAFETY: valid device.
        unsafe { crate::pjrt_call!(*self.client.api, PJRT_Device_MemoryStats, &mut a)? };
        let opt = |v: i64, set: bool| set.then_some(v);
        Ok(MemoryStats {
            bytes_in_use: a.bytes_in_use,
            peak_bytes_in_use: opt(a.peak_bytes_in_use, a.peak_bytes_in_use_is_set),
            bytes_limit: opt(a.bytes_limit, a.bytes_limit_is_set),
            num_allocs: opt(a.num_allocs, a.num_allocs_is_set),
            largest_alloc_size: opt(a.largest_alloc_size, a.largest_alloc_size_is_set),
        })
    }
}
