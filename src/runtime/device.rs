//! Devices and their descriptions and memory statistics.

use super::api::bytes_to_string;
use super::client::ClientInner;
use super::{ffi, Result, RuntimeError};
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

/// The value of a named attribute reported by the plugin (`PJRT_NamedValue`).
#[derive(Debug, Clone, PartialEq)]
pub enum AttributeValue {
    /// A string.
    String(String),
    /// A 64-bit integer.
    Int64(i64),
    /// A list of 64-bit integers.
    Int64List(Vec<i64>),
    /// A 32-bit float.
    Float(f32),
    /// A boolean.
    Bool(bool),
    /// A value type this build does not know, with its type tag (never guessed at).
    Unknown(i32),
}

impl std::fmt::Display for AttributeValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttributeValue::String(s) => f.write_str(s),
            AttributeValue::Int64(v) => write!(f, "{v}"),
            AttributeValue::Int64List(v) => write!(f, "{v:?}"),
            AttributeValue::Float(v) => write!(f, "{v}"),
            AttributeValue::Bool(v) => write!(f, "{v}"),
            AttributeValue::Unknown(t) => write!(f, "<named value of type {t}>"),
        }
    }
}

/// Reads `count` named values from `values` as `(name, value)` pairs.
///
/// # Safety
/// `values` must point at `count` valid `PJRT_NamedValue`s whose strings and lists are alive.
pub(crate) unsafe fn read_named_values(
    values: *const ffi::PJRT_NamedValue,
    count: usize,
) -> Vec<(String, AttributeValue)> {
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        // SAFETY: the caller promises `count` named values.
        let nv = unsafe { &*values.add(i) };
        // SAFETY: name/name_size describe a valid byte string.
        let name = unsafe { bytes_to_string(nv.name.cast(), nv.name_size) };
        let value = match nv.type_ {
            // SAFETY: string values are (ptr, len) pairs.
            ffi::NAMED_VALUE_STRING => AttributeValue::String(unsafe {
                bytes_to_string(nv.value as usize as *const u8, nv.value_size)
            }),
            ffi::NAMED_VALUE_INT64 => AttributeValue::Int64(nv.value as i64),
            ffi::NAMED_VALUE_INT64_LIST if nv.value_size == 0 => AttributeValue::Int64List(vec![]),
            ffi::NAMED_VALUE_INT64_LIST => {
                let ptr = nv.value as usize as *const i64;
                // SAFETY: int64 lists are (ptr, count) pairs.
                AttributeValue::Int64List(unsafe {
                    std::slice::from_raw_parts(ptr, nv.value_size).to_vec()
                })
            }
            ffi::NAMED_VALUE_FLOAT => AttributeValue::Float(f32::from_bits(nv.value as u32)),
            ffi::NAMED_VALUE_BOOL => AttributeValue::Bool(nv.value & 0xff != 0),
            other => AttributeValue::Unknown(other),
        };
        out.push((name, value));
    }
    out
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

    /// The device's named attributes (`PJRT_DeviceDescription_Attributes`): on TPUs these
    /// include `coords` and `core_on_chip`; the CPU plugin reports none.
    pub fn attributes(&self) -> Result<Vec<(String, AttributeValue)>> {
        let mut args = ffi::PJRT_DeviceDescription_Attributes_Args::new();
        args.device_description = self.description()?;
        // SAFETY: valid description; the attributes are owned by the device.
        unsafe {
            crate::pjrt_call!(
                *self.client.api,
                PJRT_DeviceDescription_Attributes,
                &mut args
            )?;
            if args.num_attributes == 0 {
                return Ok(Vec::new());
            }
            Ok(read_named_values(args.attributes, args.num_attributes))
        }
    }

    /// Where the device sits in the machine, from its attributes: its chip's `coords`
    /// (x, y, z) and its `core_on_chip` (0 when only `coords` is reported). `None` where the
    /// plugin reports no `coords` (the CPU plugin); a `coords` or `core_on_chip` of another
    /// type is an error naming it.
    pub fn physical_position(&self) -> Result<Option<(Vec<i64>, i64)>> {
        let attributes = self.attributes()?;
        let find = |key: &str| {
            attributes
                .iter()
                .find(|(name, _)| name == key)
                .map(|(_, v)| v)
        };
        let bad = |key: &'static str, value: &AttributeValue| RuntimeError::BadDeviceAttribute {
            device: self.index,
            attribute: key,
            value: format!("{value:?}"),
        };
        let coords = match find("coords") {
            None => return Ok(None),
            Some(AttributeValue::Int64List(c)) => c.clone(),
            Some(other) => return Err(bad("coords", other)),
        };
        let core = match find("core_on_chip") {
            None => 0,
            Some(AttributeValue::Int64(c)) => *c,
            Some(other) => return Err(bad("core_on_chip", other)),
        };
        Ok(Some((coords, core)))
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

    /// The device's hardware id on its host (`PJRT_Device_LocalHardwareId`): the CUDA ordinal
    /// on the CUDA plugin; `None` where the plugin reports -1 (no such id).
    pub fn local_hardware_id(&self) -> Result<Option<i32>> {
        let mut args = ffi::PJRT_Device_LocalHardwareId_Args::new();
        args.device = self.raw();
        // SAFETY: valid device.
        unsafe { crate::pjrt_call!(*self.client.api, PJRT_Device_LocalHardwareId, &mut args)? };
        Ok((args.local_hardware_id >= 0).then_some(args.local_hardware_id))
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

#[cfg(test)]
mod tests {
    use crate::runtime::ClientSpec;

    /// The pinned CPU plugin's devices report no attributes at all (so no `coords` and no
    /// `core_on_chip`): a topology lays them out by their index in the device list.
    #[test]
    fn cpu_devices_report_no_physical_position() {
        let client = ClientSpec::cpu(2).open().unwrap();
        for device in client.devices() {
            let attributes = device.attributes().unwrap();
            assert!(attributes.is_empty(), "{attributes:?}");
            assert_eq!(device.physical_position().unwrap(), None);
        }
    }
}
