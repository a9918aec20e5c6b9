//! Bindings to the PJRT C API: plugins, clients, devices, executables, buffers.
