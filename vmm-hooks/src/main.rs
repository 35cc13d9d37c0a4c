//! `tvp-vmm` command line. `run` is what tvpd spawns; the other subcommands are tools
//! for operators, verifiers and benchmarks.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tvp_abi::config::Config;
use tvp_vmm::vm::{self, exit_code, ChannelSpec, RunOptions};

#[derive(Parser)]
#[command(
    name = "tvp-vmm",
    version,
    about = "tvp's per-VM VMM: measured direct boot, attestation mailbox"
)]
struct Cli {
    /// Log filter (env_logger syntax), e.g. "info" or "tvp_vmm=debug".
    #[arg(long, env = "TVP_VMM_LOG", default_value = "info", global = true)]
    log: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build, measure and run one VM (spawned by tvpd).
    Run {
        /// VM id, for logs and the channel's Hello.
        #[arg(long)]
        vm_id: String,
        /// Firmware ELF file.
        #[arg(long)]
        firmware: PathBuf,
        /// Configuration page file (exactly 4096 bytes, tvp-abi encoding).
        #[arg(long)]
        config_page: PathBuf,
        /// Console log file (created/truncated).
        #[arg(long)]
        console_log: PathBuf,
        /// Cap on the console log size in bytes.
        #[arg(long, default_value_t = 1 << 20)]
        console_limit: u64,
        /// Inherited channel socket descriptor (tvpd's socketpair end).
        #[arg(long, conflicts_with_all = ["channel_path", "standalone"])]
        channel_fd: Option<i32>,
        /// Unix socket path to connect to as the channel.
        #[arg(long, conflicts_with = "standalone")]
        channel_path: Option<PathBuf>,
        /// No tvpd (development and benchmarks): start at once, mailbox requests that
        /// need tvpd fail with PLATFORM_UNAVAILABLE.
        #[arg(long)]
        standalone: bool,
        /// How long a mailbox request waits for tvpd, in milliseconds.
        #[arg(long, default_value_t = 30_000)]
        host_timeout_ms: u64,
        /// Do not install the seccomp syscall allowlist (debugging only).
        #[arg(long)]
        no_syscall_filter: bool,
        /// TAP interface for the VM's virtio-net device (virtio-mmio at 0xd0000000);
        /// without it the VM has no NIC.
        #[arg(long)]
        tap: Option<String>,
        /// Drop to this numeric UID:GID (supplementary groups cleared) once /dev/kvm,
        /// the TAP device and every file are open, before the guest runs.
        #[arg(long, value_name = "UID:GID", value_parser = parse_uid_gid)]
        run_as: Option<(u32, u32)>,
        /// Testing only: after the lockdown, make a syscall the filter does not allow
        /// (the process must be killed by SIGSYS).
        #[arg(long, hide = true)]
        fault_forbidden_syscall: bool,
        /// Inherited descriptor of the workload image the configuration page describes
        /// (tvpd opens it); loaded into guest memory before the guest starts.
        #[arg(long, value_name = "FD")]
        image_fd: Option<i32>,
        /// Inherited pipe holding the encrypted image's 32-byte key (then end of file).
        #[arg(long, value_name = "FD", requires = "image_fd")]
        image_key_fd: Option<i32>,
        /// Inherited descriptor of an encrypted tvp image served read-only to the guest
        /// as its virtio-blk disk (virtio-mmio at 0xd0001000, GSI 6); each chunk is
        /// authenticated and decrypted when the guest reads it.
        #[arg(long, value_name = "FD", requires = "disk_key_fd")]
        disk_fd: Option<i32>,
        /// Inherited pipe holding the disk image's 32-byte key (then end of file).
        #[arg(long, value_name = "FD", requires = "disk_fd")]
        disk_key_fd: Option<i32>,
        /// Inherited connected stream socket to the VM's own TPM (its swtpm's data
        /// channel: raw TPM 2.0 commands and responses), served to the guest as a TPM
        /// CRB device at 0xfed40000, locality 0.
        #[arg(long, value_name = "FD")]
        vtpm_fd: Option<i32>,
        /// How long one TPM command may take before the VM's TPM counts as failed.
        #[arg(long, value_name = "MS", default_value_t = 30_000)]
        vtpm_timeout_ms: u64,
        /// The key's lease: the image must be in memory within this many milliseconds
        /// of reading the key, or the VM fails.
        #[arg(long, value_name = "MS", default_value_t = 30_000)]
        image_key_lease_ms: u64,
        /// Unix socket to listen on (mode 0600) for a restarted tvpd once the running
        /// VM's channel closed; it must present the adoption secret tvpd sent over the
        /// channel. Without it a closed channel stops the VM.
        #[arg(long, value_name = "PATH", conflicts_with = "standalone")]
        adopt_socket: Option<PathBuf>,
        /// How long a running VM waits for adoption before it stops, in seconds.
        #[arg(
            long,
            value_name = "SECS",
            default_value_t = 120,
            requires = "adopt_socket"
        )]
        adopt_grace_secs: u64,
    },
    /// Print the PCR 23 events and value for a firmware file and configuration page.
    ExpectedPcr23 {
        /// Firmware ELF file.
        #[arg(long)]
        firmware: PathBuf,
        /// Configuration page file.
        #[arg(long)]
        config_page: PathBuf,
    },
    /// Hash a file the way the measurement hook does (SHA-256, streamed); prints the
    /// digest and, on stderr, the throughput.
    MeasureFile {
        /// The file.
        path: PathBuf,
    },
    /// Print the ABI constants as a C-preprocessor header for assembly code.
    AbiHeader,
    /// Write a configuration page.
    ConfigPage {
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// VIP with prefix, e.g. 10.0.0.2/24.
        #[arg(long)]
        vip: String,
        /// Gateway, 0.0.0.0 for none.
        #[arg(long, default_value = "0.0.0.0")]
        gateway: std::net::Ipv4Addr,
        /// MAC, e.g. 02:00:00:00:00:01.
        #[arg(long)]
        mac: String,
        /// Boot server address:port.
        #[arg(long)]
        boot_server: std::net::SocketAddrV4,
        /// Boot server TLS name.
        #[arg(long)]
        server_name: String,
        /// Authentication code U (UTF-8 string).
        #[arg(long)]
        auth_code: String,
        /// Tenant CA certificate, DER or PEM.
        #[arg(long)]
        ca_cert: PathBuf,
        /// Memory in MiB.
        #[arg(long, default_value_t = 16)]
        mem_mib: u32,
        /// vCPUs.
        #[arg(long, default_value_t = 1)]
        vcpus: u16,
        /// Unix time to record (default: now).
        #[arg(long)]
        time: Option<u64>,
        /// Entropy seed, 64 hex digits (default: from the OS RNG).
        #[arg(long)]
        entropy_hex: Option<String>,
    },
}

fn parse_uid_gid(s: &str) -> Result<(u32, u32), String> {
    let (u, g) = s
        .split_once(':')
        .ok_or_else(|| format!("'{s}': expected UID:GID, e.g. 998:998"))?;
    let num = |v: &str| v.parse::<u32>().map_err(|e| format!("'{v}': {e}"));
    let (uid, gid) = (num(u)?, num(g)?);
    if uid == 0 || gid == 0 {
        return Err("running as root is what --run-as avoids; give a dedicated user".into());
    }
    Ok((uid, gid))
}

fn fail(msg: String) -> ExitCode {
    eprintln!("tvp-vmm: {msg}");
    ExitCode::from(exit_code::SETUP_FAILED as u8)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::new()
        .parse_filters(&cli.log)
        .format_timestamp_micros()
        .init();
    match cli.cmd {
        Cmd::Run {
            vm_id,
            firmware,
            config_page,
            console_log,
            console_limit,
            channel_fd,
            channel_path,
            standalone,
            host_timeout_ms,
            no_syscall_filter,
            tap,
            run_as,
            fault_forbidden_syscall,
            image_fd,
            image_key_fd,
            image_key_lease_ms,
            disk_fd,
            disk_key_fd,
            vtpm_fd,
            vtpm_timeout_ms,
            adopt_socket,
            adopt_grace_secs,
        } => {
            let channel = match (channel_fd, channel_path, standalone) {
                (Some(fd), None, false) => ChannelSpec::Fd(fd),
                (None, Some(p), false) => ChannelSpec::Path(p),
                (None, None, true) => ChannelSpec::Standalone,
                _ => {
                    eprintln!(
                        "tvp-vmm: give exactly one of --channel-fd, --channel-path, --standalone"
                    );
                    return ExitCode::from(exit_code::USAGE as u8);
                }
            };
            let code = vm::run(RunOptions {
                vm_id,
                firmware,
                config_page,
                console_log,
                console_limit,
                channel,
                host_timeout: Duration::from_millis(host_timeout_ms),
                syscall_filter: !no_syscall_filter,
                tap,
                run_as,
                fault_forbidden_syscall,
                image: image_fd.map(|fd| tvp_vmm::image::ImageInput {
                    fd,
                    key_fd: image_key_fd,
                    key_lease: Duration::from_millis(image_key_lease_ms),
                }),
                disk: disk_fd
                    .zip(disk_key_fd)
                    .map(|(fd, key_fd)| tvp_vmm::disk::DiskInput { fd, key_fd }),
                vtpm: vtpm_fd.map(|fd| tvp_vmm::tpm_crb::VtpmInput {
                    fd,
                    timeout: Duration::from_millis(vtpm_timeout_ms),
                }),
                adoption: adopt_socket.map(|p| (p, Duration::from_secs(adopt_grace_secs))),
            });
            ExitCode::from(code as u8)
        }
        Cmd::ExpectedPcr23 {
            firmware,
            config_page,
        } => {
            let fw = match std::fs::read(&firmware) {
                Ok(b) => b,
                Err(e) => return fail(format!("cannot read {}: {e}", firmware.display())),
            };
            let page = match std::fs::read(&config_page) {
                Ok(b) => b,
                Err(e) => return fail(format!("cannot read {}: {e}", config_page.display())),
            };
            match tvp_abi::measure::expected_events(&fw, &page) {
                Ok(events) => {
                    for (i, e) in events.iter().enumerate() {
                        println!(
                            "event {i} {} {}",
                            e.event_type.name(),
                            hex::encode(e.digest)
                        );
                    }
                    let pcr = tvp_abi::measure::replay(events.iter().map(|e| &e.digest));
                    println!("pcr23 {}", hex::encode(pcr));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e.to_string()),
            }
        }
        Cmd::AbiHeader => {
            let mut s = String::new();
            if tvp_abi::asm::write_header(&mut s).is_err() {
                return fail("cannot format header".into());
            }
            print!("{s}");
            ExitCode::SUCCESS
        }
        Cmd::MeasureFile { path } => {
            let t = Instant::now();
            match tvp_vmm::measure::sha256_file(&path) {
                Ok(d) => {
                    let secs = t.elapsed().as_secs_f64();
                    let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                    println!("{}  {}", hex::encode(d), path.display());
                    eprintln!(
                        "hashed {len} bytes in {secs:.4} s = {:.1} MB/s",
                        len as f64 / secs / 1e6
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(format!("cannot hash {}: {e}", path.display())),
            }
        }
        Cmd::ConfigPage {
            out,
            vip,
            gateway,
            mac,
            boot_server,
            server_name,
            auth_code,
            ca_cert,
            mem_mib,
            vcpus,
            time,
            entropy_hex,
        } => {
            match config_page(
                &vip,
                gateway,
                &mac,
                boot_server,
                &server_name,
                &auth_code,
                &ca_cert,
                mem_mib,
                vcpus,
                time,
                entropy_hex.as_deref(),
            ) {
                Ok(page) => match std::fs::write(&out, page) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => fail(format!("cannot write {}: {e}", out.display())),
                },
                Err(e) => fail(e),
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn config_page(
    vip: &str,
    gateway: std::net::Ipv4Addr,
    mac: &str,
    boot_server: std::net::SocketAddrV4,
    server_name: &str,
    auth_code: &str,
    ca_cert: &PathBuf,
    mem_mib: u32,
    vcpus: u16,
    time: Option<u64>,
    entropy_hex: Option<&str>,
) -> Result<[u8; 4096], String> {
    let (ip, prefix) = vip.split_once('/').ok_or("--vip must be ADDRESS/PREFIX")?;
    let ip: std::net::Ipv4Addr = ip.parse().map_err(|e| format!("--vip: {e}"))?;
    let prefix: u8 = prefix.parse().map_err(|e| format!("--vip prefix: {e}"))?;
    let mac_bytes: Vec<u8> = mac
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("--mac: {e}"))?;
    let mac: [u8; 6] = mac_bytes
        .try_into()
        .map_err(|_| "--mac needs 6 octets".to_string())?;
    let raw =
        std::fs::read(ca_cert).map_err(|e| format!("cannot read {}: {e}", ca_cert.display()))?;
    let der = pem_to_der(&raw)?;
    let entropy_seed: [u8; 32] = match entropy_hex {
        Some(h) => hex::decode(h)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or("--entropy-hex needs 64 hex digits")?,
        None => {
            let mut s = [0u8; 32];
            use std::io::Read;
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut s))
                .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
            s
        }
    };
    let time_unix_secs = time.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    });
    let cfg = Config {
        vip: ip.octets(),
        prefix_len: prefix,
        gateway: gateway.octets(),
        mac,
        boot_server_ip: boot_server.ip().octets(),
        boot_server_port: boot_server.port(),
        vcpus,
        mem_size_mib: mem_mib,
        time_unix_secs,
        entropy_seed,
        auth_code: auth_code.as_bytes(),
        server_name,
        ca_cert_der: &der,
        image: None,
        disk: None,
        tpm: None,
    };
    cfg.encode().map_err(|e| e.to_string())
}

fn pem_to_der(raw: &[u8]) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let Ok(text) = std::str::from_utf8(raw) else {
        return Ok(raw.to_vec());
    };
    if !text.contains("-----BEGIN CERTIFICATE-----") {
        return Ok(raw.to_vec());
    }
    let b64: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| format!("bad PEM: {e}"))
}
