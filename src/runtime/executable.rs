//! Compiled executables: running them over several devices, serialization, memory stats.

use super::client::ClientInner;
use super::{ffi, Buffer, Result, RuntimeError};
use std::sync::Arc;

/// One argument of an execution.
pub enum Arg<'a> {
    /// The buffer stays valid after the call (never donated).
    Keep(&'a Buffer),
    /// The program may reuse the buffer's memory for an output it aliases
    /// (`tf.aliasing_output`); afterwards the buffer is deleted and any use fails with
    /// [`RuntimeError::BufferDeleted`].
    Donate(&'a mut Buffer),
}

impl Arg<'_> {
    fn buffer(&self) -> &Buffer {
        match self {
            Arg::Keep(b) => b,
            Arg::Donate(b) => b,
        }
    }
}

/// What XLA reports about an executable's memory use on one device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompiledMemoryStats {
    /// Size of the generated code.
    pub generated_code_bytes: i64,
    /// Bytes of arguments.
    pub argument_bytes: i64,
    /// Bytes of outputs.
    pub output_bytes: i64,
    /// Bytes of outputs that alias (donated) arguments.
    pub alias_bytes: i64,
    /// Bytes of temporaries.
    pub temp_bytes: i64,
    /// Peak memory, where the plugin reports it (0 otherwise).
    pub peak_bytes: i64,
}

impl CompiledMemoryStats {
    /// Arguments + outputs - aliased + temporaries: device memory the program needs.
    pub fn total_bytes(&self) -> i64 {
        self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes
    }
}

/// A compiled program loaded onto its devices.
pub struct LoadedExecutable {
    client: Arc<ClientInner>,
    raw: *mut ffi::PJRT_LoadedExecutable,
    num_outputs: usize,
    devices: Vec<*mut ffi::PJRT_Device>,
}

// SAFETY: PJRT executables can be executed from any thread.
unsafe impl Send for LoadedExecutable {}
// SAFETY: as above.
unsafe impl Sync for LoadedExecutable {}

impl Drop for LoadedExecutable {
    fn drop(&mut self) {
        let mut args = ffi::PJRT_LoadedExecutable_Destroy_Args::new();
        args.executable = self.raw;
        // SAFETY: we own the handle.
        let _ = unsafe {
            crate::pjrt_call!(*self.client.api, PJRT_LoadedExecutable_Destroy, &mut args)
        };
    }
}

/// A borrowed `PJRT_Executable` (the unloaded view), destroyed on drop.
struct ExecutableView<'a> {
    client: &'a ClientInner,
    raw: *mut ffi::PJRT_Executable,
}

impl Drop for ExecutableView<'_> {
    fn drop(&mut self) {
        let mut args = ffi::PJRT_Executable_Destroy_Args::new();
        args.executable = self.raw;
        // SAFETY: GetExecutable hands out a reference the caller must destroy.
        let _ = unsafe { crate::pjrt_call!(*self.client.api, PJRT_Executable_Destroy, &mut args) };
    }
}

impl LoadedExecutable {
    pub(crate) fn from_raw(
        client: Arc<ClientInner>,
        raw: *mut ffi::PJRT_LoadedExecutable,
    ) -> Result<Self> {
        let mut exe = LoadedExecutable {
            client,
            raw,
            num_outputs: 0,
            devices: Vec::new(),
        };
        let view = exe.view()?;
        let mut outs = ffi::PJRT_Executable_NumOutputs_Args::new();
        outs.executable = view.raw;
        // SAFETY: valid executable.
        unsafe { crate::pjrt_call!(*exe.client.api, PJRT_Executable_NumOutputs, &mut outs)? };
        drop(view);
        exe.num_outputs = outs.num_outputs;
        let mut devs = ffi::PJRT_LoadedExecutable_AddressableDevices_Args::new();
        devs.executable = raw;
        // SAFETY: valid executable; the device array is owned by it.
        unsafe {
            crate::pjrt_call!(
                *exe.client.api,
                PJRT_LoadedExecutable_AddressableDevices,
                &mut devs
            )?;
            exe.devices =
                std::slice::from_raw_parts(devs.addressable_devices, devs.num_addressable_devices)
                    .to_vec();
        }
        Ok(exe)
    }

    fn view(&self) -> Result<ExecutableView<'_>> {
        let mut args = ffi::PJRT_LoadedExecutable_GetExecutable_Args::new();
        args.loaded_executable = self.raw;
        // SAFETY: valid handle.
        unsafe {
            crate::pjrt_call!(
                *self.client.api,
                PJRT_LoadedExecutable_GetExecutable,
                &mut args
            )?
        };
        Ok(ExecutableView {
            client: &self.client,
            raw: args.executable,
        })
    }

    /// Number of outputs per device.
    pub fn num_outputs(&self) -> usize {
        self.num_outputs
    }

    /// Number of devices the program runs on (one argument list each).
    pub fn num_devices(&self) -> usize {
        self.devices.len()
    }

    /// Indices (in the client's device list) of the devices, in execution order.
    pub fn device_indices(&self) -> Vec<usize> {
        self.devices
            .iter()
            .map(|d| {
                self.client
                    .devices
                    .iter()
                    .position(|c| c == d)
                    .unwrap_or(usize::MAX)
            })
            .collect()
    }

    /// Runs the program: `args[d]` is the argument list of the executable's `d`-th device.
    /// Returns `outputs[d][i]`. An argument index must be donated on all devices or on none.
    pub fn execute(&self, mut args: Vec<Vec<Arg<'_>>>) -> Result<Vec<Vec<Buffer>>> {
        if args.len() != self.devices.len() {
            return Err(RuntimeError::Execute(format!(
                "the program runs on {} devices but {} argument lists were given",
                self.devices.len(),
                args.len()
            )));
        }
        let num_args = args.first().map_or(0, Vec::len);
        let mut keep = Vec::new();
        for i in 0..num_args {
            let donated: Vec<bool> = args
                .iter()
                .map(|a| matches!(a.get(i), Some(Arg::Donate(_))))
                .collect();
            if donated.iter().any(|&d| d) != donated.iter().all(|&d| d) {
                return Err(RuntimeError::Execute(format!(
                    "argument {i} is donated on some devices and kept on others"
                )));
            }
            if !donated[0] {
                keep.push(i as i64);
            }
        }
        let mut lists: Vec<Vec<*mut ffi::PJRT_Buffer>> = Vec::with_capacity(args.len());
        for (d, list) in args.iter().enumerate() {
            if list.len() != num_args {
                return Err(RuntimeError::Execute(format!(
                    "device {d} got {} arguments, device 0 got {num_args}",
                    list.len()
                )));
            }
            for (i, a) in list.iter().enumerate() {
                if a.buffer().is_deleted() {
                    return Err(RuntimeError::Execute(format!(
                        "argument {i} on device {d}: {}",
                        RuntimeError::BufferDeleted
                    )));
                }
            }
            lists.push(list.iter().map(|a| a.buffer().raw).collect());
        }
        let list_ptrs: Vec<*const *mut ffi::PJRT_Buffer> =
            lists.iter().map(|l| l.as_ptr()).collect();
        let mut outputs: Vec<Vec<*mut ffi::PJRT_Buffer>> = (0..args.len())
            .map(|_| vec![std::ptr::null_mut(); self.num_outputs])
            .collect();
        let output_ptrs: Vec<*mut *mut ffi::PJRT_Buffer> =
            outputs.iter_mut().map(|o| o.as_mut_ptr()).collect();

        let mut options = ffi::PJRT_ExecuteOptions::new();
        options.non_donatable_input_indices = keep.as_ptr();
        options.num_non_donatable_input_indices = keep.len();
        let mut exec = ffi::PJRT_LoadedExecutable_Execute_Args::new();
        exec.executable = self.raw;
        exec.options = &mut options;
        exec.argument_lists = list_ptrs.as_ptr();
        exec.num_devices = args.len();
        exec.num_args = num_args;
        exec.output_lists = output_ptrs.as_ptr();
        // SAFETY: all arrays outlive the call; the plugin fills `outputs`.
        unsafe { crate::pjrt_call!(*self.client.api, PJRT_LoadedExecutable_Execute, &mut exec)? };
        args.clear();
        Ok(outputs
            .into_iter()
            .map(|list| {
                list.into_iter()
                    .map(|raw| Buffer::from_raw(self.client.clone(), raw))
                    .collect()
            })
            .collect())
    }

    /// Serializes the compiled program (for the on-disk compile cache).
    pub fn serialize(&self) -> Result<Vec<u8>> {
        let view = self.view()?;
        let mut args = ffi::PJRT_Executable_Serialize_Args::new();
        args.executable = view.raw;
        // SAFETY: valid executable; the bytes live until the deleter runs.
        unsafe {
            crate::pjrt_call!(*self.client.api, PJRT_Executable_Serialize, &mut args)?;
            let bytes = std::slice::from_raw_parts(
                args.serialized_bytes.cast::<u8>(),
                args.serialized_bytes_size,
            )
            .to_vec();
            if let Some(deleter) = args.serialized_executable_deleter {
                deleter(args.serialized_executable);
            }
            Ok(bytes)
        }
    }

    /// XLA's per-device memory accounting for this program.
    pub fn compiled_memory_stats(&self) -> Result<CompiledMemoryStats> {
        let view = self.view()?;
        let mut a = ffi::PJRT_Executable_GetCompiledMemoryStats_Args::new();
        a.executable = view.raw;
        // SAFETY: valid executable.
        unsafe {
            crate::pjrt_call!(
                *self.client.api,
                PJRT_Executable_GetCompiledMemoryStats,
                &mut a
            )?
        };
        Ok(CompiledMemoryStats {
            generated_code_bytes: a.generated_code_size_in_bytes,
            argument_bytes: a.argument_size_in_bytes,
            output_bytes: a.output_size_in_bytes,
            alias_bytes: a.alias_size_in_bytes,
            temp_bytes: a.temp_size_in_bytes,
            peak_bytes: a.peak_memory_in_bytes,
        })
    }
}
