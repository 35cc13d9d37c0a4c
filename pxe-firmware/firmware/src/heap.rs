//! The heap: RAM from the end of the image to the workload window (or RAM end), handed to a
//! linked-list allocator once at start (single-threaded, interrupts off).

use linked_list_allocator::LockedHeap;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

extern "C" {
    /// End of the image and the user stack (link.ld); page aligned.
    static __image_end: u8;
}

/// Gives `[image end, min(mem_size, WORKLOAD_BASE))` to the allocator (the rest of RAM
/// is the workload window, [`crate::elf`]). Returns the heap size in bytes.
pub fn init(mem_size: u64) -> usize {
    let start = (&raw const __image_end) as usize;
    let end = mem_size.min(crate::elf::WORKLOAD_BASE) as usize;
    let size = end.saturating_sub(start);
    // SAFETY: [__image_end, end) is RAM the stub maps user read-write; nothing
    // else (image, stack, stub, platform pages, the workload window) lies there, and
    // `init` runs once, before any allocation.
    unsafe { HEAP.lock().init(start as *mut u8, size) };
    size
}
