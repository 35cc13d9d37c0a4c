//! The per-VM supervisor: one thread per launched `tvp-vmm` that takes its channel's
//! messages, the deadlines and the manager's requests (destroy,
//! reboot) one at a time, so that only it moves the VM's boot on; a reader thread per
//! channel and a timer per deadline feed it. Every VMM message is first vetted against
//! what this VMM said before and against the VM's boot
//! ([`crate::vm::boot::Conversation`]): a message out of protocol destroys the VM and
//! kills its VMM. A VMM that still runs [`END_GRACE`] after its VM ended is killed.
//! When the VMM is gone it deletes the TAP device and reaps the VM (its pid cleared),
//! which a DELETE of an ended VM waits for.

use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use log::{info, warn};
use tvp_vmm_channel::{read_frame, write_frame, HostMessage, VmmMessage};

use super::launch::{describe_exit, stop_child, Launched};
use super::{Manager, VmError, SECCOMP_KILLED};
use crate::lock;
use crate::vm::boot::{Conversation, Ending, Step};
use crate::vm::phase::Phase;
use crate::vm::process::VmmProcess;
use crate::vm::state::{VmState, VmView};
use crate::vm::tap;

const SIGSYS: i32 = nix::libc::SIGSYS;

/// How long a VMM may live on after its VM ended (it reported `boot-failed` or
/// `exited`, or tvpd ended the VM) before tvpd kills it.
pub const END_GRACE: Duration = Duration::from_secs(5);
/// How long a killed VMM may take to go before tvpd gives it up (leaves it to the
/// unmanaged-VM scan).
const KILL_WAIT: Duration = Duration::from_secs(2);

/// What a VM's supervisor is told.
pub(super) enum Event {
    /// A message from the VMM.
    Vmm(VmmMessage),
    /// The VMM's channel closed (it exited or broke the protocol).
    ChannelClosed(String),
    /// The attestation deadline passed.
    Deadline,
    /// The phase entered as the `n`-th (generation) may have run out of time.
    PhaseDeadline(u64),
    /// Stop the VM (delete, power-off, platform change, tvpd stopping) with this
    /// reason; for a VM that has ended already, stop its VMM if it still runs.
    Destroy(String),
    /// Stop this boot and start a new measured boot (`control::reboot`).
    Reboot(Sender<Result<VmView, VmError>>),
    /// [`END_GRACE`] has passed since the VM ended: kill its VMM if it still runs.
    EndGrace,
    /// tvpd stops and leaves this running VM to the next tvpd (`keep_vms_on_stop`):
    /// stop supervising without touching the VMM, its TAP device or its record.
    Leave,
}

/// What the supervisor does after an event.
pub(super) enum Flow {
    /// Wait for the next event.
    Continue,
    /// The VMM is gone: clean up and reap the VM.
    Reap,
    /// A new boot with its own supervisor took over (reboot): leave without reaping.
    HandedOff,
    /// The VMM survived SIGKILL: leave it to the unmanaged-VM scan (its pid cleared,
    /// so the scan no longer counts it as tvpd's) without waiting for it.
    Abandon,
}

impl Manager {
    /// Start the channel reader, the deadline timer and the supervisor of a launched
    /// VMM.
    pub(super) fn supervise_launched(
        self: &Arc<Self>,
        id: &str,
        launched: Launched,
        deadline: Duration,
        tx: Sender<Event>,
        rx: Receiver<Event>,
    ) -> Result<(), VmError> {
        let dtx = tx.clone();
        self.supervise_vmm(
            id,
            launched.channel,
            launched.child,
            Conversation::default(),
            tx,
            rx,
        )?;
        std::thread::spawn(move || {
            std::thread::sleep(deadline);
            let _ = dtx.send(Event::Deadline);
        });
        Ok(())
    }

    /// Start the channel reader and the supervisor of VMM `child` on `channel`, whose
    /// messages so far are `said` (a new conversation, or an adopted VMM's).
    pub(super) fn supervise_vmm(
        self: &Arc<Self>,
        id: &str,
        channel: UnixStream,
        mut child: VmmProcess,
        said: Conversation,
        tx: Sender<Event>,
        rx: Receiver<Event>,
    ) -> Result<(), VmError> {
        let reader = match channel.try_clone() {
            Ok(r) => r,
            Err(e) => {
                // Without a supervisor nothing would ever stop or reap it.
                let reason = format!("cannot supervise the VM: {e}");
                warn!(vm = id, reason = reason.as_str(); "VM abandoned");
                self.end(id, Ending::Failed, reason);
                self.reap(id, &mut child);
                return Err(VmError::Spawn(e.to_string()));
            }
        };
        std::thread::spawn(move || read_loop(reader, tx));
        let me = self.clone();
        let sid = id.to_string();
        std::thread::spawn(move || me.supervise(&sid, rx, channel, child, said));
        Ok(())
    }

    fn supervise(
        self: &Arc<Self>,
        id: &str,
        rx: Receiver<Event>,
        mut w: UnixStream,
        mut child: VmmProcess,
        mut said: Conversation,
    ) {
        let mut grace_armed = false;
        for ev in rx {
            match self.handle(id, ev, &mut w, &mut child, &mut said) {
                Flow::Continue => {}
                Flow::Reap => break,
                Flow::HandedOff => return,
                Flow::Abandon => {
                    self.release(id);
                    return;
                }
            }
            if !grace_armed && !self.boot_is(id, |b| b.is_live()) {
                grace_armed = self.arm_end_grace(id);
            }
        }
        self.reap(id, &mut child);
    }

    /// After [`END_GRACE`], tell VM `id`'s supervisor to check that its VMM is gone;
    /// false if it has no supervisor to tell.
    fn arm_end_grace(&self, id: &str) -> bool {
        let events = lock(&self.registry)
            .vms
            .get(id)
            .and_then(|vm| vm.run.vmm.as_ref())
            .map(|v| v.events.clone());
        let Some(events) = events else {
            return false;
        };
        std::thread::spawn(move || {
            std::thread::sleep(END_GRACE);
            let _ = events.send(Event::EndGrace);
        });
        true
    }

    /// The grace after the VM's end has passed: reap a VMM that exited (its channel
    /// may be held open by someone else), kill one that still runs.
    fn end_grace(&self, id: &str, child: &mut VmmProcess) -> Flow {
        if child.try_wait().is_some() {
            return Flow::Reap;
        }
        warn!(vm = id, pid = child.id(), grace_secs = END_GRACE.as_secs(); "the VMM still runs after its VM ended: killing it");
        self.kill_vmm(id, child)
    }

    /// SIGKILL VM `id`'s VMM now (it is hostile or overstayed): reap it, or abandon it
    /// to the unmanaged-VM scan if it does not go.
    pub(super) fn kill_vmm(&self, id: &str, child: &mut VmmProcess) -> Flow {
        if crate::vm::process::kill_child(child, KILL_WAIT) {
            info!(vm = id, pid = child.id(); "VMM killed");
            return Flow::Reap;
        }
        log::error!(vm = id, pid = child.id(), wait_secs = KILL_WAIT.as_secs(); "the VMM survived SIGKILL: no longer counted as tvpd's, the unmanaged-VM scan reports it while it holds a KVM VM");
        Flow::Abandon
    }

    /// The VMM is gone (or about to be): delete the TAP device, clear the pid, and
    /// wake whoever waits for the reap.
    fn reap(&self, id: &str, child: &mut VmmProcess) {
        stop_child(child);
        self.release(id);
    }

    /// Delete VM `id`'s TAP device, clear its VMM's pid, write its record and wake
    /// whoever waits for the reap.
    fn release(&self, id: &str) {
        let tap = lock(&self.registry)
            .vms
            .get_mut(id)
            .and_then(|vm| vm.tap.take());
        if let Some(t) = tap {
            if let Err(e) = tap::delete(&t) {
                warn!(vm = id, tap = t.as_str(), error = e.to_string(); "cannot delete the VM's TAP device");
            }
        }
        let mut reg = lock(&self.registry);
        if let Some(vm) = reg.vms.get_mut(id) {
            vm.run.vmm = None;
        }
        self.persist(&reg, id);
        drop(reg);
        self.reaped.notify_all();
    }

    fn handle(
        self: &Arc<Self>,
        id: &str,
        ev: Event,
        w: &mut UnixStream,
        child: &mut VmmProcess,
        said: &mut Conversation,
    ) -> Flow {
        match ev {
            Event::Vmm(msg) => {
                let vetted = {
                    let reg = lock(&self.registry);
                    reg.vms
                        .get(id)
                        .map_or(Ok(()), |vm| said.vet(&msg, &vm.boot))
                };
                match vetted {
                    Ok(()) => self.on_message(id, msg, w),
                    Err(v) => return self.refuse_message(id, &msg, &v, w, child),
                }
            }
            Event::EndGrace => return self.end_grace(id, child),
            Event::Leave => {
                info!(vm = id, pid = child.id(); "left running to the next tvpd");
                return Flow::HandedOff;
            }
            Event::Deadline => {
                if self.boot_is(id, |b| b.is_attesting()) {
                    warn!(vm = id; "attestation deadline passed: destroying the VM");
                    self.stop_boot(id, w, child, Ending::Failed, "attestation-deadline".into());
                }
            }
            Event::PhaseDeadline(generation) => {
                if let Some(reason) = self.overrun(id, generation) {
                    warn!(vm = id, reason = reason.as_str(); "boot phase deadline passed: destroying the VM");
                    self.stop_boot(id, w, child, Ending::Failed, reason);
                }
            }
            Event::Destroy(reason) => {
                self.stop_boot(id, w, child, Ending::Destroyed, reason);
            }
            Event::Reboot(reply) => {
                if !self.boot_is(id, |b| b.is_live()) {
                    let ended =
                        VmError::State(format!("VM '{id}' has ended; create it again instead"));
                    let _ = reply.send(Err(ended));
                    return Flow::Continue;
                }
                if lock(&self.registry)
                    .vms
                    .get(id)
                    .is_some_and(|vm| vm.spec.is_none())
                {
                    // An adopted VM: its spec is not in its record. It runs on.
                    let refused = VmError::State(format!(
                        "VM '{id}' was re-adopted after a tvpd restart and its spec is not kept: it cannot be rebooted; create it again instead"
                    ));
                    let _ = reply.send(Err(refused));
                    return Flow::Continue;
                }
                // This boot ends here; a new supervisor takes over the new one.
                self.send(id, w, &HostMessage::Stop);
                self.leave_lease(id);
                stop_child(child);
                let rebooted = self.relaunch(id);
                let flow = match &rebooted {
                    Ok(_) => Flow::HandedOff,
                    Err(e) => {
                        self.end(id, Ending::Failed, format!("reboot failed: {e}"));
                        Flow::Reap
                    }
                };
                let _ = reply.send(rebooted);
                return flow;
            }
            Event::ChannelClosed(why) => {
                stop_child(child);
                let status = child.try_wait().flatten();
                let how = status
                    .map(describe_exit)
                    .unwrap_or_else(|| "not reaped".into());
                if status.and_then(|s| s.signal()) == Some(SIGSYS) {
                    log::error!(vm = id, pid = child.id(); "tvp-vmm was killed by its seccomp filter (SIGSYS): it made a syscall outside its allowlist; the kernel log (audit type=1326) names the syscall");
                    self.end(id, Ending::Failed, SECCOMP_KILLED.into());
                } else if self.boot_is(id, |b| b.state() == VmState::Running) {
                    self.end(id, Ending::Destroyed, "vm-exited".into());
                } else if self.boot_is(id, |b| b.is_live()) {
                    let reason = format!("VMM ended before handover ({why}, {how})");
                    self.end(id, Ending::Failed, reason);
                }
                self.leave_lease(id);
                return Flow::Reap;
            }
        }
        Flow::Continue
    }

    /// Stop this boot: the VMM is told to stop, it leaves the lease queue,
    /// the VM ends (if it had not), and the VMM is stopped (killed after 3 s).
    fn stop_boot(
        &self,
        id: &str,
        w: &mut UnixStream,
        child: &mut VmmProcess,
        how: Ending,
        reason: String,
    ) {
        self.send(id, w, &HostMessage::Stop);
        self.end(id, how, reason);
        stop_child(child);
    }

    /// End VM `id` (a VM that has ended already stays as it is). It leaves the lease
    /// queue first; it never holds the lease outside its own quote's TPM steps, which
    /// reset PCRs 16 and 23 before the lease passes on.
    pub(super) fn end(&self, id: &str, how: Ending, reason: String) {
        self.leave_lease(id);
        let _ = self.advance(id, Step::End { how, reason });
    }

    /// Whether VM `id`'s boot satisfies `f` (false if it is gone).
    pub(super) fn boot_is(&self, id: &str, f: impl FnOnce(&crate::vm::boot::Boot) -> bool) -> bool {
        lock(&self.registry)
            .vms
            .get(id)
            .is_some_and(|vm| f(&vm.boot))
    }

    /// The reason to stop, if the phase entered as the `generation`-th is still the
    /// open one and has overrun.
    fn overrun(&self, id: &str, generation: u64) -> Option<String> {
        let reg = lock(&self.registry);
        let vm = reg.vms.get(id)?;
        let phase = vm.boot.phase()?;
        let open = vm.phases.last()?;
        if vm.phases.len() as u64 != generation || open.phase != phase || phase == Phase::Running {
            return None;
        }
        let (_, limit, _) = vm.phase_deadline()?;
        Some(format!(
            "phase-deadline: {} exceeded {} s",
            phase.name(),
            limit.as_secs()
        ))
    }

    pub(super) fn send(&self, id: &str, w: &mut UnixStream, msg: &HostMessage) {
        if let Err(e) = write_frame(w, msg) {
            warn!(vm = id, error = e.to_string(); "cannot write to the VMM channel");
        }
    }
}

fn read_loop(mut r: UnixStream, tx: Sender<Event>) {
    loop {
        match read_frame::<_, VmmMessage>(&mut r) {
            Ok(m) => {
                if tx.send(Event::Vmm(m)).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(Event::ChannelClosed(e.to_string()));
                return;
            }
        }
    }
}
