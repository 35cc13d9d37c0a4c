//! One VM's life: build and measure it, report the measurements, wait for tvpd's Start,
//! run the vCPUs, and end it cleanly (stop, scrub memory, report, exit code).

use crate::adopt::AdoptionPort;
use crate::arch;
use crate::channel::{self, ChannelHost, ChannelTx, StartDecision};
use crate::cpuid::Topology;
use crate::devices::IrqLine;
use crate::devices::{ConsoleLog, Devices};
use crate::dma::DmaPolicy;
use crate::error::VmmError;
use crate::loader;
use crate::lockdown;
use crate::mailbox::Mailbox;
use crate::measure::MeasurementLog;
use crate::memory::GuestRam;
use crate::net_rx::RxThread;
use crate::shutdown::{self, Shutdown, StopCause};
use crate::tap::Tap;
use crate::vcpu::{self, VcpuContext, VcpuEnd};
use crate::vcpus::{self, VcpuSet};
use crate::virtio_blk::VirtioBlk;
use crate::virtio_net::VirtioNet;
use kvm_ioctls::{Cap, Kvm};
use std::os::unix::net::UnixStream;
use std::os::unix::thread::JoinHandleExt;
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tvp_abi::config;
use tvp_abi::layout::{
    build_boot_region, EntryState, ACPI_GPA, ACPI_REGION_SIZE, BOOT_REGION_SIZE, CONFIG_PAGE_GPA,
};
use tvp_abi::measure::{events_from_parts, EventType};
use tvp_abi::PAGE_SIZE;
use tvp_vmm_channel::{ExitReason, VmmMessage, PROTOCOL_VERSION};
use vmm_sys_util::eventfd::EventFd;

/// Largest firmware file accepted (it must also fit the VM's RAM).
pub const FIRMWARE_MAX: u64 = 1 << 30;

/// Process exit codes (documented in `docs/vmm-channel.md`).
pub mod exit_code {
    /// The guest powered off.
    pub const POWERED_OFF: i32 = 0;
    /// Bad command line (clap's own code).
    pub const USAGE: i32 = 2;
    /// The VM could not be set up (config, firmware, KVM, memory, channel).
    pub const SETUP_FAILED: i32 = 3;
    /// tvpd aborted the VM before it started, or it was stopped before start.
    pub const ABORTED: i32 = 4;
    /// The guest reset.
    pub const RESET: i32 = 10;
    /// The guest halted for good.
    pub const HALTED: i32 = 11;
    /// Triple fault.
    pub const TRIPLE_FAULT: i32 = 12;
    /// KVM internal error.
    pub const KVM_INTERNAL_ERROR: i32 = 13;
    /// Other KVM failure.
    pub const KVM_ERROR: i32 = 14;
    /// Killed by SIGTERM/SIGINT/SIGHUP.
    pub const KILLED_BY_SIGNAL: i32 = 15;
    /// tvpd sent Stop.
    pub const STOPPED_BY_HOST: i32 = 16;
    /// The channel to tvpd closed.
    pub const CHANNEL_CLOSED: i32 = 17;
}

/// Where the channel comes from.
#[derive(Debug, Clone)]
pub enum ChannelSpec {
    /// An inherited socket descriptor (tvpd's socketpair).
    Fd(i32),
    /// A listening Unix socket to connect to.
    Path(PathBuf),
    /// No tvpd: start immediately, mailbox requests needing tvpd fail. For development
    /// and benchmarks only.
    Standalone,
}

/// Everything `tvp-vmm run` needs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// VM id (for logs and Hello).
    pub vm_id: String,
    /// Firmware ELF.
    pub firmware: PathBuf,
    /// The 4096-byte configuration page.
    pub config_page: PathBuf,
    /// Console log file.
    pub console_log: PathBuf,
    /// Console log cap in bytes.
    pub console_limit: u64,
    /// The channel.
    pub channel: ChannelSpec,
    /// How long a mailbox request waits for tvpd.
    pub host_timeout: Duration,
    /// Install the seccomp allowlist before the vCPU runs (off only for debugging).
    pub syscall_filter: bool,
    /// TAP interface backing the virtio-net device; `None`: no NIC.
    pub tap: Option<String>,
    /// (uid, gid) to drop to once everything is open; `None`: keep the caller's.
    pub run_as: Option<(u32, u32)>,
    /// Testing only: make a forbidden syscall after the lockdown.
    pub fault_forbidden_syscall: bool,
    /// The encrypted disk served read-only by virtio-blk, if any.
    pub disk: Option<crate::disk::DiskInput>,
    /// The workload image tvpd passed, if any.
    pub image: Option<crate::image::ImageInput>,
    /// The VM's own TPM (a connected stream to its swtpm's data channel), if any.
    pub vtpm: Option<crate::tpm_crb::VtpmInput>,
    /// The adoption socket to bind and how long to wait on it for a restarted tvpd
    /// once the running VM's channel closed; `None`: a closed channel stops the VM.
    pub adoption: Option<(PathBuf, Duration)>,
}

extern "C" fn on_stop_signal(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    shutdown::SIGNALLED.store(true, std::sync::atomic::Ordering::SeqCst);
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

fn install_signal_handlers() -> Result<(), VmmError> {
    use vmm_sys_util::signal::register_signal_handler;
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        register_signal_handler(sig, on_stop_signal)
            .map_err(|e| VmmError::Process(format!("signal {sig} handler: {e}")))?;
    }
    register_signal_handler(vcpu::kick_signal(), on_kick)
        .map_err(|e| VmmError::Process(format!("kick signal handler: {e}")))?;
    Ok(())
}

fn read_file(path: &PathBuf, max: u64) -> Result<Vec<u8>, VmmError> {
    let err = |source| VmmError::ReadFile {
        path: path.clone(),
        source,
    };
    let len = std::fs::metadata(path).map_err(err)?.len();
    if len > max {
        return Err(VmmError::ReadFile {
            path: path.clone(),
            source: std::io::Error::other(format!("{len} bytes, more than the {max} allowed")),
        });
    }
    std::fs::read(path).map_err(err)
}

/// The end of a VM, as reported.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Why.
    pub reason: ExitReason,
    /// Details.
    pub detail: String,
}

impl Outcome {
    /// The process exit code for this outcome.
    pub fn exit_code(&self) -> i32 {
        match self.reason {
            ExitReason::PoweredOff => exit_code::POWERED_OFF,
            ExitReason::Reset => exit_code::RESET,
            ExitReason::Halted => exit_code::HALTED,
            ExitReason::TripleFault => exit_code::TRIPLE_FAULT,
            ExitReason::KvmInternalError => exit_code::KVM_INTERNAL_ERROR,
            ExitReason::KvmError => exit_code::KVM_ERROR,
            ExitReason::KilledBySignal => exit_code::KILLED_BY_SIGNAL,
            ExitReason::StoppedByHost => exit_code::STOPPED_BY_HOST,
            ExitReason::ChannelClosed => exit_code::CHANNEL_CLOSED,
            ExitReason::SetupFailed => exit_code::SETUP_FAILED,
        }
    }

    fn from_end(end: VcpuEnd, stop: Option<StopCause>) -> Self {
        let o = |reason, detail: String| Outcome { reason, detail };
        let hex = |r: Option<u64>| r.map_or("unknown".to_string(), |r| format!("{r:#x}"));
        match end {
            VcpuEnd::PoweredOff => o(ExitReason::PoweredOff, "guest powered off".into()),
            VcpuEnd::Reset => o(
                ExitReason::Reset,
                "reboot-requested: the guest asked for a reboot (ACPI reset register or i8042); a measured VM is not restarted".into(),
            ),
            VcpuEnd::Halted { rip } => o(
                ExitReason::Halted,
                format!("guest halted with interrupts unavailable at rip={rip:#x}"),
            ),
            VcpuEnd::TripleFault { rip } => o(
                ExitReason::TripleFault,
                format!(
                    "guest triple-faulted (KVM_EXIT_SHUTDOWN) at rip={}",
                    hex(rip)
                ),
            ),
            VcpuEnd::InternalError {
                suberror,
                rip,
                data,
            } => o(
                ExitReason::KvmInternalError,
                format!(
                    "KVM_EXIT_INTERNAL_ERROR suberror={suberror}{} rip={} data=[{}]",
                    if suberror == 1 {
                        " (emulation failure)"
                    } else {
                        ""
                    },
                    hex(rip),
                    data.iter()
                        .map(|d| format!("{d:#x}"))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            ),
            VcpuEnd::KvmError(m) => o(ExitReason::KvmError, m),
            VcpuEnd::Stopped => match stop {
                Some(StopCause::Signal) => {
                    o(ExitReason::KilledBySignal, "stopped by signal".into())
                }
                Some(StopCause::ChannelClosed) => {
                    o(ExitReason::ChannelClosed, "channel to tvpd closed".into())
                }
                _ => o(ExitReason::StoppedByHost, "stopped by tvpd".into()),
            },
        }
    }
}

/// Runs one VM to its end; returns the process exit code.
pub fn run(opts: RunOptions) -> i32 {
    let started = Instant::now();
    match run_inner(&opts, started) {
        Ok(code) => code,
        Err(e) => {
            log::error!(vm = opts.vm_id.as_str(), error = e.to_string(); "setup failed");
            match e {
                VmmError::Aborted(_) | VmmError::StoppedBeforeStart(_) => exit_code::ABORTED,
                _ => exit_code::SETUP_FAILED,
            }
        }
    }
}

fn run_inner(opts: &RunOptions, started: Instant) -> Result<i32, VmmError> {
    lockdown::make_undumpable()?;
    install_signal_handlers()?;
    let shutdown = Arc::new(Shutdown::default());
    let stream: Option<UnixStream> = match &opts.channel {
        ChannelSpec::Fd(fd) => Some(channel::from_fd(*fd)?),
        ChannelSpec::Path(p) => Some(channel::from_path(p)?),
        ChannelSpec::Standalone => None,
    };
    // Bound now: after the privilege drop and the lockdown nothing can be bound.
    let adoption = match (&opts.adoption, &stream) {
        (Some((path, grace)), Some(_)) => Some(AdoptionPort::bind(path, *grace, &opts.vm_id)?),
        _ => None,
    };
    let (tx, rx) = channel::open(stream, shutdown.clone(), adoption)?;
    tx.send(&VmmMessage::Hello {
        protocol_version: PROTOCOL_VERSION,
        vm_id: opts.vm_id.clone(),
        pid: std::process::id(),
    })?;

    // Inputs: read once, validated, and these very bytes are measured and loaded.
    let config_page = read_file(&opts.config_page, PAGE_SIZE as u64)?;
    let cfg = config::decode(&config_page).map_err(VmmError::Config)?;
    // The page's decoder bounds it to 1..=VCPUS_MAX (64).
    let vcpu_count = u8::try_from(cfg.vcpus)
        .map_err(|_| VmmError::Unsupported(format!("{} vCPUs", cfg.vcpus)))?;
    let mem_size = cfg.mem_size();
    // The NIC's TAP device is opened now: after the lockdown nothing can be opened.
    let mut net = match &opts.tap {
        Some(name) => Some(
            VirtioNet::new(
                Box::new(Tap::open(name)?),
                cfg.mac,
                cfg.vip,
                DmaPolicy::new(mem_size),
            )
            .ok_or_else(|| VmmError::Tap(format!("{name}: cannot create the queues")))?,
        ),
        None => None,
    };
    // The disk: header (against the page's descriptor), key and chunk 0 checked now,
    // before anything runs.
    let disk = match (&opts.disk, cfg.disk) {
        (None, None) => None,
        (Some(input), Some(r)) => match crate::disk::open(input, &r) {
            Ok(d) => Some(d),
            Err(e) => {
                // tvpd learns why, as for an image that fails to load.
                let _ = tx.send(&VmmMessage::Exited {
                    reason: ExitReason::SetupFailed,
                    exit_code: exit_code::SETUP_FAILED,
                    detail: e.to_string(),
                });
                return Err(e);
            }
        },
        (None, Some(_)) => {
            return Err(VmmError::Image(
                "disk: the configuration page names a disk but none was passed (--disk-fd)".into(),
            ))
        }
        (Some(_), None) => {
            return Err(VmmError::Image(
                "disk: a disk was passed but the configuration page has no disk descriptor".into(),
            ))
        }
    };
    // The TPM: the page (measured, and the ACPI tables built from it) says whether the
    // VM has one; tvpd passes its swtpm exactly then.
    match (opts.vtpm.is_some(), cfg.tpm.is_some()) {
        (false, true) => {
            return Err(VmmError::Vtpm(
                "the configuration page gives the VM a TPM but none was passed (--vtpm-fd)".into(),
            ))
        }
        (true, false) => {
            return Err(VmmError::Vtpm(
                "a TPM was passed but the configuration page does not give the VM one".into(),
            ))
        }
        _ => {}
    }
    let firmware = read_file(&opts.firmware, FIRMWARE_MAX.min(mem_size))?;

    // KVM and memory.
    let kvm = Kvm::new().map_err(VmmError::kvm("open /dev/kvm"))?;
    let vm = kvm.create_vm().map_err(VmmError::kvm("create VM"))?;
    if !vm.check_extension(Cap::ReadonlyMem) {
        return Err(VmmError::Unsupported(
            "KVM lacks read-only memory slots (needed for the configuration page)".into(),
        ));
    }
    let ram = GuestRam::new(mem_size)?;
    lockdown::exclude_from_dumps(&ram)?;

    let (log, entry_state, firmware_image) = place_and_measure(
        opts,
        &ram,
        firmware,
        &config_page,
        mem_size,
        cfg.vcpus,
        cfg.tpm.is_some(),
    )?;
    let firmware_end = firmware_image.end;
    // What the firmware asks for (GET_FIRMWARE_DIGEST) to extend into the VM's own TPM.
    let firmware_digest = log
        .events()
        .iter()
        .find(|e| e.event_type == EventType::FirmwareImage)
        .map(|e| e.digest)
        .unwrap_or_default();
    // From its measurement to the handover, the device never writes the firmware image
    // (its ring-0 stub and page tables included).
    let firmware_image_for_blk = firmware_image.clone();
    if let Some(n) = net.as_mut() {
        n.protect_firmware(firmware_image);
    }
    // The workload image: decrypted straight into guest memory, or the VM ends here,
    // before its first instruction, with the reason sent to tvpd.
    match (cfg.image, opts.image) {
        (None, None) => {}
        (Some(r), Some(input)) => match crate::image::load(&ram, &r, &input, firmware_end) {
            Ok(l) => {
                let secs = l.elapsed.as_secs_f64().max(1e-9);
                let what = if l.encrypted {
                    "image loaded and decrypted"
                } else {
                    "image loaded"
                };
                log::info!(vm = opts.vm_id.as_str(), gpa = format!("{:#x}", r.gpa), bytes = l.bytes, ms = format!("{:.1}", secs * 1e3), mb_per_s = format!("{:.0}", l.bytes as f64 / secs / 1e6); "{what}");
            }
            Err(e) => {
                let _ = tx.send(&VmmMessage::Exited {
                    reason: ExitReason::SetupFailed,
                    exit_code: exit_code::SETUP_FAILED,
                    detail: e.to_string(),
                });
                ram.scrub();
                return Err(e);
            }
        },
        (Some(_), None) => {
            return Err(VmmError::Image(
                "the configuration page names an image but none was passed (--image-fd)".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(VmmError::Image(
                "an image was passed but the configuration page has no image descriptor".into(),
            ))
        }
    }
    ram.register(&vm)?;
    // The in-kernel platform (irqchip, PIT, TSS) exists before any vCPU; created after
    // the memory slots, as Firecracker does (a slot added after the irqchip costs
    // milliseconds on nested KVM).
    arch::setup_vm(&vm)?;
    for (i, e) in log.events().iter().enumerate() {
        tx.send(&VmmMessage::Measurement {
            index: i as u32,
            event_type: e.event_type.name().to_string(),
            digest: e.digest,
            description: e.description.clone(),
        })?;
    }
    let pcr23 = log.pcr23();
    tx.send(&VmmMessage::MeasurementsDone {
        count: log.events().len() as u32,
        pcr23,
    })?;
    log::info!(vm = opts.vm_id.as_str(), pcr23 = hex::encode(pcr23); "measured; waiting for tvpd");

    wait_for_start(&rx.start, &shutdown, &ram)?;

    // vCPU 0 (the BSP) starts at the measured entry state; the others wait in KVM's
    // wait-for-SIPI state until the guest starts them.
    let mut vcpu_fds = Vec::with_capacity(usize::from(vcpu_count));
    let supported_cpuid = arch::supported_cpuid(&kvm)?;
    for index in 0..vcpu_count {
        let fd = vm
            .create_vcpu(u64::from(index))
            .map_err(VmmError::kvm("create vCPU"))?;
        arch::setup_vcpu(
            &supported_cpuid,
            &fd,
            Topology {
                index,
                count: vcpu_count,
            },
        )?;
        if index == 0 {
            vcpu::configure(&fd, &entry_state)?;
        }
        vcpu_fds.push(fd);
    }
    // COM1's IRQ 4 through the irqchip.
    let com1_irq = EventFd::new(libc::EFD_NONBLOCK)
        .map_err(|e| VmmError::Process(format!("COM1 interrupt eventfd: {e}")))?;
    vm.register_irqfd(&com1_irq, arch::COM1_IRQ)
        .map_err(VmmError::kvm("register COM1's irqfd"))?;
    // virtio-net's interrupt through the irqchip (used from the handover on; the
    // firmware polls), and the eventfd that wakes its receive thread.
    let mut net_wake = None;
    if let Some(dev) = net.take() {
        let efd = |what: &str| {
            EventFd::new(libc::EFD_NONBLOCK)
                .map_err(|e| VmmError::Process(format!("virtio-net {what} eventfd: {e}")))
        };
        let (irq, wake) = (efd("interrupt")?, efd("wake-up")?);
        vm.register_irqfd(&irq, tvp_abi::layout::VIRTIO_NET_GSI)
            .map_err(VmmError::kvm("register virtio-net's irqfd"))?;
        let thread_wake = wake
            .try_clone()
            .map_err(|e| VmmError::Process(format!("virtio-net wake-up eventfd: {e}")))?;
        // The interrupt line comes with the receive thread, which also sends while
        // the firmware runs (`VirtioNet::service`): a device without a descriptor to
        // wait on stays polled and sends from the vCPU.
        net = Some(match dev.tap_fd() {
            Some(fd) => {
                net_wake = Some((fd, thread_wake));
                dev.with_interrupt(irq, wake)
            }
            None => dev,
        });
    }
    // virtio-blk's interrupt through the irqchip.
    let blk = match disk {
        Some(disk) => {
            let irq = EventFd::new(libc::EFD_NONBLOCK)
                .map_err(|e| VmmError::Process(format!("virtio-blk interrupt eventfd: {e}")))?;
            vm.register_irqfd(&irq, tvp_abi::layout::VIRTIO_BLK_GSI)
                .map_err(VmmError::kvm("register virtio-blk's irqfd"))?;
            let mut dev = VirtioBlk::new(disk, DmaPolicy::new(mem_size), Some(irq))
                .ok_or_else(|| VmmError::Process("virtio-blk: cannot create its queue".into()))?;
            dev.protect_firmware(firmware_image_for_blk.clone());
            Some(dev)
        }
        None => None,
    };
    let tpm = match &opts.vtpm {
        Some(input) => Some(crate::tpm_crb::open(input)?),
        None => None,
    };
    let console = ConsoleLog::create(&opts.console_log, opts.console_limit)?;
    // Everything is open: from here on the VMM needs no privilege at all.
    if let Some((uid, gid)) = opts.run_as {
        lockdown::drop_privileges(uid, gid)?;
        log::info!(vm = opts.vm_id.as_str(), uid = uid, gid = gid; "privileges dropped");
    }
    // The firmware's clock: KVM's TSC frequency for vCPU 0 (0 if KVM cannot say).
    let tsc_khz = vcpu_fds
        .first()
        .and_then(|fd| fd.get_tsc_khz().ok())
        .unwrap_or(0);
    let ctx = Arc::new(Mutex::new(VcpuContext {
        devices: Devices::new(console, IrqLine(com1_irq)),
        mailbox: Mailbox::new(opts.host_timeout)
            .with_tsc_khz(tsc_khz)
            .with_firmware_digest(firmware_digest),
        host: ChannelHost {
            tx: tx.clone(),
            replies: rx.replies,
            shutdown: shutdown.clone(),
        },
        tx: tx.clone(),
        mem: ram.mem().clone(),
        shutdown: shutdown.clone(),
        started,
        milestones: 0,
        mmio_seen: 0,
        net,
        blk,
        tpm,
    }));
    let set = Arc::new(VcpuSet::new(vcpu_fds.len()));
    let (done_tx, done_rx) = mpsc::channel::<(usize, VcpuEnd)>();
    let mut gates = Vec::with_capacity(vcpu_fds.len());
    let mut handles = Vec::with_capacity(vcpu_fds.len());
    for (index, mut fd) in vcpu_fds.into_iter().enumerate() {
        let (go_tx, go_rx) = mpsc::channel::<bool>();
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        let (ctx, set, shutdown, done_tx) =
            (ctx.clone(), set.clone(), shutdown.clone(), done_tx.clone());
        let vm_id = opts.vm_id.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("vcpu{index}"))
            .spawn(move || {
                // The thread is fully started (glibc's per-thread setup done) before
                // the filter is installed on it.
                let _ = ready_tx.send(());
                // Wait until the process is locked down before the first guest
                // instruction.
                let end = if go_rx.recv() == Ok(true) {
                    vcpu::run(&mut fd, index, &ctx, &set, &shutdown)
                } else {
                    VcpuEnd::Stopped
                };
                let state = fd
                    .get_mp_state()
                    .map_or("unknown", |m| vcpus::mp_state_name(m.mp_state));
                log::info!(vm = vm_id.as_str(), vcpu = index, mp_state = state; "vCPU thread ended");
                let _ = done_tx.send((index, end));
            });
        let handle = match spawned {
            Ok(h) => h,
            Err(e) => {
                stop_threads(gates, handles);
                ram.scrub();
                return Err(VmmError::Process(format!("cannot spawn vCPU thread: {e}")));
            }
        };
        if ready_rx.recv().is_err() {
            stop_threads(gates, handles);
            ram.scrub();
            return Err(VmmError::Process(format!(
                "vCPU thread {index} died at start"
            )));
        }
        gates.push(go_tx);
        handles.push(handle);
    }
    drop(done_tx);
    // virtio-net's receive thread (idle until the handover), before the filter.
    let rx_thread = match net_wake {
        Some((tap, wake)) => match RxThread::spawn(ctx.clone(), tap, wake) {
            Ok(t) => Some(t),
            Err(e) => {
                stop_threads(gates, handles);
                ram.scrub();
                return Err(e);
            }
        },
        None => None,
    };
    if opts.syscall_filter {
        if let Err(e) = lockdown::install_syscall_filter() {
            stop_threads(gates, handles);
            if let Some(t) = rx_thread {
                t.stop();
            }
            ram.scrub();
            return Err(e);
        }
    } else {
        log::warn!(vm = opts.vm_id.as_str(); "running WITHOUT the syscall filter (debugging only)");
    }
    if opts.fault_forbidden_syscall {
        log::warn!(vm = opts.vm_id.as_str(); "fault injection: forbidden syscall");
        // SAFETY: getppid takes no arguments; the filter kills the process here.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
    log::info!(vm = opts.vm_id.as_str(), rip = format!("{:#x}", entry_state.rip), vcpus = vcpu_count; "starting vcpu0 (the others wait for SIPI)");
    let mut threads: Vec<vcpus::Thread> = handles
        .iter()
        .map(|h| vcpus::Thread {
            pthread: h.as_pthread_t(),
            done: false,
        })
        .collect();
    for gate in &gates {
        if gate.send(true).is_err() {
            shutdown.request(StopCause::Host);
        }
    }
    let end = vcpus::supervise(&set, &mut threads, &done_rx, &shutdown);
    for h in handles {
        if h.join().is_err() {
            log::error!("vCPU thread panicked");
        }
    }
    if let Some(t) = rx_thread {
        t.stop();
    }
    if let Ok(ctx) = ctx.lock() {
        if let Some(blk) = &ctx.blk {
            blk.log_totals();
        }
        if let Some(net) = &ctx.net {
            net.log_totals();
        }
        if let Some(tpm) = &ctx.tpm {
            tpm.log_totals();
        }
    }
    drop(ctx);
    finish(
        opts,
        &ram,
        &tx,
        Outcome::from_end(end, shutdown.requested()),
    )
}

/// Tells vCPU threads that never ran to end, and joins them (setup failed).
fn stop_threads(gates: Vec<mpsc::Sender<bool>>, handles: Vec<std::thread::JoinHandle<()>>) {
    for gate in gates {
        let _ = gate.send(false);
    }
    for h in handles {
        let _ = h.join();
    }
}

/// Loads the firmware, places the configuration page, the boot region and the ACPI
/// tables, and measures exactly those bytes and the entry state, in the order of `tvp_abi::measure`; then
/// checks the digests against `tvp_abi`'s own computation.
fn place_and_measure(
    opts: &RunOptions,
    ram: &GuestRam,
    firmware: Vec<u8>,
    config_page: &[u8],
    mem_size: u64,
    vcpus: u16,
    tpm: bool,
) -> Result<(MeasurementLog, EntryState, std::ops::Range<u64>), VmmError> {
    // Place and measure, in the order of tvp_abi::measure.
    let mut log = MeasurementLog::new();
    let loaded = loader::load_elf(ram.mem(), &firmware, mem_size)?;
    log.measure(
        EventType::FirmwareImage,
        &firmware,
        format!(
            "firmware {} ({} bytes, loaded {:#x}..{:#x})",
            opts.firmware.display(),
            firmware.len(),
            loaded.start,
            loaded.end
        ),
    );
    drop(firmware);
    ram.place(CONFIG_PAGE_GPA, config_page)?;
    log.measure(
        EventType::ConfigPage,
        config_page,
        "configuration page v1".into(),
    );
    let mut region = vec![0u8; BOOT_REGION_SIZE].into_boxed_slice();
    let region_arr: &mut [u8; BOOT_REGION_SIZE] = (&mut *region)
        .try_into()
        .map_err(|_| VmmError::Memory("boot region size".into()))?;
    build_boot_region(mem_size, region_arr);
    ram.place(0, region_arr)?;
    log.measure(
        EventType::BootRegion,
        region_arr,
        format!("boot region: GDT, boot info, e820 for {mem_size} bytes, page tables"),
    );
    let mut acpi = [0u8; ACPI_REGION_SIZE];
    tvp_abi::acpi::build_tables(vcpus, tpm, &mut acpi)
        .map_err(|e| VmmError::Memory(format!("ACPI tables: {e}")))?;
    ram.place(ACPI_GPA, &acpi)?;
    log.measure(
        EventType::AcpiTables,
        &acpi,
        format!(
            "ACPI tables at {ACPI_GPA:#x}: RSDP, XSDT, FADT, MADT ({vcpus} vCPUs), DSDT{}",
            if tpm { ", TPM2 (MSFT0101)" } else { "" }
        ),
    );
    let entry_state = EntryState::for_entry(loaded.entry);
    log.measure(
        EventType::VcpuState,
        &entry_state.encode(),
        format!("vcpu0 entry state, rip={:#x}", loaded.entry),
    );

    // Self-check against the verifier's computation before reporting.
    let fw_digest = log.events().get(1).map(|e| e.digest).unwrap_or_default();
    let expected = events_from_parts(fw_digest, loaded.entry, config_page)
        .map_err(|e| VmmError::Firmware(e.to_string()))?;
    if !log.is_complete()
        || log
            .events()
            .iter()
            .zip(expected.iter())
            .any(|(a, b)| a.digest != b.digest)
    {
        return Err(VmmError::Memory(
            "measurement self-check failed: placed bytes differ from tvp_abi's layout".into(),
        ));
    }
    Ok((log, entry_state, loaded.start..loaded.end))
}

/// Waits for tvpd's Start (no vCPU exists before it); Abort, stop, signal or channel
/// loss end the VMM before any guest instruction.
fn wait_for_start(
    start: &mpsc::Receiver<StartDecision>,
    shutdown: &Shutdown,
    ram: &GuestRam,
) -> Result<(), VmmError> {
    loop {
        shutdown::poll_signal(shutdown);
        if let Some(cause) = shutdown.requested() {
            ram.scrub();
            let why = match cause {
                StopCause::Signal => "signal",
                StopCause::Host => "tvpd stop",
                StopCause::ChannelClosed => "channel closed",
            };
            return Err(VmmError::StoppedBeforeStart(why));
        }
        match start.recv_timeout(Duration::from_millis(50)) {
            Ok(StartDecision::Start) => break,
            Ok(StartDecision::Abort(reason)) => {
                ram.scrub();
                return Err(VmmError::Aborted(reason));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => shutdown.request(StopCause::ChannelClosed),
        }
    }

    Ok(())
}

fn finish(
    opts: &RunOptions,
    ram: &GuestRam,
    tx: &ChannelTx,
    outcome: Outcome,
) -> Result<i32, VmmError> {
    ram.scrub();
    let code = outcome.exit_code();
    log::info!(vm = opts.vm_id.as_str(), reason = format!("{:?}", outcome.reason), exit_code = code, detail = outcome.detail.as_str(); "ended");
    if outcome.reason != ExitReason::ChannelClosed {
        if let Err(e) = tx.send(&VmmMessage::Exited {
            reason: outcome.reason,
            exit_code: code,
            detail: outcome.detail.clone(),
        }) {
            log::warn!(error = e.to_string(); "cannot report exit to tvpd");
        }
    }
    Ok(code)
}
