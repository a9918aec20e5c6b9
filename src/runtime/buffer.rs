//! Device buffers: shape, element type, transfers back to the host, deletion.

use super::client::ClientInner;
use super::{ffi, ElementType, NativeType, Result, RuntimeError};
use std::sync::Arc;

/// An array on one device. Dropping it frees the device memory.
pub struct Buffer {
    pub(crate) client: Arc<ClientInner>,
    pub(crate) raw: *mut ffi::PJRT_Buffer,
}

// SAFETY: PJRT buffers may be used from any thread.
unsafe impl Send for Buffer {}
// SAFETY: all methods take &self and go through the thread-safe PJRT API.
unsafe impl Sync for Buffer {}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.element_type(), self.dims()) {
            (Ok(t), Ok(d)) => write!(f, "Buffer({}{:?})", t.mlir_name(), d),
            _ => write!(f, "Buffer(<deleted>)"),
        }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        let mut args = ffi::PJRT_Buffer_Destroy_Args::new();
        args.buffer = self.raw;
        // SAFETY: we own the handle and destroy it exactly once.
        let _ = unsafe { crate::pjrt_call!(*self.client.api, PJRT_Buffer_Destroy, &mut args) };
    }
}

impl Buffer {
    pub(crate) fn from_raw(client: Arc<ClientInner>, raw: *mut ffi::PJRT_Buffer) -> Buffer {
        Buffer { client, raw }
    }

    /// True once the buffer was donated to an execution or deleted.
    pub fn is_deleted(&self) -> bool {
        let mut args = ffi::PJRT_Buffer_IsDeleted_Args::new();
        args.buffer = self.raw;
        // SAFETY: valid handle.
        match unsafe { crate::pjrt_call!(*self.client.api, PJRT_Buffer_IsDeleted, &mut args) } {
            Ok(()) => args.is_deleted,
            Err(_) => true,
        }
    }

    /// Fails with [`RuntimeError::BufferDeleted`] if the buffer can no longer be used.
    pub(crate) fn ensure_live(&self) -> Result<()> {
        if self.is_deleted() {
            Err(RuntimeError::BufferDeleted)
        } else {
            Ok(())
        }
    }

    /// Frees the device memory now; later uses fail with [`RuntimeError::BufferDeleted`].
    pub fn delete(&self) -> Result<()> {
        let mut args = ffi::PJRT_Buffer_Delete_Args::new();
        args.buffer = self.raw;
        // SAFETY: valid handle; deleting twice is allowed by PJRT.
        unsafe { crate::pjrt_call!(*self.client.api, PJRT_Buffer_Delete, &mut args) }
    }

    /// The element type.
    pub fn element_type(&self) -> Result<ElementType> {
        self.ensure_live()?;
        let mut args = ffi::PJRT_Buffer_ElementType_Args::new();
        args.buffer = self.raw;
        // SAFETY: valid, live handle.
        unsafe { crate::pjrt_call!(*self.client.api, PJRT_Buffer_ElementType, &mut args)? };
        ElementType::from_raw(args.type_).ok_or(RuntimeError::UnsupportedElementType(args.type_))
    }

    /// The dimensions.
    pub fn dims(&self) -> Result<Vec<i64>> {
        self.ensure_live()?;
        let mut args = ffi::PJRT_Buffer_Dimensions_Args::new();
        args.buffer = self.raw;
        // SAFETY: valid, live handle; dims are owned by the buffer.
        unsafe {
            crate::pjrt_call!(*self.client.api, PJRT_Buffer_Dimensions, &mut args)?;
            Ok(std::slice::from_raw_parts(args.dims, args.num_dims).to_vec())
        }
    }

    /// Bytes the buffer occupies on its device.
    pub fn on_device_size(&self) -> Result<usize> {
        self.ensure_live()?;
        let mut args = ffi::PJRT_Buffer_OnDeviceSizeInBytes_Args::new();
        args.buffer = self.raw;
        // SAFETY: valid, live handle.
        unsafe { crate::pjrt_call!(*self.client.api, PJRT_Buffer_OnDeviceSizeInBytes, &mut args)? };
        Ok(args.on_device_size_in_bytes)
    }

    /// Index of the device holding the buffer, in [`super::Client::devices`] order.
    pub fn device_index(&self) -> Result<usize> {
        self.ensure_live()?;
        let mut args = ffi::PJRT_Buffer_Device_Args::new();
        args.buffer = self.raw;
        // SAFETY: valid, live handle.
        unsafe { crate::pjrt_call!(*self.client.api, PJRT_Buffer_Device, &mut args)? };
        self.client
            .devices
            .iter()
            .position(|&d| d == args.device)
            .ok_or_else(|| {
                RuntimeError::Other("buffer lives on a device the client does not list".into())
            })
    }

    /// The platform-dependent address of the buffer's memory (on the CPU, a host address).
    pub(crate) fn unsafe_pointer(&self) -> Result<usize> {
        let mut args = ffi::PJRT_Buffer_UnsafePointer_Args::new();
        args.buffer = self.raw;
        // SAFETY: valid handle; only the address is read, never dereferenced.
        unsafe { crate::pjrt_call!(*self.client.api, PJRT_Buffer_UnsafePointer, &mut args)? };
        Ok(args.buffer_pointer)
    }

    /// Blocks until the buffer's contents are computed; returns the computation's error if any.
    pub fn block_until_ready(&self) -> Result<()> {
        self.ensure_live()?;
        let mut args = ffi::PJRT_Buffer_ReadyEvent_Args::new();
        args.buffer = self.raw;
        // SAFETY: valid, live handle.
        unsafe { crate::pjrt_call!(*self.client.api, PJRT_Buffer_ReadyEvent, &mut args)? };
        super::event::await_and_destroy(&self.client.api, args.event)
    }

    /// Copies the buffer into `dst` (dense row-major; must be exactly the buffer's size).
    pub fn copy_to_host(&self, dst: &mut [u8]) -> Result<()> {
        // SAFETY: `dst` stays borrowed, untouched, until the event is awaited right here.
        let event = unsafe { self.start_copy_to_host(dst)? };
        super::event::await_and_destroy(&self.client.api, event)
    }

    /// Starts copying the buffer into `dst` and returns the copy's event.
    ///
    /// # Safety
    ///
    /// `dst` must stay allocated and untouched until the returned event has been awaited
    /// and destroyed (the plugin writes into it until then).
    unsafe fn start_copy_to_host(&self, dst: &mut [u8]) -> Result<*mut ffi::PJRT_Event> {
        let element_type = self.element_type()?;
        let dims = self.dims()?;
        let expected = dims.iter().product::<i64>() as usize * element_type.size_in_bytes();
        if dst.len() != expected {
            return Err(RuntimeError::HostSize {
                element_type,
                dims,
                expected,
                actual: dst.len(),
            });
        }
        let mut args = ffi::PJRT_Buffer_ToHostBuffer_Args::new();
        args.src = self.raw;
        args.dst = dst.as_mut_ptr().cast();
        args.dst_size = dst.len();
        // SAFETY: valid handle; the caller keeps `dst` alive and untouched until the event
        // completes.
        unsafe { crate::pjrt_call!(*self.client.api, PJRT_Buffer_ToHostBuffer, &mut args)? };
        Ok(args.event)
    }

    /// Copies several buffers to new host byte vectors with all the copies in flight at once:
    /// the caller waits for the slowest copy instead of once per buffer (on a GPU each copy
    /// of a scalar costs a round trip of the order of 0.1 ms).
    pub fn to_bytes_all(buffers: &[&Buffer]) -> Result<Vec<Vec<u8>>> {
        // Every copy is started before the first wait. After an error, the copies already
        // started are waited for as they drop (each writes into its own vector until then).
        let copies = buffers
            .iter()
            .map(|b| b.start_to_bytes())
            .collect::<Result<Vec<_>>>()?;
        copies.into_iter().map(HostCopy::wait).collect()
    }

    /// Starts copying the buffer to a new host byte vector and returns at once; the copy
    /// keeps its own handle on the transfer, so the buffer may be donated to a later execution
    /// before [`HostCopy::wait`] (the runtime orders that execution after the read).
    pub fn start_to_bytes(&self) -> Result<HostCopy> {
        let mut data = vec![0u8; self.byte_size()?];
        // SAFETY: `data` moves into the returned `HostCopy`, which never touches or frees its
        // heap block before the event is awaited (in `wait` or in `drop`).
        let event = unsafe { self.start_copy_to_host(&mut data)? };
        Ok(HostCopy {
            api: self.client.api.clone(),
            event,
            data,
        })
    }

    /// The size of the buffer's dense row-major contents in bytes.
    fn byte_size(&self) -> Result<usize> {
        Ok(self.dims()?.iter().product::<i64>() as usize * self.element_type()?.size_in_bytes())
    }

    /// Copies the buffer to a new host byte vector.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = vec![0u8; self.byte_size()?];
        self.copy_to_host(&mut out)?;
        Ok(out)
    }

    /// Copies the buffer to a vector of native scalars, checking the element type.
    pub fn to_vec<T: NativeType>(&self) -> Result<Vec<T>> {
        let element_type = self.element_type()?;
        if element_type != T::ELEMENT_TYPE {
            return Err(RuntimeError::Other(format!(
                "buffer holds {element_type:?}, asked for {:?}",
                T::ELEMENT_TYPE
            )));
        }
        let count = self.dims()?.iter().product::<i64>() as usize;
        let mut out = vec![T::zeroed(); count];
        self.copy_to_host(bytemuck::cast_slice_mut(&mut out))?;
        Ok(out)
    }
}

/// A copy of a device buffer to the host that is still in flight ([`Buffer::start_to_bytes`]).
/// Dropping it waits for the copy, since the plugin writes into its vector until then.
pub struct HostCopy {
    api: Arc<super::Api>,
    event: *mut ffi::PJRT_Event,
    data: Vec<u8>,
}

// SAFETY: the event and the vector are only used through `wait`/`drop`, from one owner.
unsafe impl Send for HostCopy {}

impl HostCopy {
    /// Waits for the copy and returns the bytes.
    pub fn wait(mut self) -> Result<Vec<u8>> {
        let event = std::mem::replace(&mut self.event, std::ptr::null_mut());
        super::event::await_and_destroy(&self.api, event)?;
        Ok(std::mem::take(&mut self.data))
    }
}

impl Drop for HostCopy {
    fn drop(&mut self) {
        let event = std::mem::replace(&mut self.event, std::ptr::null_mut());
        let _ = super::event::await_and_destroy(&self.api, event);
    }
}
