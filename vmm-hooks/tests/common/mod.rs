//! Test support: builds the assembly test guests, writes configuration pages, and plays
//! tvpd on the channel of a real `tvp-vmm` process.
#![allow(dead_code)]

use std::io::Read;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tvp_abi::config::Config;
use tvp_abi::layout;
use tvp_vmm_channel::{read_frame, write_frame, HostMessage, VmmMessage};

/// What a test needs from the machine; a missing need fails the test under `CI` or
/// `TVP_REQUIRE_ALL=1` and is a logged skip otherwise (see `tvp_test_env`). Not every
/// test file needs them.
#[allow(unused_imports)]
pub use tvp_test_env::{require, skip_unless, Need};

/// `--host-timeout-ms` of the test VMs (the peer answers at once unless silent).
pub const HOST_TIMEOUT_MS: u64 = 3000;

/// Memory of the test VMs.
pub const MEM_MIB: u32 = 16;

fn abi_inc() -> String {
    let mut s = String::new();
    tvp_abi::asm::write_header(&mut s).unwrap();
    s
}

const LINKER_SCRIPT: &str = "ENTRY(_start)
SECTIONS {
  . = BASE;
  .text : { *(.text*) }
  .rodata : { *(.rodata*) }
  .data : { *(.data*) }
  .bss : { *(.bss*) }
  /DISCARD/ : { *(.note*) *(.eh_frame*) *(.comment) }
}
";

/// Assembles and links `tests/guests/<name>.S` into `<dir>/<name>.elf` at 1 MiB.
pub fn build_guest(name: &str, dir: &Path) -> PathBuf {
    build_guest_at(name, dir, layout::FIRMWARE_MIN_GPA)
}

/// [`build_guest`] linked at `base`.
pub fn build_guest_at(name: &str, dir: &Path, base: u64) -> PathBuf {
    let src_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guests");
    std::fs::write(dir.join("abi.inc"), abi_inc()).unwrap();
    std::fs::write(
        dir.join("link.ld"),
        LINKER_SCRIPT.replace("BASE", &format!("{base:#x}")),
    )
    .unwrap();
    let obj = dir.join(format!("{name}.o"));
    let elf = dir.join(format!("{name}.elf"));
    let st = Command::new("gcc")
        .args(["-c", "-x", "assembler-with-cpp", "-nostdinc"])
        .arg("-I")
        .arg(dir)
        .arg("-I")
        .arg(&src_dir)
        .arg(src_dir.join(format!("{name}.S")))
        .arg("-o")
        .arg(&obj)
        .status()
        .expect("gcc (binutils) must be installed to build test guests");
    assert!(st.success(), "assembling {name} failed");
    let st = Command::new("ld")
        .args([
            "-static",
            "-nostdlib",
            "--build-id=none",
            "-z",
            "max-page-size=4096",
            "-T",
        ])
        .arg(dir.join("link.ld"))
        .arg(&obj)
        .arg("-o")
        .arg(&elf)
        .status()
        .expect("ld must be installed");
    assert!(st.success(), "linking {name} failed");
    elf
}

/// Address of `symbol` in `elf` (via nm).
pub fn symbol(elf: &Path, symbol: &str) -> u64 {
    let out = Command::new("nm").arg(elf).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .find_map(|l| {
            let mut it = l.split_whitespace();
            let addr = it.next()?;
            let _kind = it.next()?;
            (it.next()? == symbol).then(|| u64::from_str_radix(addr, 16).ok())?
        })
        .unwrap_or_else(|| panic!("symbol {symbol} not in {}", elf.display()))
}

/// A test configuration.
pub fn config(auth_code: &'static [u8]) -> Config<'static> {
    Config {
        vip: [10, 0, 0, 2],
        prefix_len: 24,
        gateway: [10, 0, 0, 1],
        mac: [0x02, 0, 0, 0, 0, 1],
        boot_server_ip: [10, 0, 0, 1],
        boot_server_port: 8443,
        vcpus: 1,
        mem_size_mib: MEM_MIB,
        time_unix_secs: 1_700_000_000,
        entropy_seed: [0x5a; 32],
        auth_code,
        server_name: "boot.tenant.example",
        ca_cert_der: &[0x30, 0x03, 0x02, 0x01, 0x01],
        image: None,
        disk: None,
        tpm: None,
    }
}

/// Writes the configuration page of `config(auth)` to `<dir>/config.page`.
pub fn write_config(dir: &Path, auth: &'static [u8]) -> PathBuf {
    let p = dir.join("config.page");
    std::fs::write(&p, config(auth).encode().unwrap()).unwrap();
    p
}

/// Writes a configuration page for `vcpus` vCPUs into `dir`.
pub fn write_config_vcpus(dir: &Path, auth: &'static [u8], vcpus: u16) -> PathBuf {
    let p = dir.join("config.page");
    let mut c = config(auth);
    c.vcpus = vcpus;
    std::fs::write(&p, c.encode().unwrap()).unwrap();
    p
}

/// Builds the test guest `name` in `dir` and runs it on a VM of `vcpus` vCPUs (auth
/// code `auth`) with the peer in `mode`.
pub fn run_guest_vcpus(
    dir: &Path,
    name: &str,
    auth: &'static [u8],
    vcpus: u16,
    mode: PeerMode,
) -> Run {
    let fw = build_guest(name, dir);
    let cfg = write_config_vcpus(dir, auth, vcpus);
    run_vm(dir, &fw, &cfg, mode)
}

/// How the test peer behaves.
#[derive(Clone)]
pub enum PeerMode {
    /// Start the VM; ack everything; evidence = "EVID" + nonce.
    Normal,
    /// Abort instead of Start.
    Abort,
    /// Start, then send Stop once milestone 0 arrives.
    StopAfterFirstMilestone,
    /// Start, then close the channel once milestone 0 arrives.
    CloseAfterFirstMilestone,
    /// Give an adoption secret, start, say `running` once milestone 0 arrives, then
    /// close the channel (as a tvpd that dies while the VM runs).
    RunningThenClose,
    /// Start; answer quotes with evidence of this many bytes.
    BigEvidence(usize),
    /// Start; never answer mailbox requests.
    SilentMailbox,
    /// Start; refuse quote requests with this code.
    RefuseQuotes(u32),
}

/// What happened in one run.
pub struct Run {
    /// Messages from the VMM, in order.
    pub messages: Vec<VmmMessage>,
    /// Exit code of the VMM process.
    pub exit_code: Option<i32>,
    /// The console log.
    pub console: String,
    /// The VMM's stderr (logs).
    pub stderr: String,
    /// Seconds the run took.
    pub secs: f64,
}

impl Run {
    /// The mailbox response lines ("R c=.. s=.. d=.. l=.. p=..") the guest printed.
    pub fn responses(&self) -> Vec<String> {
        self.console
            .lines()
            .filter(|l| l.starts_with("R "))
            .map(String::from)
            .collect()
    }

    /// Status of each response line.
    pub fn statuses(&self) -> Vec<u32> {
        self.responses()
            .iter()
            .map(|l| {
                let s = l.split_whitespace().find(|f| f.starts_with("s=")).unwrap();
                u32::from_str_radix(&s[2..], 16).unwrap()
            })
            .collect()
    }

    /// The Exited message, if any.
    pub fn exited(&self) -> Option<&VmmMessage> {
        self.messages
            .iter()
            .find(|m| matches!(m, VmmMessage::Exited { .. }))
    }

    /// Mailbox messages that reached the peer.
    pub fn mailbox_messages(&self) -> Vec<&VmmMessage> {
        self.messages
            .iter()
            .filter(|m| {
                matches!(
                    m,
                    VmmMessage::TunnelEstablished { .. }
                        | VmmMessage::QuoteRequest { .. }
                        | VmmMessage::Handover { .. }
                        | VmmMessage::BootFailed { .. }
                )
            })
            .collect()
    }
}

/// Spawns `tvp-vmm run` with `firmware`/`config_page` and plays tvpd in `mode`.
pub fn run_vm(dir: &Path, firmware: &Path, config_page: &Path, mode: PeerMode) -> Run {
    VmRun::new(dir, firmware, config_page).mode(mode).run()
}

/// [`run_vm`] with a hook called with the child's pid when milestone 0 arrives (e.g.
/// to send it a signal).
pub fn run_vm_with(
    dir: &Path,
    firmware: &Path,
    config_page: &Path,
    mode: PeerMode,
    on_first_milestone: impl FnOnce(u32) + Send + 'static,
) -> Run {
    VmRun::new(dir, firmware, config_page)
        .mode(mode)
        .on_first_milestone(on_first_milestone)
        .run()
}

/// The channel descriptor number the fd-passing test gives the child.
const CHILD_CHANNEL_FD: i32 = 10;

/// One run of a real `tvp-vmm` with the test peer playing tvpd: [`VmRun::new`] gives
/// the common case (peer [`PeerMode::Normal`], channel over a socket path in `dir`, no
/// extra arguments, this network namespace), each setter changes one thing.
pub struct VmRun<'a> {
    dir: &'a Path,
    firmware: &'a Path,
    config_page: &'a Path,
    mode: PeerMode,
    on_first_milestone: Box<dyn FnOnce(u32) + Send>,
    use_fd: bool,
    extra_args: Vec<String>,
    netns: Option<&'a str>,
}

impl<'a> VmRun<'a> {
    /// A run of `firmware` with `config_page`, files (console, socket) in `dir`.
    pub fn new(dir: &'a Path, firmware: &'a Path, config_page: &'a Path) -> VmRun<'a> {
        VmRun {
            dir,
            firmware,
            config_page,
            mode: PeerMode::Normal,
            on_first_milestone: Box::new(|_| {}),
            use_fd: false,
            extra_args: Vec::new(),
            netns: None,
        }
    }

    /// How the test peer behaves.
    pub fn mode(mut self, mode: PeerMode) -> Self {
        self.mode = mode;
        self
    }

    /// Called with the VMM's pid when milestone 0 arrives.
    pub fn on_first_milestone(mut self, f: impl FnOnce(u32) + Send + 'static) -> Self {
        self.on_first_milestone = Box::new(f);
        self
    }

    /// The channel is a socketpair end the VMM inherits (`--channel-fd`), as tvpd
    /// gives it.
    pub fn channel_fd(mut self) -> Self {
        self.use_fd = true;
        self
    }

    /// More arguments of `tvp-vmm run`.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.extra_args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Starts the VMM inside network namespace `netns` (`ip netns exec`).
    pub fn in_netns(mut self, netns: &'a str) -> Self {
        self.netns = Some(netns);
        self
    }

    /// Runs the VMM to its end (at most 120 s) and collects what happened.
    pub fn run(self) -> Run {
        let VmRun {
            dir,
            firmware,
            config_page,
            mode,
            on_first_milestone,
            use_fd,
            extra_args,
            netns,
        } = self;
        let console = dir.join("console.log");
        let t0 = Instant::now();
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_tvp-vmm")]);
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_tvp-vmm")),
        };
        cmd.args(["--log", "info", "run", "--vm-id", "test-vm"])
            .arg("--firmware")
            .arg(firmware)
            .arg("--config-page")
            .arg(config_page)
            .arg("--console-log")
            .arg(&console)
            .args(["--host-timeout-ms", &HOST_TIMEOUT_MS.to_string()])
            .args(extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut listener = None;
        let mut pair_end = None;
        let mut child_end_keep = None;
        if use_fd {
            use std::os::fd::AsRawFd;
            use std::os::unix::process::CommandExt;
            let (ours, theirs) = UnixStream::pair().unwrap();
            let raw = theirs.as_raw_fd();
            // SAFETY (test code): dup2 is async-signal-safe; the target descriptor has
            // close-on-exec cleared, so only this child inherits the channel.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::dup2(raw, CHILD_CHANNEL_FD) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            cmd.args(["--channel-fd", &CHILD_CHANNEL_FD.to_string()]);
            pair_end = Some(ours);
            child_end_keep = Some(theirs);
        } else {
            let sock = dir.join("channel.sock");
            listener = Some(UnixListener::bind(&sock).unwrap());
            cmd.arg("--channel-path").arg(&sock);
        }
        let mut child: Child = cmd.spawn().unwrap();
        drop(child_end_keep);
        let pid = child.id();
        let mut stderr_pipe = child.stderr.take().unwrap();
        let stderr_thread = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr_pipe.read_to_string(&mut s);
            s
        });
        let (msg_tx, msg_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let stream = match (listener, pair_end) {
                (_, Some(s)) => s,
                (Some(l), None) => match l.accept() {
                    Ok((s, _)) => s,
                    Err(_) => return,
                },
                (None, None) => return,
            };
            peer(stream, mode, pid, on_first_milestone, msg_tx);
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        let exit_code = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let secs = t0.elapsed().as_secs_f64();
        let stderr = stderr_thread.join().unwrap_or_default();
        let mut messages = Vec::new();
        while let Ok(Some(m)) = msg_rx.recv_timeout(Duration::from_secs(2)) {
            messages.push(m);
        }
        let console = std::fs::read_to_string(&console).unwrap_or_default();
        eprintln!("--- tvp-vmm stderr ---\n{stderr}--- console ---\n{console}---");
        Run {
            messages,
            exit_code,
            console,
            stderr,
            secs,
        }
    }
}

fn peer(
    mut s: UnixStream,
    mode: PeerMode,
    _pid: u32,
    on_first_milestone: impl FnOnce(u32),
    out: mpsc::Sender<Option<VmmMessage>>,
) {
    let mut hook = Some(on_first_milestone);
    if matches!(mode, PeerMode::RunningThenClose) {
        let _ = write_frame(&mut s, &HostMessage::AdoptionSecret { secret: [7; 32] });
    }
    while let Ok(m) = read_frame::<_, VmmMessage>(&mut s) {
        let _ = out.send(Some(m.clone()));
        let reply = match (&mode, &m) {
            (PeerMode::Abort, VmmMessage::MeasurementsDone { .. }) => Some(HostMessage::Abort {
                reason: "test abort".into(),
            }),
            (_, VmmMessage::MeasurementsDone { .. }) => Some(HostMessage::Start),
            (_, VmmMessage::Milestone { code: 0, .. }) => {
                if let Some(h) = hook.take() {
                    h(_pid);
                }
                match mode {
                    PeerMode::StopAfterFirstMilestone => Some(HostMessage::Stop),
                    PeerMode::CloseAfterFirstMilestone => break,
                    PeerMode::RunningThenClose => {
                        let _ = write_frame(&mut s, &HostMessage::Running);
                        break;
                    }
                    _ => None,
                }
            }
            (PeerMode::SilentMailbox, VmmMessage::TunnelEstablished { .. })
            | (PeerMode::SilentMailbox, VmmMessage::QuoteRequest { .. })
            | (PeerMode::SilentMailbox, VmmMessage::Handover { .. })
            | (PeerMode::SilentMailbox, VmmMessage::BootFailed { .. }) => None,
            (PeerMode::RefuseQuotes(code), VmmMessage::QuoteRequest { request_id, .. }) => {
                Some(HostMessage::Refused {
                    request_id: *request_id,
                    code: *code,
                    message: "not the lease holder".into(),
                })
            }
            (PeerMode::BigEvidence(n), VmmMessage::QuoteRequest { request_id, .. }) => {
                Some(HostMessage::Evidence {
                    request_id: *request_id,
                    evidence: vec![0xee; *n],
                })
            }
            (_, VmmMessage::QuoteRequest { request_id, nonce }) => {
                let mut evidence = b"EVID".to_vec();
                evidence.extend_from_slice(nonce);
                Some(HostMessage::Evidence {
                    request_id: *request_id,
                    evidence,
                })
            }
            (_, VmmMessage::TunnelEstablished { request_id, .. })
            | (_, VmmMessage::Handover { request_id, .. })
            | (_, VmmMessage::BootFailed { request_id, .. }) => Some(HostMessage::Ack {
                request_id: *request_id,
            }),
            _ => None,
        };
        if let Some(r) = reply {
            if write_frame(&mut s, &r).is_err() {
                break;
            }
        }
    }
    let _ = out.send(None);
}

/// A network namespace with a TAP device `tap0` (10.0.0.1/24) created for one test and
/// deleted (with the TAP device) when dropped. Nothing outside it is touched.
pub struct NetNs {
    /// The namespace's name (for `ip netns exec` and [`VmRun::in_netns`]).
    pub name: String,
}

impl NetNs {
    /// Creates the namespace; panics if that fails (the test states
    /// `require!(Need::Netns)` first, so it can).
    pub fn create(tag: &str) -> NetNs {
        let name = format!("tvpfw-{tag}-{}", std::process::id());
        let ns = NetNs { name };
        ns.ip(&["netns", "add", &ns.name]);
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns.exec(&["ip", "tuntap", "add", "dev", "tap0", "mode", "tap"]);
        ns.exec(&["ip", "addr", "add", "10.0.0.1/24", "dev", "tap0"]);
        ns.exec(&["ip", "link", "set", "tap0", "up"]);
        ns
    }

    fn ip(&self, args: &[&str]) {
        let st = Command::new("ip").args(args).status().expect("iproute2");
        assert!(st.success(), "ip {args:?}");
    }

    /// Runs `args` inside the namespace.
    pub fn exec(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.name];
        all.extend_from_slice(args);
        self.ip(&all);
    }

    /// Runs `f` on a thread that joined the namespace; returns its result.
    pub fn inside<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            join_netns(&path);
            f()
        })
        .join()
        .unwrap()
    }

    /// Binds a TCP listener inside the namespace (from a thread that joins it).
    pub fn listen(&self, addr: &str) -> std::net::TcpListener {
        let addr = addr.to_string();
        self.inside(move || std::net::TcpListener::bind(&addr).unwrap())
    }

    /// Starts capturing, on the host side of `tap0`, every frame the VM transmits (a
    /// raw packet socket bound to `tap0`); with `inject`, also sends that frame into
    /// `tap0` (towards the VM) every 20 ms. Returns once the socket is bound.
    pub fn tap_side(&self, inject: Option<Vec<u8>>) -> TapSide {
        let path = format!("/var/run/netns/{}", self.name);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let stop2 = stop.clone();
        let handle = std::thread::spawn(move || {
            join_netns(&path);
            capture(&stop2, inject.as_deref(), ready_tx)
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("packet socket on tap0");
        TapSide { stop, handle }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn join_netns(path: &str) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    // SAFETY (test code): setns on this short-lived thread only; the fd is a network
    // namespace file.
    assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
}

/// The capture started by [`NetNs::tap_side`].
pub struct TapSide {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<Vec<Vec<u8>>>,
}

impl TapSide {
    /// Stops after a last 200 ms; the frames the VM transmitted, in order.
    pub fn finish(self) -> Vec<Vec<u8>> {
        std::thread::sleep(Duration::from_millis(200));
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.handle.join().unwrap()
    }
}

/// The packet-socket loop of [`NetNs::tap_side`] (on a thread inside the namespace).
fn capture(
    stop: &std::sync::atomic::AtomicBool,
    inject: Option<&[u8]>,
    ready: mpsc::Sender<()>,
) -> Vec<Vec<u8>> {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY (test code): plain socket calls on a descriptor owned by this function,
    // with correctly sized, initialised arguments; the descriptor is closed at the end.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto));
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        let ifindex = libc::if_nametoindex(c"tap0".as_ptr());
        assert!(ifindex > 0, "tap0 not found");
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        assert_eq!(
            libc::bind(fd, &sll as *const _ as *const libc::sockaddr, len),
            0
        );
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 20_000,
        };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
        let _ = ready.send(());
        let mut frames = Vec::new();
        let mut buf = vec![0u8; 65536];
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            if let Some(f) = inject {
                libc::send(fd, f.as_ptr() as *const libc::c_void, f.len(), 0);
            }
            let deadline = Instant::now() + Duration::from_millis(20);
            while Instant::now() < deadline {
                let mut from: libc::sockaddr_ll = std::mem::zeroed();
                let mut flen = len;
                let n = libc::recvfrom(
                    fd,
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                    &mut from as *mut _ as *mut libc::sockaddr,
                    &mut flen,
                );
                if n < 0 {
                    break;
                }
                // Frames the VM wrote into the TAP arrive as received on tap0; what
                // the host sends (our injections) is PACKET_OUTGOING.
                if from.sll_pkttype != libc::PACKET_OUTGOING {
                    frames.push(buf[..n as usize].to_vec());
                }
            }
        }
        libc::close(fd);
        frames
    }
}

/// The value of `key=` on the log line containing `message` (env_logger's kv format).
pub fn log_value(stderr: &str, message: &str, key: &str) -> Option<String> {
    let line = stderr.lines().find(|l| l.contains(message))?;
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    Some(
        line[at..]
            .split_whitespace()
            .next()?
            .trim_matches('"')
            .to_string(),
    )
}

/// Lets `cmd`'s child inherit each `(src, dst)` descriptor of this process as `dst`
/// (at most 4): every source is first duplicated above all targets, so no source is
/// overwritten by another's dup2; the targets lose close-on-exec.
pub fn pass_fds(cmd: &mut Command, fds: Vec<(i32, i32)>) {
    use std::os::unix::process::CommandExt;
    assert!(fds.len() <= 4, "at most 4 descriptors");
    // SAFETY (test code): between fork and exec only dup2 and fcntl run (both
    // async-signal-safe) and `fds` was allocated before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let mut high = [0i32; 4];
            for (h, (src, _)) in high.iter_mut().zip(&fds) {
                *h = libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, 64);
                if *h < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (h, (_, dst)) in high.iter().zip(&fds) {
                if libc::dup2(*h, *dst) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// The median of `v` (sorted in place; the upper one of an even count). For the
/// benchmarks that share this module.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Serializes the firmware builds of this test binary's threads.
static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Builds the firmware (with `features`, "" for the measured image); returns its path.
pub fn firmware(features: &str) -> PathBuf {
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cmd = Command::new("bash");
    cmd.arg(root.join("scripts/build-firmware.sh"));
    if !features.is_empty() {
        cmd.args(["--features", features]);
    }
    let out = cmd.output().expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "firmware build failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("sha256 "))
        .expect("build script prints the digest");
    let mut f = line.split_whitespace().skip(1);
    let digest = f.next().unwrap().to_string();
    let path = PathBuf::from(f.next().unwrap());
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(hex::encode(tvp_abi::measure::sha256(&bytes)), digest);
    path
}
