//! Raw `#[repr(C)]` bindings for the subset of the PJRT C API that vishwam uses.
//!
//! Laid out field for field as in `xla/pjrt/c/pjrt_c_api.h` (API major 0). The C API only
//! ever appends fields to argument structs and to the function table, so a struct that is a
//! prefix of the plugin's is valid as long as `struct_size` is at least what the plugin
//! expects; the sizes here match the plugin generation vishwam targets (0.11.x, API 0.115),
//! and `tests/runtime.rs` checks them against a real plugin.
#![allow(non_camel_case_types, non_snake_case, dead_code)]

use std::ffi::{c_char, c_int, c_void};

/// Opaque plugin-side objects.
macro_rules! opaque {
    ($($name:ident),* $(,)?) => {$(
        #[doc = concat!("Opaque `", stringify!($name), "` owned by the plugin.")]
        #[repr(C)]
        pub struct $name {
            _private: [u8; 0],
        }
    )*};
}

opaque!(
    PJRT_Error,
    PJRT_Client,
    PJRT_Device,
    PJRT_DeviceDescription,
    PJRT_Memory,
    PJRT_Executable,
    PJRT_LoadedExecutable,
    PJRT_Buffer,
    PJRT_Event,
    PJRT_SerializedExecutable,
    PJRT_ExecuteContext,
);

/// Head of an extension chain entry. vishwam passes none (null in every args struct) and
/// reads the plugin's chain only for the profiler extension (`runtime::profiler`).
#[repr(C)]
pub struct PJRT_Extension_Base {
    pub struct_size: usize,
    pub type_: c_int,
    pub next: *mut PJRT_Extension_Base,
}

/// Every `*_Args` struct starts with these two fields.
macro_rules! args {
    ($name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        #[doc = concat!("`", stringify!($name), "` as in pjrt_c_api.h.")]
        #[repr(C)]
        pub struct $name {
            pub struct_size: usize,
            pub extension_start: *mut PJRT_Extension_Base,
            $(pub $field: $ty,)*
        }
        impl $name {
            /// A zeroed argument struct with `struct_size` set.
            pub fn new() -> Self {
                // SAFETY: every field is an integer, bool, enum with a zero variant, or a raw
                // pointer / nullable function pointer, for which all-zero bytes are valid.
                let mut s: Self = unsafe { std::mem::zeroed() };
                s.struct_size = std::mem::size_of::<Self>();
                s
            }
        }
        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }
    };
}

/// `PJRT_Api_Version`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PJRT_Api_Version {
    pub struct_size: usize,
    pub extension_start: *mut PJRT_Extension_Base,
    pub major_version: c_int,
    pub minor_version: c_int,
}

// ---- errors -------------------------------------------------------------------------------
args!(PJRT_Error_Destroy_Args { error: *mut PJRT_Error });
args!(PJRT_Error_Message_Args { error: *const PJRT_Error, message: *const c_char, message_size: usize });
args!(PJRT_Error_GetCode_Args { error: *const PJRT_Error, code: c_int });

// ---- named values -------------------------------------------------------------------------
/// `PJRT_NamedValue_Type`.
pub const NAMED_VALUE_STRING: c_int = 0;
/// `PJRT_NamedValue_kInt64`.
pub const NAMED_VALUE_INT64: c_int = 1;
/// `PJRT_NamedValue_kInt64List`.
pub const NAMED_VALUE_INT64_LIST: c_int = 2;
/// `PJRT_NamedValue_kFloat`.
pub const NAMED_VALUE_FLOAT: c_int = 3;
/// `PJRT_NamedValue_kBool`.
pub const NAMED_VALUE_BOOL: c_int = 4;

/// `PJRT_NamedValue`: a key-value pair; the value union is 8 bytes.
#[repr(C)]
pub struct PJRT_NamedValue {
    pub struct_size: usize,
    pub extension_start: *mut PJRT_Extension_Base,
    pub name: *const c_char,
    pub name_size: usize,
    pub type_: c_int,
    /// Union of `const char*`, `int64_t`, `const int64_t*`, `float`, `bool`.
    pub value: u64,
    pub value_size: usize,
}

// ---- plugin -------------------------------------------------------------------------------
args!(PJRT_Plugin_Initialize_Args {});
args!(PJRT_Plugin_Attributes_Args { attributes: *const PJRT_NamedValue, num_attributes: usize });

// ---- events -------------------------------------------------------------------------------
args!(PJRT_Event_Destroy_Args { event: *mut PJRT_Event });
args!(PJRT_Event_Await_Args { event: *mut PJRT_Event });

/// `PJRT_Event_OnReadyCallback`: called once with the event's error (owned by the callee, null
/// on success) and the `user_arg` given at registration, on whichever thread readies the event.
pub type PJRT_Event_OnReadyCallback =
    Option<unsafe extern "C" fn(error: *mut PJRT_Error, user_arg: *mut c_void)>;

args!(PJRT_Event_OnReady_Args {
    event: *mut PJRT_Event,
    callback: PJRT_Event_OnReadyCallback,
    user_arg: *mut c_void,
});

// ---- client -------------------------------------------------------------------------------
// ---- key-value callbacks (multi-process clients) -----------------------------------------
/// `PJRT_CallbackError`: made by the plugin, called by a callback to build the `PJRT_Error`
/// it returns (the message is copied).
pub type PJRT_CallbackError = Option<
    unsafe extern "C" fn(
        code: c_int,
        message: *const c_char,
        message_size: usize,
    ) -> *mut PJRT_Error,
>;
/// `PJRT_KeyValueGetCallback_ValueDeleter`: frees a value a get callback returned.
pub type PJRT_KeyValueGetCallback_ValueDeleter = Option<unsafe extern "C" fn(value: *mut c_char)>;
/// `PJRT_KeyValueTryGetCallback_ValueDeleter`.
pub type PJRT_KeyValueTryGetCallback_ValueDeleter =
    Option<unsafe extern "C" fn(value: *mut c_char)>;

args!(PJRT_KeyValueGetCallback_Args {
    key: *const c_char,
    key_size: usize,
    timeout_in_ms: c_int,
    callback_error: *mut PJRT_CallbackError,
    user_arg: *mut c_void,
    value: *mut c_char,
    value_size: usize,
    value_deleter_callback: PJRT_KeyValueGetCallback_ValueDeleter,
});
args!(PJRT_KeyValueTryGetCallback_Args {
    key: *const c_char,
    key_size: usize,
    callback_error: *mut PJRT_CallbackError,
    user_arg: *mut c_void,
    value: *mut c_char,
    value_size: usize,
    value_deleter_callback: PJRT_KeyValueTryGetCallback_ValueDeleter,
});
args!(PJRT_KeyValuePutCallback_Args {
    key: *const c_char,
    key_size: usize,
    value: *const c_char,
    value_size: usize,
    callback_error: *mut PJRT_CallbackError,
    user_arg: *mut c_void,
});
/// `PJRT_KeyValueGetCallback`: blocks until the key exists or `timeout_in_ms` passes.
pub type PJRT_KeyValueGetCallback =
    Option<unsafe extern "C" fn(args: *mut PJRT_KeyValueGetCallback_Args) -> *mut PJRT_Error>;
/// `PJRT_KeyValueTryGetCallback`: answers at once (`NOT_FOUND` for a missing key).
pub type PJRT_KeyValueTryGetCallback =
    Option<unsafe extern "C" fn(args: *mut PJRT_KeyValueTryGetCallback_Args) -> *mut PJRT_Error>;
/// `PJRT_KeyValuePutCallback`.
pub type PJRT_KeyValuePutCallback =
    Option<unsafe extern "C" fn(args: *mut PJRT_KeyValuePutCallback_Args) -> *mut PJRT_Error>;

args!(PJRT_Client_Create_Args {
    create_options: *const PJRT_NamedValue,
    num_options: usize,
    kv_get_callback: PJRT_KeyValueGetCallback,
    kv_get_user_arg: *mut c_void,
    kv_put_callback: PJRT_KeyValuePutCallback,
    kv_put_user_arg: *mut c_void,
    client: *mut PJRT_Client,
    kv_try_get_callback: PJRT_KeyValueTryGetCallback,
    kv_try_get_user_arg: *mut c_void,
});
args!(PJRT_Client_ProcessIndex_Args { client: *mut PJRT_Client, process_index: c_int });
args!(PJRT_Client_Devices_Args {
    client: *mut PJRT_Client,
    devices: *const *mut PJRT_Device,
    num_devices: usize,
});
args!(PJRT_DeviceDescription_ProcessIndex_Args {
    device_description: *mut PJRT_DeviceDescription,
    process_index: c_int,
});
args!(PJRT_Device_IsAddressable_Args { device: *mut PJRT_Device, is_addressable: bool });
args!(PJRT_Client_Destroy_Args { client: *mut PJRT_Client });
args!(PJRT_Client_PlatformName_Args {
    client: *mut PJRT_Client,
    platform_name: *const c_char,
    platform_name_size: usize,
});
args!(PJRT_Client_PlatformVersion_Args {
    client: *mut PJRT_Client,
    platform_version: *const c_char,
    platform_version_size: usize,
});
args!(PJRT_Client_AddressableDevices_Args {
    client: *mut PJRT_Client,
    addressable_devices: *const *mut PJRT_Device,
    num_addressable_devices: usize,
});

/// `PJRT_Program`: code plus its format string.
#[repr(C)]
pub struct PJRT_Program {
    pub struct_size: usize,
    pub extension_start: *mut PJRT_Extension_Base,
    pub code: *mut c_char,
    pub code_size: usize,
    pub format: *const c_char,
    pub format_size: usize,
}

args!(PJRT_Client_Compile_Args {
    client: *mut PJRT_Client,
    program: *const PJRT_Program,
    compile_options: *const c_char,
    compile_options_size: usize,
    executable: *mut PJRT_LoadedExecutable,
});

/// `PJRT_HostBufferSemantics_kImmutableOnlyDuringCall`.
pub const HOST_BUFFER_IMMUTABLE_ONLY_DURING_CALL: c_int = 0;
/// `PJRT_HostBufferSemantics_kImmutableUntilTransferCompletes`.
pub const HOST_BUFFER_IMMUTABLE_UNTIL_TRANSFER_COMPLETES: c_int = 1;
/// `PJRT_HostBufferSemantics_kImmutableZeroCopy`: the buffer may alias the host memory for its
/// whole life and the runtime never writes to it; `done_with_host_buffer` fires when the
/// aliasing device buffer is freed.
pub const HOST_BUFFER_IMMUTABLE_ZERO_COPY: c_int = 2;
/// `PJRT_HostBufferSemantics_kMutableZeroCopy`: as `kImmutableZeroCopy`, but the runtime may
/// also write to the memory (use it for an output that aliases a donated input). On non-CPU
/// platforms it acts as `kImmutableUntilTransferCompletes`.
pub const HOST_BUFFER_MUTABLE_ZERO_COPY: c_int = 3;

args!(PJRT_Client_BufferFromHostBuffer_Args {
    client: *mut PJRT_Client,
    data: *const c_void,
    type_: c_int,
    dims: *const i64,
    num_dims: usize,
    byte_strides: *const i64,
    num_byte_strides: usize,
    host_buffer_semantics: c_int,
    device: *mut PJRT_Device,
    memory: *mut PJRT_Memory,
    device_layout: *mut c_void,
    done_with_host_buffer: *mut PJRT_Event,
    buffer: *mut PJRT_Buffer,
});

// ---- devices ------------------------------------------------------------------------------
args!(PJRT_DeviceDescription_Id_Args { device_description: *mut PJRT_DeviceDescription, id: c_int });
args!(PJRT_DeviceDescription_Kind_Args {
    device_description: *mut PJRT_DeviceDescription,
    device_kind: *const c_char,
    device_kind_size: usize,
});
args!(PJRT_DeviceDescription_ToString_Args {
    device_description: *mut PJRT_DeviceDescription,
    to_string: *const c_char,
    to_string_size: usize,
});
args!(PJRT_DeviceDescription_Attributes_Args {
    device_description: *mut PJRT_DeviceDescription,
    num_attributes: usize,
    attributes: *const PJRT_NamedValue,
});
args!(PJRT_Device_GetDescription_Args {
    device: *mut PJRT_Device,
    device_description: *mut PJRT_DeviceDescription,
});
args!(PJRT_Device_LocalHardwareId_Args { device: *mut PJRT_Device, local_hardware_id: c_int });
args!(PJRT_Device_MemoryStats_Args {
    device: *mut PJRT_Device,
    bytes_in_use: i64,
    peak_bytes_in_use: i64,
    peak_bytes_in_use_is_set: bool,
    num_allocs: i64,
    num_allocs_is_set: bool,
    largest_alloc_size: i64,
    largest_alloc_size_is_set: bool,
    bytes_limit: i64,
    bytes_limit_is_set: bool,
    bytes_reserved: i64,
    bytes_reserved_is_set: bool,
    peak_bytes_reserved: i64,
    peak_bytes_reserved_is_set: bool,
    bytes_reservable_limit: i64,
    bytes_reservable_limit_is_set: bool,
    largest_free_block_bytes: i64,
    largest_free_block_bytes_is_set: bool,
    pool_bytes: i64,
    pool_bytes_is_set: bool,
    peak_pool_bytes: i64,
    peak_pool_bytes_is_set: bool,
});

// ---- executables --------------------------------------------------------------------------
args!(PJRT_Executable_Destroy_Args { executable: *mut PJRT_Executable });
args!(PJRT_LoadedExecutable_Destroy_Args { executable: *mut PJRT_LoadedExecutable });
args!(PJRT_LoadedExecutable_GetExecutable_Args {
    loaded_executable: *mut PJRT_LoadedExecutable,
    executable: *mut PJRT_Executable,
});
args!(PJRT_Executable_NumOutputs_Args { executable: *mut PJRT_Executable, num_outputs: usize });
args!(PJRT_Executable_Serialize_Args {
    executable: *const PJRT_Executable,
    serialized_bytes: *const c_char,
    serialized_bytes_size: usize,
    serialized_executable: *mut PJRT_SerializedExecutable,
    serialized_executable_deleter: Option<unsafe extern "C" fn(*mut PJRT_SerializedExecutable)>,
});
args!(PJRT_Executable_DeserializeAndLoad_Args {
    client: *mut PJRT_Client,
    serialized_executable: *const c_char,
    serialized_executable_size: usize,
    loaded_executable: *mut PJRT_LoadedExecutable,
    overridden_serialized_compile_options: *const c_char,
    overridden_serialized_compile_options_size: usize,
});
args!(PJRT_Executable_GetCompiledMemoryStats_Args {
    executable: *mut PJRT_Executable,
    generated_code_size_in_bytes: i64,
    argument_size_in_bytes: i64,
    output_size_in_bytes: i64,
    alias_size_in_bytes: i64,
    temp_size_in_bytes: i64,
    host_generated_code_size_in_bytes: i64,
    host_argument_size_in_bytes: i64,
    host_output_size_in_bytes: i64,
    host_alias_size_in_bytes: i64,
    host_temp_size_in_bytes: i64,
    peak_memory_in_bytes: i64,
});
args!(PJRT_LoadedExecutable_AddressableDevices_Args {
    executable: *mut PJRT_LoadedExecutable,
    addressable_devices: *const *mut PJRT_Device,
    num_addressable_devices: usize,
});
args!(PJRT_ExecuteOptions {
    send_callbacks: *mut c_void,
    recv_callbacks: *mut c_void,
    num_send_ops: usize,
    num_recv_ops: usize,
    launch_id: c_int,
    non_donatable_input_indices: *const i64,
    num_non_donatable_input_indices: usize,
    context: *mut PJRT_ExecuteContext,
    call_location: *const c_char,
    num_tasks: usize,
    task_ids: *mut c_int,
    incarnation_ids: *mut i64,
});
args!(PJRT_LoadedExecutable_Execute_Args {
    executable: *mut PJRT_LoadedExecutable,
    options: *mut PJRT_ExecuteOptions,
    argument_lists: *const *const *mut PJRT_Buffer,
    num_devices: usize,
    num_args: usize,
    output_lists: *const *mut *mut PJRT_Buffer,
    device_complete_events: *mut *mut PJRT_Event,
    execute_device: *mut PJRT_Device,
});

// ---- buffers ------------------------------------------------------------------------------
args!(PJRT_Buffer_Destroy_Args { buffer: *mut PJRT_Buffer });
args!(PJRT_Buffer_Delete_Args { buffer: *mut PJRT_Buffer });
args!(PJRT_Buffer_IsDeleted_Args { buffer: *mut PJRT_Buffer, is_deleted: bool });
args!(PJRT_Buffer_ElementType_Args { buffer: *mut PJRT_Buffer, type_: c_int });
args!(PJRT_Buffer_Dimensions_Args { buffer: *mut PJRT_Buffer, dims: *const i64, num_dims: usize });
args!(PJRT_Buffer_OnDeviceSizeInBytes_Args { buffer: *mut PJRT_Buffer, on_device_size_in_bytes: usize });
args!(PJRT_Buffer_Device_Args { buffer: *mut PJRT_Buffer, device: *mut PJRT_Device });
args!(PJRT_Buffer_ToHostBuffer_Args {
    src: *mut PJRT_Buffer,
    host_layout: *mut c_void,
    dst: *mut c_void,
    dst_size: usize,
    event: *mut PJRT_Event,
});
args!(PJRT_Buffer_ReadyEvent_Args { buffer: *mut PJRT_Buffer, event: *mut PJRT_Event });
args!(PJRT_Buffer_UnsafePointer_Args { buffer: *mut PJRT_Buffer, buffer_pointer: usize });

/// A PJRT entry point taking `*mut A` and returning an owned error or null.
pub type Fun<A> = Option<unsafe extern "C" fn(args: *mut A) -> *mut PJRT_Error>;
/// A PJRT entry point returning nothing.
pub type VoidFun<A> = Option<unsafe extern "C" fn(args: *mut A)>;
/// A table slot vishwam does not call.
pub type Unused = *const c_void;

/// The `PJRT_Api` function table, up to the last entry vishwam uses.
#[repr(C)]
pub struct PJRT_Api {
    pub struct_size: usize,
    pub extension_start: *mut PJRT_Extension_Base,
    pub pjrt_api_version: PJRT_Api_Version,

    pub PJRT_Error_Destroy: VoidFun<PJRT_Error_Destroy_Args>,
    pub PJRT_Error_Message: VoidFun<PJRT_Error_Message_Args>,
    pub PJRT_Error_GetCode: Fun<PJRT_Error_GetCode_Args>,

    pub PJRT_Plugin_Initialize: Fun<PJRT_Plugin_Initialize_Args>,
    pub PJRT_Plugin_Attributes: Fun<PJRT_Plugin_Attributes_Args>,

    pub PJRT_Event_Destroy: Fun<PJRT_Event_Destroy_Args>,
    pub PJRT_Event_IsReady: Unused,
    pub PJRT_Event_Error: Unused,
    pub PJRT_Event_Await: Fun<PJRT_Event_Await_Args>,
    pub PJRT_Event_OnReady: Fun<PJRT_Event_OnReady_Args>,

    pub PJRT_Client_Create: Fun<PJRT_Client_Create_Args>,
    pub PJRT_Client_Destroy: Fun<PJRT_Client_Destroy_Args>,
    pub PJRT_Client_PlatformName: Fun<PJRT_Client_PlatformName_Args>,
    pub PJRT_Client_ProcessIndex: Fun<PJRT_Client_ProcessIndex_Args>,
    pub PJRT_Client_PlatformVersion: Fun<PJRT_Client_PlatformVersion_Args>,
    pub PJRT_Client_Devices: Fun<PJRT_Client_Devices_Args>,
    pub PJRT_Client_AddressableDevices: Fun<PJRT_Client_AddressableDevices_Args>,
    pub PJRT_Client_LookupDevice: Unused,
    pub PJRT_Client_LookupAddressableDevice: Unused,
    pub PJRT_Client_AddressableMemories: Unused,
    pub PJRT_Client_Compile: Fun<PJRT_Client_Compile_Args>,
    pub PJRT_Client_DefaultDeviceAssignment: Unused,
    pub PJRT_Client_BufferFromHostBuffer: Fun<PJRT_Client_BufferFromHostBuffer_Args>,

    pub PJRT_DeviceDescription_Id: Fun<PJRT_DeviceDescription_Id_Args>,
    pub PJRT_DeviceDescription_ProcessIndex: Fun<PJRT_DeviceDescription_ProcessIndex_Args>,
    pub PJRT_DeviceDescription_Attributes: Fun<PJRT_DeviceDescription_Attributes_Args>,
    pub PJRT_DeviceDescription_Kind: Fun<PJRT_DeviceDescription_Kind_Args>,
    pub PJRT_DeviceDescription_DebugString: Unused,
    pub PJRT_DeviceDescription_ToString: Fun<PJRT_DeviceDescription_ToString_Args>,

    pub PJRT_Device_GetDescription: Fun<PJRT_Device_GetDescription_Args>,
    pub PJRT_Device_IsAddressable: Fun<PJRT_Device_IsAddressable_Args>,
    pub PJRT_Device_LocalHardwareId: Fun<PJRT_Device_LocalHardwareId_Args>,
    pub PJRT_Device_AddressableMemories: Unused,
    pub PJRT_Device_DefaultMemory: Unused,
    pub PJRT_Device_MemoryStats: Fun<PJRT_Device_MemoryStats_Args>,

    pub PJRT_Memory_Id: Unused,
    pub PJRT_Memory_Kind: Unused,
    pub PJRT_Memory_DebugString: Unused,
    pub PJRT_Memory_ToString: Unused,
    pub PJRT_Memory_AddressableByDevices: Unused,

    pub PJRT_Executable_Destroy: Fun<PJRT_Executable_Destroy_Args>,
    pub PJRT_Executable_Name: Unused,
    pub PJRT_Executable_NumReplicas: Unused,
    pub PJRT_Executable_NumPartitions: Unused,
    pub PJRT_Executable_NumOutputs: Fun<PJRT_Executable_NumOutputs_Args>,
    pub PJRT_Executable_SizeOfGeneratedCodeInBytes: Unused,
    pub PJRT_Executable_GetCostAnalysis: Unused,
    pub PJRT_Executable_OutputMemoryKinds: Unused,
    pub PJRT_Executable_OptimizedProgram: Unused,
    pub PJRT_Executable_Serialize: Fun<PJRT_Executable_Serialize_Args>,

    pub PJRT_LoadedExecutable_Destroy: Fun<PJRT_LoadedExecutable_Destroy_Args>,
    pub PJRT_LoadedExecutable_GetExecutable: Fun<PJRT_LoadedExecutable_GetExecutable_Args>,
    pub PJRT_LoadedExecutable_AddressableDevices:
        Fun<PJRT_LoadedExecutable_AddressableDevices_Args>,
    pub PJRT_LoadedExecutable_Delete: Unused,
    pub PJRT_LoadedExecutable_IsDeleted: Unused,
    pub PJRT_LoadedExecutable_Execute: Fun<PJRT_LoadedExecutable_Execute_Args>,
    pub PJRT_Executable_DeserializeAndLoad: Fun<PJRT_Executable_DeserializeAndLoad_Args>,
    pub PJRT_LoadedExecutable_Fingerprint: Unused,

    pub PJRT_Buffer_Destroy: Fun<PJRT_Buffer_Destroy_Args>,
    pub PJRT_Buffer_ElementType: Fun<PJRT_Buffer_ElementType_Args>,
    pub PJRT_Buffer_Dimensions: Fun<PJRT_Buffer_Dimensions_Args>,
    pub PJRT_Buffer_UnpaddedDimensions: Unused,
    pub PJRT_Buffer_DynamicDimensionIndices: Unused,
    pub PJRT_Buffer_GetMemoryLayout: Unused,
    pub PJRT_Buffer_OnDeviceSizeInBytes: Fun<PJRT_Buffer_OnDeviceSizeInBytes_Args>,
    pub PJRT_Buffer_Device: Fun<PJRT_Buffer_Device_Args>,
    pub PJRT_Buffer_Memory: Unused,
    pub PJRT_Buffer_Delete: Fun<PJRT_Buffer_Delete_Args>,
    pub PJRT_Buffer_IsDeleted: Fun<PJRT_Buffer_IsDeleted_Args>,
    pub PJRT_Buffer_CopyToDevice: Unused,
    pub PJRT_Buffer_ToHostBuffer: Fun<PJRT_Buffer_ToHostBuffer_Args>,
    pub PJRT_Buffer_IsOnCpu: Unused,
    pub PJRT_Buffer_ReadyEvent: Fun<PJRT_Buffer_ReadyEvent_Args>,
    pub PJRT_Buffer_UnsafePointer: Fun<PJRT_Buffer_UnsafePointer_Args>,
    pub PJRT_Buffer_IncreaseExternalReferenceCount: Unused,
    pub PJRT_Buffer_DecreaseExternalReferenceCount: Unused,
    pub PJRT_Buffer_OpaqueDeviceMemoryDataPointer: Unused,

    pub PJRT_CopyToDeviceStream_Destroy: Unused,
    pub PJRT_CopyToDeviceStream_AddChunk: Unused,
    pub PJRT_CopyToDeviceStream_TotalBytes: Unused,
    pub PJRT_CopyToDeviceStream_GranuleSize: Unused,
    pub PJRT_CopyToDeviceStream_CurrentBytes: Unused,

    pub PJRT_TopologyDescription_Create: Unused,
    pub PJRT_TopologyDescription_Destroy: Unused,
    pub PJRT_TopologyDescription_PlatformName: Unused,
    pub PJRT_TopologyDescription_PlatformVersion: Unused,
    pub PJRT_TopologyDescription_GetDeviceDescriptions: Unused,
    pub PJRT_TopologyDescription_Serialize: Unused,
    pub PJRT_TopologyDescription_Attributes: Unused,

    pub PJRT_Compile: Unused,

    pub PJRT_Executable_OutputElementTypes: Unused,
    pub PJRT_Executable_OutputDimensions: Unused,
    pub PJRT_Buffer_CopyToMemory: Unused,
    pub PJRT_Client_CreateViewOfDeviceBuffer: Unused,
    pub PJRT_Executable_Fingerprint: Unused,
    pub PJRT_Client_TopologyDescription: Unused,
    pub PJRT_Executable_GetCompiledMemoryStats: Fun<PJRT_Executable_GetCompiledMemoryStats_Args>,
}

/// Byte offset just past a function-table slot, to compare with the plugin's `struct_size`.
#[macro_export]
macro_rules! pjrt_slot_end {
    ($field:ident) => {
        std::mem::offset_of!($crate::runtime::ffi::PJRT_Api, $field)
            + std::mem::size_of::<$crate::runtime::ffi::Unused>()
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// Sizes and table offsets as `pjrt_c_api.h` lays them out on a 64-bit target: three
    /// pointer-sized header words (struct_size, extension_start, then the 24-byte version
    /// struct) and one pointer per function, in header order.
    #[test]
    fn layouts_match_the_header() {
        let slot = |index: usize| 40 + 8 * index;
        assert_eq!(offset_of!(PJRT_Api, PJRT_Error_Destroy), slot(0));
        assert_eq!(offset_of!(PJRT_Api, PJRT_Event_OnReady), slot(9));
        assert_eq!(offset_of!(PJRT_Api, PJRT_Buffer_UnsafePointer), slot(73));
        assert_eq!(
            offset_of!(PJRT_Api, PJRT_Executable_GetCompiledMemoryStats),
            slot(96)
        );
        assert_eq!(
            offset_of!(PJRT_Api, PJRT_DeviceDescription_Attributes),
            slot(25)
        );
        assert_eq!(size_of::<PJRT_DeviceDescription_Attributes_Args>(), 40);
        assert_eq!(
            offset_of!(PJRT_DeviceDescription_Attributes_Args, attributes),
            32
        );
        assert_eq!(size_of::<PJRT_Client_Create_Args>(), 88);
        assert_eq!(offset_of!(PJRT_Client_Create_Args, client), 64);
        assert_eq!(offset_of!(PJRT_Client_Create_Args, kv_try_get_user_arg), 80);
        assert_eq!(size_of::<PJRT_KeyValueGetCallback_Args>(), 80);
        assert_eq!(
            offset_of!(PJRT_KeyValueGetCallback_Args, callback_error),
            40
        );
        assert_eq!(
            offset_of!(PJRT_KeyValueGetCallback_Args, value_deleter_callback),
            72
        );
        assert_eq!(size_of::<PJRT_KeyValueTryGetCallback_Args>(), 72);
        assert_eq!(size_of::<PJRT_KeyValuePutCallback_Args>(), 64);
        assert_eq!(offset_of!(PJRT_Api, PJRT_Client_Devices), slot(15));
        assert_eq!(offset_of!(PJRT_Api, PJRT_Device_IsAddressable), slot(30));
        assert_eq!(size_of::<PJRT_Event_OnReady_Args>(), 40);
        assert_eq!(offset_of!(PJRT_Event_OnReady_Args, user_arg), 32);
        assert_eq!(size_of::<PJRT_Buffer_UnsafePointer_Args>(), 32);
        assert_eq!(size_of::<PJRT_Client_BufferFromHostBuffer_Args>(), 120);
        assert_eq!(
            offset_of!(PJRT_Client_BufferFromHostBuffer_Args, host_buffer_semantics),
            72
        );
    }
}
