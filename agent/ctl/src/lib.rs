//! `tvpctl`: the command line for tvpd's API, evidence verification and tpm2-tools
//! interoperability.

pub mod audit;
pub mod audit_verify;
pub mod authorize;
pub mod client;
pub mod expected;
pub mod host;
pub mod image;
pub mod inventory;
pub mod pin;
pub mod progress;
pub mod verify;
pub mod vm;
pub mod vtpm;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use tvp_agent::config::DEFAULT_SOCKET;

/// Exit codes of tvpctl.
pub mod exit {
    /// Success (for `verify`: every check passed).
    pub const OK: i32 = 0;
    /// Verification failed (the message names the failed check).
    pub const VERIFY_FAILED: i32 = 1;
    /// Bad command line (clap's own code).
    pub const USAGE: i32 = 2;
    /// tvpd answered with an error.
    pub const API_ERROR: i32 = 3;
    /// tvpd could not be reached.
    pub const UNREACHABLE: i32 = 4;
    /// A local file could not be read or written, or is malformed.
    pub const IO: i32 = 5;
    /// `audit verify`: the extract verifies, but the trail states that events of the
    /// VM were lost (gaps; the message names them).
    pub const GAPS: i32 = 6;
}

/// tvpctl: talk to tvpd, verify evidence, export quotes for tpm2-tools.
///
/// Examples:
///   tvpctl host                                  # the host's identity (EK, AK, host id)
///   tvpctl quote --nonce $(openssl rand -hex 16) -o evidence.json
///   tvpctl verify evidence.json --nonce <hex> --ak ak.pem [--expect pcrs.json]
///   tvpctl export-tpm2 evidence.json out/ && tpm2_checkquote ...
///   tvpd --print-expected-pcrs > platform.json
///   tvpctl inventory --expect platform.json --merge inventory.json -o inventory.json
///   tvpctl authorize --key tenant.pem --host host1.json --evidence vm1-evidence.json --vm vm1 --op pause
///   tvpctl audit anchor --nonce <hex> -o anchor.json
///   tvpctl audit verify /var/lib/tvp/audit.log --anchor anchor.json --ak ak.pem --nonce <hex>
///   tvpctl audit extract --vm vm1 --nonce <hex> -o x.json
///   tvpctl audit verify x.json --policy policy.json --ak ak.pem --nonce <hex> --save-checkpoint vm1.cp
///
/// Exit codes: 0 success; 1 verification failed; 2 bad usage; 3 tvpd refused the
/// request; 4 tvpd unreachable; 5 local file error; 6 an audit trail verifies but
/// states lost events (gaps).
#[derive(Debug, Parser)]
#[command(name = "tvpctl", version, verbatim_doc_comment)]
pub struct Cli {
    /// tvpd's API socket.
    #[arg(long, global = true, env = "TVP_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// tvpctl's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the host's TPM identity (host id, EK, EK certificate, AK).
    Host,
    /// Ask tvpd for a quote and write the evidence (JSON).
    Quote {
        /// Fresh nonce, hex, 1 to 32 bytes.
        #[arg(long)]
        nonce: String,
        /// PCRs to quote, comma-separated (default: the platform PCR).
        #[arg(long, value_delimiter = ',')]
        pcrs: Option<Vec<u32>>,
        /// Write the evidence to FILE instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Show the host event log (CEL-JSON).
    EventLog,
    /// Recover a credential made with TPM2_MakeCredential for this host's EK and AK name.
    ActivateCredential {
        /// A `tpm2_makecredential -o` output file.
        #[arg(long, value_name = "FILE")]
        mkcred: PathBuf,
        /// Write the recovered secret (raw bytes) to FILE; default: print it as hex.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Verify evidence offline: AK, signature, nonce, PCR digest, event-log replay,
    /// (with --expect) expected values and (with --ima-allowlist) the host's IMA list.
    /// Exit 0 only if every check passes; otherwise exit 1 naming the failed check.
    /// Always says whether the host's runtime integrity was checked.
    Verify {
        /// Evidence JSON (from `tvpctl quote` or a boot server).
        evidence: PathBuf,
        /// The nonce you sent, hex.
        #[arg(long)]
        nonce: String,
        /// The host's AK public key (PEM) from your inventory.
        #[arg(long, value_name = "AK.pem")]
        ak: PathBuf,
        /// Expected PCR values: {"pcrs":{"sha256":{"15":"<hex>"}}}.
        #[arg(long, value_name = "PCRS.json")]
        expect: Option<PathBuf>,
        /// The host's EK name (hex, from the inventory): require the AK to sit under that EK.
        #[arg(long, value_name = "HEX")]
        ek_name: Option<String>,
        /// The host's IMA allowlist ({"entries":[{"digest":"sha256:<hex>","path":...}]}):
        /// the evidence must carry the host's IMA list, it must replay to the quoted
        /// PCR 10 and every measurement must be allowed. Without it, runtime integrity
        /// is reported as not checked.
        #[arg(long, value_name = "ALLOWLIST.json")]
        ima_allowlist: Option<PathBuf>,
    },
    /// Write the evidence as the files tpm2-tools' `tpm2_checkquote` reads (quote.msg,
    /// quote.sig, quote.pcrs, ak.pem) and print the command that checks them.
    #[command(name = "export-tpm2")]
    ExportTpm2 {
        /// Evidence JSON.
        evidence: PathBuf,
        /// Directory for the files (created).
        dir: PathBuf,
        /// Check against this nonce (hex) instead of the evidence's own.
        #[arg(long)]
        nonce: Option<String>,
        /// Use this trusted AK (PEM) instead of the evidence's own.
        #[arg(long, value_name = "AK.pem")]
        ak: Option<PathBuf>,
    },
    /// Measured VMs: create, list, show; with the tenant's token: pause, resume,
    /// poweroff, reboot, delete, any other restricted operation.
    #[command(subcommand)]
    Vm(vm::VmCommand),
    /// Encrypted VM images: key-management key pair, encrypt, inspect, decrypt.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Sign a management authorization with the tenant's key (PKCS#8 PEM, Ed25519 or
    /// P-256) and print the token for the X-Tvp-Authorization header. The token is
    /// valid only on the host you name and for the boot of the VM whose evidence you
    /// give (its configuration page digest): verify that evidence with `tvpctl verify`
    /// first. A reboot makes a new incarnation: attest again and sign for it.
    ///
    /// Key operations: `--op rotate-key --new-key NEW.pub.pem` hands management to a
    /// new key (signed by the current one); `--op renew-key-lease` restarts the
    /// current key's lease. Both only while the current key's lease runs.
    #[command(verbatim_doc_comment)]
    Authorize {
        /// The tenant's management private key.
        #[arg(long, value_name = "KEY")]
        key: PathBuf,
        /// The VM id.
        #[arg(long)]
        vm: String,
        /// The operation (pause, resume, power-off, ..., rotate-key, renew-key-lease).
        #[arg(long)]
        op: String,
        /// An operation parameter, key=value (repeatable).
        #[arg(long, value_name = "K=V")]
        param: Vec<String>,
        /// Per-VM counter, greater than any used before [default: now in ms].
        #[arg(long)]
        counter: Option<u64>,
        /// Validity from now, in seconds (at most the policy's max_token_lifetime_secs,
        /// 3600 unless it says otherwise).
        #[arg(long, default_value_t = 300)]
        expires: u64,
        /// The host the VM runs on: its AK name (hex), or the `tvpctl host --json`
        /// document you pinned for it (its "ak_name").
        #[arg(long, value_name = "AK-NAME|FILE")]
        host: String,
        /// The VM's evidence (its attestation): the token is bound to the
        /// configuration page digest of its PCR 23 `config-page` event.
        #[arg(long, value_name = "FILE", conflicts_with = "incarnation")]
        evidence: Option<PathBuf>,
        /// The VM's incarnation directly: SHA-256 (hex) of its configuration page.
        #[arg(long, value_name = "HEX")]
        incarnation: Option<String>,
        /// rotate-key: the new management public key (PEM); becomes the operation's
        /// `public_key` parameter (printed on stderr to pass with the operation).
        #[arg(long, value_name = "PEM")]
        new_key: Option<PathBuf>,
    },
    /// This host's inventory entry (host id, AK, EK name, expected platform PCRs,
    /// runtime integrity) for the tenants' boot servers and key services: prints an
    /// inventory file, or adds the entry to one (replacing this host's previous entry).
    Inventory {
        /// The expected platform PCRs: `tvpd --print-expected-pcrs` output.
        #[arg(long, value_name = "FILE")]
        expect: PathBuf,
        /// Start from this inventory file (if it exists) instead of an empty one.
        #[arg(long, value_name = "FILE")]
        merge: Option<PathBuf>,
        /// Write to FILE instead of stdout (may be the --merge file).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// The host's IMA allowlist ({"entries":[{"digest":"sha256:<hex>","path":...}]},
        /// e.g. made at image-build time): the entry gets "runtime_integrity":
        /// {"ima": ...}. Without it the entry says "runtime_integrity": "none" and
        /// verifiers report runtime integrity as not checked (docs/host-hardening.md).
        #[arg(long, value_name = "ALLOWLIST.json")]
        ima_allowlist: Option<PathBuf>,
        /// With --ima-allowlist: pin this host's current PCRs 0-9 (firmware, boot loader,
        /// kernel) in the IMA entry ("boot_pcrs"), read from a quote tvpd makes now and
        /// checked against its AK. Verifiers then refuse a host booted into another
        /// kernel (one without IMA could fake PCR 10), naming the PCR. Run it on the
        /// host as built, before it serves tenants; re-run after a kernel update.
        #[arg(long, requires = "ima_allowlist")]
        pin_boot_pcrs: bool,
    },
    /// The audit trail: show, certify its TPM anchor, verify a log or an extract.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Compute the PCR 23 value of a measured VM from its firmware file and
    /// configuration page alone; prints an expected-values file for `verify --expect`.
    ExpectedPcrs {
        /// The firmware ELF image tvpd will load.
        #[arg(long, value_name = "FILE")]
        firmware: PathBuf,
        /// The VM's encoded configuration page (4096 bytes).
        #[arg(long, value_name = "FILE")]
        config_page: PathBuf,
        /// Add to the values of this expected-values file (e.g. the platform PCR).
        #[arg(long, value_name = "FILE")]
        merge: Option<PathBuf>,
        /// The tenant's management public key (PEM) given at creation: tvpd extends
        /// the management binding into PCR 23 after tvp-vmm's events. Without it (and
        /// --policy) the value is tvp-vmm's alone.
        #[arg(long, value_name = "PEM", requires = "policy")]
        management_key: Option<PathBuf>,
        /// The tenant's policy (JSON) given at creation.
        #[arg(long, value_name = "FILE", requires = "management_key")]
        policy: Option<PathBuf>,
    },
}

/// Run tvpctl; returns the exit code.
pub fn run(cli: Cli) -> i32 {
    match &cli.command {
        Command::Host => host::show_host(&cli),
        Command::Quote {
            nonce,
            pcrs,
            output,
        } => host::quote(&cli, nonce, pcrs.clone(), output.as_deref()),
        Command::EventLog => host::event_log(&cli),
        Command::ActivateCredential { mkcred, output } => {
            host::activate_credential(&cli, mkcred, output.as_deref())
        }
        Command::Verify {
            evidence,
            nonce,
            ak,
            expect,
            ek_name,
            ima_allowlist,
        } => verify::run_verify(&verify::VerifyArgs {
            evidence,
            nonce,
            ak,
            expect: expect.as_deref(),
            ek_name: ek_name.as_deref(),
            ima_allowlist: ima_allowlist.as_deref(),
            json: cli.json,
        }),
        Command::ExportTpm2 {
            evidence,
            dir,
            nonce,
            ak,
        } => verify::run_export(evidence, dir, nonce.as_deref(), ak.as_deref()),
        Command::Image(cmd) => image::run(cmd, cli.json),
        Command::Vm(cmd) => vm::run(&cli, cmd),
        Command::ExpectedPcrs {
            firmware,
            config_page,
            merge,
            management_key,
            policy,
        } => expected::run(
            &expected::Inputs {
                firmware,
                config_page,
                merge: merge.as_deref(),
                management: management_key.as_deref().zip(policy.as_deref()),
            },
            cli.json,
        ),
        Command::Authorize {
            key,
            vm,
            op,
            param,
            counter,
            expires,
            host,
            evidence,
            incarnation,
            new_key,
        } => authorize::run(&authorize::AuthorizeArgs {
            key,
            vm,
            op,
            param,
            counter: *counter,
            expires: *expires,
            host,
            evidence: evidence.as_deref(),
            incarnation: incarnation.as_deref(),
            new_key: new_key.as_ref(),
            json: cli.json,
        }),
        Command::Audit(cmd) => audit::run(&cli, cmd),
        Command::Inventory {
            expect,
            merge,
            output,
            ima_allowlist,
            pin_boot_pcrs,
        } => inventory::run(
            &cli,
            &inventory::Inputs {
                expect,
                merge: merge.as_deref(),
                output: output.as_deref(),
                ima_allowlist: ima_allowlist.as_deref(),
                pin_boot_pcrs: *pin_boot_pcrs,
            },
        ),
    }
}
