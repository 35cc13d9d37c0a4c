//! Crash recovery at start: the records of an earlier tvpd are loaded. A VM recorded
//! `running` (handed over, holding no PCR lease) whose `tvp-vmm` still runs (pid,
//! start time and command line match) is re-adopted: tvpd connects to the VMM's
//! adoption socket, proves itself with the VM's adoption secret, and supervises it
//! again on its TAP device, with a `vm-adopted` audit record. Every other VM that was
//! live then (still booting: PCRs 16 and 23 were reset at start, its attestation
//! cannot complete; or one whose adoption failed, the reason logged) is ended as
//! before: its VMM killed (only if it is still the VM's), its TAP device deleted, and
//! it is marked failed with reason `tvpd-restarted`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::Duration;

use log::{info, warn};
use tvp_vmm_channel::{read_frame, write_frame, HostMessage, VmmMessage, PROTOCOL_VERSION};

use super::record::{Vm, Vmm};
use super::supervise::Event;
use super::{Manager, ADOPTED, RESTARTED};
use crate::lock;
use crate::vm::boot::Conversation;
use crate::vm::process::{AdoptProcessError, AdoptedProcess, VmmProcess};
use crate::vm::state::VmState;
use crate::vm::store::VmRecord;
use crate::vm::{process, store, tap};

/// How long the adoption handshake may take (connect, secret, answer).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read in the handshake (an `adopted` frame is far smaller).
const HANDSHAKE_MAX: u64 = 4096;

/// What recovery did with the VMs that were live.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Running VMs whose VMM was re-adopted.
    pub adopted: usize,
    /// VMs marked failed (`tvpd-restarted`).
    pub failed: usize,
}

/// Why a running VM's VMM could not be re-adopted (it is then ended as before).
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    /// The record has no adoption socket or secret (an older tvpd, or a path too long).
    #[error("the record has no adoption socket and secret")]
    NoAdoption,
    /// The record has no VMM pid or start time.
    #[error("the record names no VMM process")]
    NoProcess,
    /// A paused VM's VMM could not be continued for the handshake or stopped again.
    #[error("cannot {what} the paused VM's VMM: {source}")]
    Pause {
        /// `continue` or `stop`.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The process is not the VM's VMM any more.
    #[error(transparent)]
    Process(#[from] AdoptProcessError),
    /// The adoption socket cannot be reached.
    #[error("cannot connect to the adoption socket {path}: {source}")]
    Connect {
        /// The socket.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The handshake failed or the VMM answered something else.
    #[error("adoption handshake failed: {0}")]
    Handshake(String),
}

impl Manager {
    /// Load the records of an earlier tvpd (PCRs 16 and 23 are already reset):
    /// re-adopt the running VMs whose VMM still runs, and end the other VMs that were
    /// live then. TAP devices under our prefix that no adopted VM has are deleted.
    /// Refused (nothing done) if a record's management key in force disagrees with
    /// the key changes the audit trail records for the VM: the record was rolled back
    /// or edited.
    pub fn recover(self: &std::sync::Arc<Self>) -> Result<Recovered, String> {
        let (records, bad) = store::load_all(&self.cfg.vms_dir);
        for (path, why) in bad {
            warn!(path = path.display().to_string(), error = why.as_str(); "ignoring an unreadable VM record");
        }
        for rec in &records {
            if let Some(m) = &rec.view.management {
                let current = m.current.as_ref().map(|c| (c.key_id.as_str(), c.key_since));
                self.audit.check_recorded_key(&rec.view.id, current)?;
            }
        }
        let mut marked = Vec::new();
        let mut adopted = Vec::new();
        let mut kept_taps = Vec::new();
        for rec in records {
            let id = rec.view.id.clone();
            let was_live = !rec.view.state.is_final();
            let mut vm = None;
            if rec.view.state == VmState::Running {
                match self.adopt(&rec) {
                    Ok((vmm, channel, process, rx)) => {
                        info!(vm = id.as_str(), pid = vmm.pid; "re-adopted the running VM's tvp-vmm");
                        let tx = vmm.events.clone();
                        vm = Some(Vm::adopted(rec.view.clone(), rec.addresses, vmm));
                        adopted.push((id.clone(), channel, process, tx, rx));
                        kept_taps.extend(rec.view.tap.clone());
                    }
                    Err(e) => {
                        warn!(vm = id.as_str(), reason = e.to_string(); "cannot re-adopt the running VM: ending it (tvpd-restarted)")
                    }
                }
            }
            let vm = match vm {
                Some(vm) => vm,
                None => {
                    if was_live {
                        self.end_orphan(&rec);
                        marked.push(id.clone());
                    }
                    if let Some(t) = &rec.view.tap {
                        if let Err(e) = tap::delete(t) {
                            warn!(vm = id.as_str(), tap = t.as_str(), error = e.to_string(); "cannot delete an orphaned TAP device");
                        }
                    }
                    Vm::recovered(rec.view, RESTARTED)
                }
            };
            // Its key and policy stay in force: tenants read their extracts, and
            // forgetting the VM still needs their authorization.
            match vm.management.as_ref().map(|m| m.binding()) {
                Some(Ok(mut b)) => {
                    // Its last boot's page, which the tenant attested.
                    b.incarnation = std::fs::read(self.cfg.vms_dir.join(&id).join("config.page"))
                        .ok()
                        .map(|p| {
                            use sha2::Digest as _;
                            sha2::Sha256::digest(p).into()
                        });
                    self.audit.register_vm(&id, b)
                }
                Some(Err(e)) => {
                    warn!(vm = id.as_str(), error = e.as_str(); "the VM record's management binding is invalid: its restricted operations stay refused")
                }
                None => {}
            }
            let mut reg = lock(&self.registry);
            reg.vms.insert(id.clone(), vm);
            self.persist(&reg, &id);
        }
        for id in &marked {
            self.record_change(id, "unknown (tvpd was not running)", "failed", RESTARTED);
        }
        let mut count = Recovered {
            adopted: 0,
            failed: marked.len(),
        };
        for (id, channel, process, tx, rx) in adopted {
            self.record_change(&id, "running", "running", ADOPTED);
            match self.supervise_vmm(&id, channel, process, Conversation::adopted(), tx, rx) {
                Ok(()) => count.adopted += 1,
                Err(e) => {
                    warn!(vm = id.as_str(), error = e.to_string(); "cannot supervise the re-adopted VM: ended");
                    count.failed += 1;
                }
            }
        }
        for t in tap::list_with_prefix(&self.cfg.tap_prefix) {
            if kept_taps.contains(&t) {
                continue;
            }
            match tap::delete(&t) {
                Ok(()) => warn!(tap = t.as_str(); "deleted an orphaned TAP device"),
                Err(e) => {
                    warn!(tap = t.as_str(), error = e.to_string(); "cannot delete an orphaned TAP device")
                }
            }
        }
        Ok(count)
    }

    /// Kill a live VM's VMM of an earlier tvpd, if it still is the VM's.
    fn end_orphan(&self, rec: &VmRecord) {
        let id = rec.view.id.as_str();
        if let (Some(pid), Some(started)) = (rec.view.pid, rec.vmm_start_time) {
            if process::kill_if_vmm(pid, started, id) {
                warn!(vm = id, pid = pid; "killed the orphaned tvp-vmm of an earlier tvpd");
            }
        }
        warn!(vm = id; "VM was live when tvpd stopped: marked failed (tvpd-restarted)");
    }

    /// Re-adopt the VMM of running VM `rec`: hold its process by a pidfd (pid, start
    /// time and command line checked), connect to its adoption socket, present the
    /// secret, and take its `adopted` answer. The connection becomes its channel.
    #[allow(clippy::type_complexity)]
    fn adopt(
        &self,
        rec: &VmRecord,
    ) -> Result<(Vmm, UnixStream, VmmProcess, mpsc::Receiver<Event>), AdoptError> {
        let id = rec.view.id.as_str();
        let adoption = rec.adoption.as_ref().ok_or(AdoptError::NoAdoption)?;
        let secret = adoption.secret().ok_or(AdoptError::NoAdoption)?;
        let (Some(pid), Some(started)) = (rec.view.pid, rec.vmm_start_time) else {
            return Err(AdoptError::NoProcess);
        };
        let mut process = VmmProcess::Adopted(AdoptedProcess::open(pid, started, id)?);
        // A paused (SIGSTOPped) VMM cannot notice its closed channel nor answer: it is
        // continued for the handshake and stopped again right after.
        let paused = rec.view.paused;
        if paused {
            process
                .signal(nix::sys::signal::Signal::SIGCONT)
                .map_err(|source| AdoptError::Pause {
                    what: "continue",
                    source,
                })?;
        }
        let mut s =
            UnixStream::connect(&adoption.socket).map_err(|source| AdoptError::Connect {
                path: adoption.socket.display().to_string(),
                source,
            })?;
        let hs = |e: String| AdoptError::Handshake(e);
        s.set_read_timeout(Some(HANDSHAKE_TIMEOUT))
            .and_then(|()| s.set_write_timeout(Some(HANDSHAKE_TIMEOUT)))
            .map_err(|e| hs(e.to_string()))?;
        write_frame(&mut s, &HostMessage::Adopt { secret }).map_err(|e| hs(e.to_string()))?;
        let answer = read_frame::<_, VmmMessage>(&mut (&s).take(HANDSHAKE_MAX)).map_err(|e| {
            hs(format!(
                "no answer ({e}): wrong secret, or not the VM's VMM"
            ))
        })?;
        match answer {
            VmmMessage::Adopted {
                protocol_version,
                vm_id,
                pid: said_pid,
            } if protocol_version == PROTOCOL_VERSION && vm_id == id && said_pid == pid => {}
            other => return Err(hs(format!("unexpected answer {other:?}"))),
        }
        s.set_read_timeout(None)
            .and_then(|()| s.set_write_timeout(None))
            .map_err(|e| hs(e.to_string()))?;
        s.flush().map_err(|e| hs(e.to_string()))?;
        if paused {
            process
                .signal(nix::sys::signal::Signal::SIGSTOP)
                .map_err(|source| AdoptError::Pause {
                    what: "stop",
                    source,
                })?;
        }
        let page = std::fs::read(self.cfg.vms_dir.join(id).join("config.page")).unwrap_or_default();
        let (events, rx) = mpsc::channel();
        let vmm = Vmm {
            pid,
            start_time: Some(started),
            events,
            page,
            // Its image key was checked against its measured boot then.
            bound: None,
            adoption: Some(adoption.clone()),
            disk_tampers: 0,
        };
        Ok((vmm, s, process, rx))
    }
}
