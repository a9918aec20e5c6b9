//! Host-to-device transfers on the CPU plugin through a pool of warm, aligned host blocks.
//!
//! The CPU plugin copies a host array into memory it has just allocated, so a plain transfer
//! pays a page fault on every page it writes and runs at the speed of a memcpy into a fresh
//! allocation (~0.2x of a memcpy into warm memory). Instead, [`transfer`] copies the caller's
//! bytes into a block from this pool (memory already faulted in by an earlier transfer) and
//! hands the block to PJRT with `kMutableZeroCopy`: the device buffer *is* the block, with no
//! second copy. The plugin takes zero-copy for dense row-major arrays of whole-byte element
//! types whose address is aligned to `EIGEN_MAX_ALIGN_BYTES` (16, 32 or 64 by build);
//! blocks are aligned to [`STAGING_ALIGN`] = 64, vishwam passes no strides, and every
//! [`super::ElementType`] is at least one byte wide, so every staged transfer qualifies. Each
//! transfer still checks that the device buffer's address is the block's
//! (`PJRT_Buffer_UnsafePointer`); if the plugin copied anyway, the pool stops staging and the
//! client goes back to plain transfers.
//!
//! `kMutableZeroCopy` rather than `kImmutableZeroCopy`: with the immutable kind the plugin
//! copies a donated buffer into a fresh output; with the mutable kind the output of a program
//! that aliases a donated input lives in the block itself (checked on the 0.11.2 plugin), so
//! donated state is updated in place as for any device buffer.
//!
//! A block returns to the pool only when PJRT fires the transfer's `done_with_host_buffer`
//! event, which for zero-copy means the memory is no longer referenced by any buffer — also
//! when the buffer was donated to an execution whose output aliases it, in which case the
//! event waits for that output. Dropping a [`super::Buffer`] never reclaims a block by
//! itself. The event's callback (`PJRT_Event_OnReady`) may run on any plugin thread; it locks
//! the pool, destroys the event and never unwinds.
//!
//! The pool keeps at most [`MAX_FREE_BLOCKS`] free blocks and [`MAX_FREE_BYTES`] bytes in
//! them, dropping the least recently returned first; blocks in use by PJRT are not counted.

use super::client::ClientInner;
use super::{ffi, Buffer, ElementType, Result};
use std::alloc::Layout;
use std::collections::VecDeque;
use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Alignment of staging blocks: at least the CPU plugin's minimum for zero-copy
/// (`EIGEN_MAX_ALIGN_BYTES`, at most 64) and a cache line.
pub const STAGING_ALIGN: usize = 64;
/// Most bytes the pool keeps in free blocks.
pub const MAX_FREE_BYTES: usize = 1 << 30;
/// Most free blocks the pool keeps.
pub const MAX_FREE_BLOCKS: usize = 32;

/// What the staging pool of a client has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StagingStats {
    /// Staged transfers whose device buffer is the staging block itself (zero-copy taken).
    pub zero_copy_transfers: u64,
    /// Staged transfers the plugin copied anyway (after the first, staging turns itself off).
    pub copied_transfers: u64,
    /// Blocks allocated because no free block of the size was there.
    pub blocks_allocated: u64,
    /// Blocks taken from the free list (already faulted in).
    pub blocks_reused: u64,
    /// Blocks PJRT still holds (device buffers alive, or outputs that alias them).
    pub blocks_in_use: usize,
    /// Free blocks kept for reuse.
    pub free_blocks: usize,
    /// Bytes in free blocks.
    pub free_bytes: usize,
    /// False once a staged transfer was not zero-copy: later transfers copy directly.
    pub enabled: bool,
}

/// One aligned host allocation, freed on drop.
struct HostBlock {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the block is plain memory owned by this value; it is only accessed through it, or by
// PJRT while the pool has lent it (and then not through this value).
unsafe impl Send for HostBlock {}

impl HostBlock {
    /// Allocates `capacity` bytes (a non-zero multiple of [`STAGING_ALIGN`]); `None` when the
    /// allocator refuses.
    fn allocate(capacity: usize) -> Option<HostBlock> {
        let layout = Layout::from_size_align(capacity, STAGING_ALIGN).ok()?;
        if layout.size() == 0 {
            return None;
        }
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { std::alloc::alloc(layout) })?;
        Some(HostBlock { ptr, layout })
    }

    fn capacity(&self) -> usize {
        self.layout.size()
    }

    /// Copies `data` to the start of the block.
    fn fill(&mut self, data: &[u8]) {
        assert!(data.len() <= self.capacity(), "staging block too small");
        // SAFETY: the block holds at least `data.len()` writable bytes and cannot overlap a
        // slice the caller borrows.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr(), data.len()) };
    }
}

impl Drop for HostBlock {
    fn drop(&mut self) {
        // SAFETY: allocated in `allocate` with this layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// The plugin entry points the release callback needs, copied out of the function table (they
/// stay valid for the whole process: a plugin is never unloaded, see [`super::Api`]).
#[derive(Clone, Copy)]
struct ReleaseFunctions {
    destroy_event: unsafe extern "C" fn(*mut ffi::PJRT_Event_Destroy_Args) -> *mut ffi::PJRT_Error,
    destroy_error: unsafe extern "C" fn(*mut ffi::PJRT_Error_Destroy_Args),
}

#[derive(Default)]
struct FreeList {
    /// Least recently returned first.
    blocks: VecDeque<HostBlock>,
    bytes: usize,
}

/// A client's pool of staging blocks (see the module documentation).
pub(crate) struct StagingPool {
    free: Mutex<FreeList>,
    max_free_bytes: usize,
    max_free_blocks: usize,
    functions: ReleaseFunctions,
    enabled: AtomicBool,
    zero_copy_transfers: AtomicU64,
    copied_transfers: AtomicU64,
    blocks_allocated: AtomicU64,
    blocks_reused: AtomicU64,
    blocks_in_use: AtomicUsize,
}

impl StagingPool {
    /// A pool for a client on `platform`; `None` (plain transfers) unless the platform is the
    /// CPU and the plugin has every entry point a staged transfer needs.
    pub(crate) fn for_platform(api: &super::Api, platform: &str) -> Option<Arc<StagingPool>> {
        if platform != "cpu" {
            return None;
        }
        let table = api.table();
        let present = |end: usize| table.struct_size >= end;
        if !present(crate::pjrt_slot_end!(PJRT_Event_OnReady))
            || !present(crate::pjrt_slot_end!(PJRT_Buffer_UnsafePointer))
            || table.PJRT_Event_OnReady.is_none()
            || table.PJRT_Buffer_UnsafePointer.is_none()
        {
            return None;
        }
        let functions = ReleaseFunctions {
            destroy_event: table.PJRT_Event_Destroy?,
            destroy_error: table.PJRT_Error_Destroy?,
        };
        Some(Arc::new(StagingPool::new(
            functions,
            MAX_FREE_BYTES,
            MAX_FREE_BLOCKS,
        )))
    }

    fn new(functions: ReleaseFunctions, max_free_bytes: usize, max_free_blocks: usize) -> Self {
        StagingPool {
            free: Mutex::new(FreeList::default()),
            max_free_bytes,
            max_free_blocks,
            functions,
            enabled: AtomicBool::new(true),
            zero_copy_transfers: AtomicU64::new(0),
            copied_transfers: AtomicU64::new(0),
            blocks_allocated: AtomicU64::new(0),
            blocks_reused: AtomicU64::new(0),
            blocks_in_use: AtomicUsize::new(0),
        }
    }

    /// A snapshot of the counters.
    pub(crate) fn stats(&self) -> StagingStats {
        let free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        StagingStats {
            zero_copy_transfers: self.zero_copy_transfers.load(Ordering::Relaxed),
            copied_transfers: self.copied_transfers.load(Ordering::Relaxed),
            blocks_allocated: self.blocks_allocated.load(Ordering::Relaxed),
            blocks_reused: self.blocks_reused.load(Ordering::Relaxed),
            blocks_in_use: self.blocks_in_use.load(Ordering::Relaxed),
            free_blocks: free.blocks.len(),
            free_bytes: free.bytes,
            enabled: self.enabled.load(Ordering::Relaxed),
        }
    }

    /// A block of at least `len` (> 0) bytes: the most recently returned free one of that
    /// size, else a new one (`None` when the allocator refuses).
    fn take(&self, len: usize) -> Option<HostBlock> {
        let capacity = len.checked_next_multiple_of(STAGING_ALIGN)?;
        let reused = {
            let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
            let found = free.blocks.iter().rposition(|b| b.capacity() == capacity);
            found.and_then(|i| free.blocks.remove(i)).inspect(|b| {
                free.bytes -= b.capacity();
            })
        };
        let block = match reused {
            Some(block) => {
                self.blocks_reused.fetch_add(1, Ordering::Relaxed);
                block
            }
            None => {
                let block = HostBlock::allocate(capacity)?;
                self.blocks_allocated.fetch_add(1, Ordering::Relaxed);
                block
            }
        };
        self.blocks_in_use.fetch_add(1, Ordering::Relaxed);
        Some(block)
    }

    /// Returns a block PJRT no longer uses, evicting the least recently returned blocks past
    /// the caps.
    fn give_back(&self, block: HostBlock) {
        self.blocks_in_use.fetch_sub(1, Ordering::Relaxed);
        if block.capacity() > self.max_free_bytes {
            return;
        }
        let mut evicted = Vec::new();
        {
            let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
            free.bytes += block.capacity();
            free.blocks.push_back(block);
            while free.blocks.len() > self.max_free_blocks || free.bytes > self.max_free_bytes {
                match free.blocks.pop_front() {
                    Some(old) => {
                        free.bytes -= old.capacity();
                        evicted.push(old);
                    }
                    None => break,
                }
            }
        }
        drop(evicted);
    }

    /// Gives up a block PJRT may still be using: it is never freed nor reused.
    fn leak(&self, block: HostBlock) {
        self.blocks_in_use.fetch_sub(1, Ordering::Relaxed);
        std::mem::forget(block);
    }
}

/// A block lent to PJRT until its `done_with_host_buffer` event fires; owned by the callback.
struct PendingRelease {
    block: HostBlock,
    pool: Arc<StagingPool>,
    event: *mut ffi::PJRT_Event,
}

impl PendingRelease {
    /// Runs once the event is ready: the block goes back to the pool (or is leaked if PJRT
    /// reports an error, since then nothing says it is done with the memory), and the event
    /// and error are destroyed.
    fn finish(self, error: *mut ffi::PJRT_Error) {
        let PendingRelease { block, pool, event } = self;
        if error.is_null() {
            pool.give_back(block);
        } else {
            pool.leak(block);
            let mut args = ffi::PJRT_Error_Destroy_Args::new();
            args.error = error;
            // SAFETY: the callback owns `error`; destroyed once.
            unsafe { (pool.functions.destroy_error)(&mut args) };
        }
        let mut args = ffi::PJRT_Event_Destroy_Args::new();
        args.event = event;
        // SAFETY: the event is live and nothing else destroys it: the transfer handed it to
        // this callback. Destroying it from its own callback is what PJRT's C++ wrapper does.
        let failed = unsafe { (pool.functions.destroy_event)(&mut args) };
        if !failed.is_null() {
            let mut args = ffi::PJRT_Error_Destroy_Args::new();
            args.error = failed;
            // SAFETY: an error returned to us, destroyed once.
            unsafe { (pool.functions.destroy_error)(&mut args) };
        }
    }
}

/// `PJRT_Event_OnReadyCallback` of a staged transfer's `done_with_host_buffer` event.
unsafe extern "C" fn release_staging_block(error: *mut ffi::PJRT_Error, user_arg: *mut c_void) {
    // Nothing in `finish` is expected to panic; if it does, the panic stops here rather than
    // unwinding into the plugin (the block is then freed or leaked, never reused early).
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: `user_arg` is the box leaked when the callback was registered, and PJRT
        // calls the callback exactly once.
        let pending = unsafe { Box::from_raw(user_arg.cast::<PendingRelease>()) };
        pending.finish(error);
    }));
}

/// Transfers `data` through a staging block of `pool`. `Ok(None)` means staging does not
/// apply (empty array, staging turned off, no memory for a block, or the release callback
/// could not be registered) and the caller must copy directly.
pub(crate) fn transfer(
    client: &Arc<ClientInner>,
    pool: &Arc<StagingPool>,
    data: &[u8],
    element_type: ElementType,
    dims: &[i64],
    device: *mut ffi::PJRT_Device,
) -> Result<Option<Buffer>> {
    if data.is_empty() || !pool.enabled.load(Ordering::Relaxed) {
        return Ok(None);
    }
    let Some(mut block) = pool.take(data.len()) else {
        return Ok(None);
    };
    block.fill(data);
    let mut args = ffi::PJRT_Client_BufferFromHostBuffer_Args::new();
    args.client = client.raw;
    args.data = block.ptr.as_ptr() as *const c_void;
    args.type_ = element_type.to_raw();
    args.dims = dims.as_ptr();
    args.num_dims = dims.len();
    args.host_buffer_semantics = ffi::HOST_BUFFER_MUTABLE_ZERO_COPY;
    args.device = device;
    // SAFETY: the block stays allocated, and unwritten by us, until `done_with_host_buffer`
    // fires (the callback registered below owns it from then on).
    let created =
        unsafe { crate::pjrt_call!(*client.api, PJRT_Client_BufferFromHostBuffer, &mut args) };
    if let Err(e) = created {
        pool.give_back(block);
        return Err(e);
    }
    let buffer = Buffer::from_raw(client.clone(), args.buffer);
    let zero_copy = buffer
        .unsafe_pointer()
        .is_ok_and(|address| address == block.ptr.as_ptr() as usize);

    if args.done_with_host_buffer.is_null() {
        // Nothing would say when PJRT is done with the block: never reuse it, and stop staging.
        pool.leak(block);
        pool.enabled.store(false, Ordering::Relaxed);
        return Ok(Some(buffer));
    }
    let pending = Box::into_raw(Box::new(PendingRelease {
        block,
        pool: pool.clone(),
        event: args.done_with_host_buffer,
    }));
    let mut on_ready = ffi::PJRT_Event_OnReady_Args::new();
    on_ready.event = args.done_with_host_buffer;
    on_ready.callback = Some(release_staging_block);
    on_ready.user_arg = pending.cast();
    // SAFETY: a live event and a callback that takes ownership of `pending`.
    let registered = unsafe { crate::pjrt_call!(*client.api, PJRT_Event_OnReady, &mut on_ready) };
    if registered.is_err() {
        // SAFETY: the callback was not registered, so `pending` is still ours alone.
        let PendingRelease { block, pool, event } = *unsafe { Box::from_raw(pending) };
        pool.enabled.store(false, Ordering::Relaxed);
        // Freeing the only buffer on the block releases it; then the event fires.
        drop(buffer);
        match super::event::await_and_destroy(&client.api, event) {
            Ok(()) => pool.give_back(block),
            Err(_) => pool.leak(block),
        }
        return Ok(None);
    }
    if zero_copy {
        pool.zero_copy_transfers.fetch_add(1, Ordering::Relaxed);
    } else {
        pool.copied_transfers.fetch_add(1, Ordering::Relaxed);
        pool.enabled.store(false, Ordering::Relaxed);
    }
    Ok(Some(buffer))
}

#[cfg(test)]
mod tests {
    use super::*;

    unsafe extern "C" fn no_event(_: *mut ffi::PJRT_Event_Destroy_Args) -> *mut ffi::PJRT_Error {
        std::ptr::null_mut()
    }
    unsafe extern "C" fn no_error(_: *mut ffi::PJRT_Error_Destroy_Args) {}

    fn pool(max_free_bytes: usize, max_free_blocks: usize) -> StagingPool {
        let functions = ReleaseFunctions {
            destroy_event: no_event,
            destroy_error: no_error,
        };
        StagingPool::new(functions, max_free_bytes, max_free_blocks)
    }

    #[test]
    fn blocks_are_aligned_and_sized_up_to_the_alignment() {
        let pool = pool(1 << 20, 8);
        for len in [1, 63, 64, 65, 1000, 4096, 12345] {
            let block = pool.take(len).unwrap();
            assert_eq!(block.ptr.as_ptr() as usize % STAGING_ALIGN, 0, "len {len}");
            assert_eq!(
                block.capacity(),
                len.div_ceil(STAGING_ALIGN) * STAGING_ALIGN
            );
            pool.give_back(block);
        }
        assert!(pool.take(usize::MAX - 3).is_none());
    }

    #[test]
    fn a_returned_block_is_reused_for_the_same_size_only() {
        let pool = pool(1 << 20, 8);
        let mut first = pool.take(1000).unwrap();
        first.fill(&[7u8; 1000]);
        let address = first.ptr.as_ptr();
        let other = pool.take(1000).unwrap();
        assert_ne!(
            other.ptr.as_ptr(),
            address,
            "a block in use is never lent twice"
        );
        pool.give_back(first);
        let bigger = pool.take(2000).unwrap();
        assert_ne!(bigger.ptr.as_ptr(), address);
        let again = pool.take(990).unwrap();
        assert_eq!(
            again.ptr.as_ptr(),
            address,
            "same size class, warm block reused"
        );
        let stats = pool.stats();
        assert_eq!((stats.blocks_allocated, stats.blocks_reused), (3, 1));
        assert_eq!(stats.blocks_in_use, 3);
        for block in [other, bigger, again] {
            pool.give_back(block);
        }
        let stats = pool.stats();
        assert_eq!((stats.blocks_in_use, stats.free_blocks), (0, 3));
        assert_eq!(stats.free_bytes, 1024 + 1024 + 2048);
    }

    #[test]
    fn free_blocks_are_capped_by_count_and_bytes_oldest_first() {
        let pool = pool(4096, 3);
        let blocks: Vec<HostBlock> = (0..5).map(|_| pool.take(1024).unwrap()).collect();
        let addresses: Vec<*mut u8> = blocks.iter().map(|b| b.ptr.as_ptr()).collect();
        for block in blocks {
            pool.give_back(block);
        }
        let stats = pool.stats();
        assert_eq!((stats.free_blocks, stats.free_bytes), (3, 3072));
        let kept: Vec<*mut u8> = {
            let free = pool.free.lock().unwrap();
            free.blocks.iter().map(|b| b.ptr.as_ptr()).collect()
        };
        assert_eq!(kept, addresses[2..], "the two oldest were evicted");

        let big = pool.take(3000).unwrap();
        pool.give_back(big);
        let stats = pool.stats();
        // 3072 + 3008 bytes exceed the 4096 cap: the two oldest 1024-byte blocks go.
        assert_eq!((stats.free_blocks, stats.free_bytes), (2, 1024 + 3008));
        let too_big = pool.take(5000).unwrap();
        pool.give_back(too_big);
        let stats = pool.stats();
        assert_eq!(
            (stats.free_blocks, stats.free_bytes),
            (2, 1024 + 3008),
            "a block above the byte cap is freed, the others stay"
        );
    }
}
