//! virtio-net's I/O thread (the receive thread): it waits for frames on the TAP device
//! and delivers them into the guest's receive buffers as they arrive. In interrupt mode
//! (the workload, see [`crate::virtio_net`]) a guest that sleeps until its interrupt
//! (Linux) so receives without touching the device first. Before the handover (the
//! firmware, polled) it fills the ring while the vCPU runs, so the firmware finds
//! frames without a device-poll exit, and it also sends what the firmware queued: the
//! firmware's transmit notify only wakes it (issue #18).
//!
//! The thread takes the device lock (the one every vCPU exit takes) only to deliver
//! and send; it waits without it, in `ppoll` on the TAP descriptor when the receive
//! queue has room, else on the wake-up eventfd the device writes at the handover, on a
//! notify (either queue before the handover, the receive queue after it), on a reset
//! and, before the handover, on a guest register access while it waits for buffers.
//! The wait is bounded ([`POLL_INTERVAL`]) so a lost wake-up costs at most that, and
//! the stop flag is seen.
//!
//! Spawned before the syscall filter is installed, like the vCPU threads, and fully
//! started before [`RxThread::spawn`] returns; it then needs `ppoll`, `read`, `write`
//! (the TAP device and the eventfds) and `futex`, all in the filter.

use crate::error::VmmError;
use crate::vcpu::VcpuContext;
use crate::virtio_net::RxWait;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vmm_sys_util::eventfd::EventFd;

/// Longest wait before the thread looks again on its own.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The running receive thread.
pub struct RxThread {
    stop: Arc<AtomicBool>,
    wake: EventFd,
    handle: std::thread::JoinHandle<()>,
}

impl RxThread {
    /// Starts the thread for the device in `ctx`, waiting on `tap` (the TAP
    /// descriptor, which the device in `ctx` keeps open) and `wake` (a clone of the
    /// eventfd the device writes).
    pub fn spawn(
        ctx: Arc<Mutex<VcpuContext>>,
        tap: RawFd,
        wake: EventFd,
    ) -> Result<Self, VmmError> {
        let stop = Arc::new(AtomicBool::new(false));
        let wake2 = wake
            .try_clone()
            .map_err(|e| VmmError::Process(format!("virtio-net wake eventfd: {e}")))?;
        let stop2 = stop.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name("net-rx".into())
            .spawn(move || {
                // Fully started (glibc's per-thread setup, the thread name's prctl)
                // before the caller installs the syscall filter.
                let _ = ready_tx.send(());
                run(&ctx, tap, &wake2, &stop2)
            })
            .map_err(|e| VmmError::Process(format!("cannot spawn the receive thread: {e}")))?;
        if ready_rx.recv().is_err() {
            let _ = handle.join();
            return Err(VmmError::Process(
                "virtio-net receive thread died at start".into(),
            ));
        }
        Ok(RxThread { stop, wake, handle })
    }

    /// Stops the thread and waits for it.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.wake.write(1);
        if self.handle.join().is_err() {
            log::error!("virtio-net receive thread panicked");
        }
    }
}

fn run(ctx: &Mutex<VcpuContext>, tap: RawFd, wake: &EventFd, stop: &AtomicBool) {
    let mut deliveries: u64 = 0;
    while !stop.load(Ordering::SeqCst) {
        let next = {
            let Ok(mut guard) = ctx.lock() else {
                break;
            };
            let c = &mut *guard;
            match c.net.as_mut() {
                Some(net) => net.service(&c.mem),
                None => break,
            }
        };
        deliveries += u64::from(next != RxWait::Inactive);
        let frames = next == RxWait::Frames;
        wait(if frames { Some(tap) } else { None }, wake.as_raw_fd());
        // Drain the wake-ups (non-blocking; nothing to read is fine).
        let _ = wake.read();
    }
    log::debug!(turns = deliveries; "virtio-net receive thread ended");
}

/// Waits at most [`POLL_INTERVAL`] for `tap` (if given) to be readable or `wake` to be
/// written.
fn wait(tap: Option<RawFd>, wake: RawFd) {
    let mut fds = [
        libc::pollfd {
            fd: wake,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: tap.unwrap_or(-1),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: libc::c_long::from(POLL_INTERVAL.subsec_nanos() as i32),
    };
    let n: libc::nfds_t = if tap.is_some() { 2 } else { 1 };
    // SAFETY: ppoll reads `n` valid pollfds from a live local array and the timespec,
    // and writes only their `revents`; a null sigmask leaves the mask unchanged.
    unsafe { libc::ppoll(fds.as_mut_ptr(), n, &ts, std::ptr::null()) };
}
