//! PJRT events: waiting for asynchronous work.

use super::{ffi, Api, Result};

/// Blocks until `event` completes, destroys it, and returns its error status.
/// A null event counts as already complete.
pub(crate) fn await_and_destroy(api: &Api, event: *mut ffi::PJRT_Event) -> Result<()> {
    if event.is_null() {
        return Ok(());
    }
    let mut wait = ffi::PJRT_Event_Await_Args::new();
    wait.event = event;
    // SAFETY: `event` is a live event returned by the plugin.
    let status = unsafe { crate::pjrt_call!(*api, PJRT_Event_Await, &mut wait) };
    let mut destroy = ffi::PJRT_Event_Destroy_Args::new();
    destroy.event = event;
    // SAFETY: destroy exactly once after awaiting.
    let destroyed = unsafe { crate::pjrt_call!(*api, PJRT_Event_Destroy, &mut destroy) };
    status.and(destroyed)
}
