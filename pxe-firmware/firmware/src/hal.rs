//! virtio-drivers' hardware abstraction for this firmware: memory is identity mapped
//! (physical = virtual) and DMA buffers come from the heap, which the stub maps user
//! read-write; no IOMMU, no bounce buffers.

use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use core::ptr::NonNull;
use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};

/// The firmware's [`Hal`].
pub struct FwHal;

fn layout(pages: usize) -> Option<Layout> {
    Layout::from_size_align(pages.checked_mul(PAGE_SIZE)?, PAGE_SIZE).ok()
}

// SAFETY: dma_alloc returns zeroed, page-aligned, exclusively owned memory whose
// physical address equals its address (identity map); share/unshare need nothing
// because the device (the VMM) sees guest memory directly.
unsafe impl Hal for FwHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let ptr = layout(pages)
            // SAFETY: the layout has a non-zero size (pages >= 1 in virtio-drivers).
            .map(|l| unsafe { alloc_zeroed(l) })
            .and_then(NonNull::new);
        match ptr {
            Some(p) => (p.as_ptr() as PhysAddr, p),
            None => crate::failure::fail(crate::failure::Failure::OutOfMemory),
        }
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        if let Some(l) = layout(pages) {
            // SAFETY: `vaddr` came from dma_alloc with the same page count.
            unsafe { dealloc(vaddr.as_ptr(), l) };
        }
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as *mut u8).unwrap_or(NonNull::dangling())
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.as_ptr() as *mut u8 as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}
