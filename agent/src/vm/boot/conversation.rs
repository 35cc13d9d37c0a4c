//! What a VMM may say next. After a guest escape the VMM is hostile, so tvpd checks
//! every message of a VMM's channel against what that VMM said before (one
//! [`Conversation`] per channel: a reboot starts a new one) and against its VM's boot
//! and lease, before anything acts on it. The honest `tvp-vmm` says, in this order: one
//! `hello`; its measurements and one `measurements-done`; milestones; once tvpd
//! started the firmware, the firmware's mailbox requests (one `tunnel-established`
//! before any `quote-request`); at most one `boot-failed`; at most one `exited`. Anything else is a [`Violation`]: the supervisor refuses it and
//! destroys the VM (its VMM killed).

use tvp_vmm_channel::VmmMessage;

use super::Boot;

/// The end a VMM reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reported {
    /// `boot-failed`: only its `exited` (and milestones) may follow.
    BootFailed,
    /// `exited`: nothing may follow.
    Exited,
}

impl Reported {
    /// The message that reported it.
    pub fn name(self) -> &'static str {
        match self {
            Reported::BootFailed => "boot-failed",
            Reported::Exited => "exited",
        }
    }
}

/// A VMM message that does not fit the conversation: refused, and the VM destroyed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// Anything before the `hello`.
    #[error("'{kind}' before the VMM's hello")]
    BeforeHello {
        /// The message kind.
        kind: &'static str,
    },
    /// A `hello` after the first.
    #[error("a second hello")]
    SecondHello,
    /// `adopted` outside the adoption handshake (which tvpd reads itself).
    #[error("'adopted' outside the adoption handshake")]
    AdoptedOutsideHandshake,
    /// A measurement after `measurements-done`.
    #[error("a measurement after measurements-done")]
    MeasurementAfterDone,
    /// A second `measurements-done`: it would start the measuring again.
    #[error("a second measurements-done (measuring runs once per boot)")]
    SecondMeasurementsDone,
    /// A second `tunnel-established`: the tunnel is measured once per boot, so a
    /// quote's PCR 16 can only show the tunnel the boot server talks to.
    #[error("a second tunnel-established (the tunnel is measured once per boot)")]
    SecondTunnel,
    /// A `quote-request` before the tunnel measurement: the PCR lease is taken only
    /// with a tunnel to extend into PCR 16.
    #[error("'quote-request' before the tunnel measurement")]
    QuoteBeforeTunnel,
    /// A mailbox request after the handover: the workload attests nothing through
    /// tvpd.
    #[error("'{kind}' after the handover")]
    AfterHandover {
        /// The message kind.
        kind: &'static str,
    },
    /// A mailbox request before tvpd started the firmware (the guest cannot run yet).
    #[error("'{kind}' before tvpd started the firmware")]
    BeforeStart {
        /// The message kind.
        kind: &'static str,
    },
    /// Anything after the VMM reported its end (but `exited` after `boot-failed`).
    #[error("'{kind}' after the VMM reported '{end}'")]
    AfterEnd {
        /// The message kind.
        kind: &'static str,
        /// `boot-failed` or `exited`.
        end: &'static str,
    },
}

impl Violation {
    /// Whether the VMM had reported its end: the message is ignored (not answered).
    pub fn after_end(&self) -> bool {
        matches!(self, Violation::AfterEnd { .. })
    }
}

/// What one VMM has said on its channel so far.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Conversation {
    hello: bool,
    measured: bool,
    ended: Option<Reported>,
}

/// The channel name of a VMM message (`quote-request`, ...), for logs and refusals.
pub fn kind(msg: &VmmMessage) -> &'static str {
    match msg {
        VmmMessage::Hello { .. } => "hello",
        VmmMessage::Measurement { .. } => "measurement",
        VmmMessage::MeasurementsDone { .. } => "measurements-done",
        VmmMessage::Milestone { .. } => "milestone",
        VmmMessage::DiskTamper { .. } => "disk-tamper",
        VmmMessage::TunnelEstablished { .. } => "tunnel-established",
        VmmMessage::QuoteRequest { .. } => "quote-request",
        VmmMessage::Handover { .. } => "handover",
        VmmMessage::BootFailed { .. } => "boot-failed",
        VmmMessage::Exited { .. } => "exited",
        VmmMessage::Adopted { .. } => "adopted",
    }
}

impl Conversation {
    /// The conversation of a VMM adopted after a tvpd restart: its hello and its
    /// measurements were said to the earlier tvpd (the VM runs, handed over).
    pub fn adopted() -> Conversation {
        Conversation {
            hello: true,
            measured: true,
            ended: None,
        }
    }

    /// The end this VMM reported, if it did.
    pub fn reported_end(&self) -> Option<Reported> {
        self.ended
    }

    /// Check `msg` given the VM's `boot`; an accepted message moves the conversation
    /// on, a refused one changes nothing.
    ///
    /// Mailbox requests of a VM that tvpd has ended already are accepted here: they
    /// may have crossed tvpd's `stop` and are refused by their handlers (the firmware
    /// no longer runs), while the VMM is being stopped.
    pub fn vet(&mut self, msg: &VmmMessage, boot: &Boot) -> Result<(), Violation> {
        let kind = kind(msg);
        if let Some(end) = self.ended {
            return match (end, msg) {
                (Reported::BootFailed, VmmMessage::Exited { .. }) => {
                    self.ended = Some(Reported::Exited);
                    Ok(())
                }
                (Reported::BootFailed, VmmMessage::Milestone { .. }) => Ok(()),
                _ => Err(Violation::AfterEnd {
                    kind,
                    end: end.name(),
                }),
            };
        }
        if !self.hello {
            return match msg {
                VmmMessage::Hello { .. } => {
                    self.hello = true;
                    Ok(())
                }
                _ => Err(Violation::BeforeHello { kind }),
            };
        }
        match msg {
            VmmMessage::Hello { .. } => Err(Violation::SecondHello),
            VmmMessage::Adopted { .. } => Err(Violation::AdoptedOutsideHandshake),
            VmmMessage::Measurement { .. } if self.measured => Err(Violation::MeasurementAfterDone),
            VmmMessage::MeasurementsDone { .. } if self.measured => {
                Err(Violation::SecondMeasurementsDone)
            }
            VmmMessage::MeasurementsDone { .. } => {
                self.measured = true;
                Ok(())
            }
            VmmMessage::TunnelEstablished { .. }
            | VmmMessage::QuoteRequest { .. }
            | VmmMessage::Handover { .. }
                if boot.is_live() =>
            {
                if boot.state() == crate::vm::state::VmState::Running {
                    Err(Violation::AfterHandover { kind })
                } else if !boot.firmware_started() {
                    Err(Violation::BeforeStart { kind })
                } else if matches!(msg, VmmMessage::TunnelEstablished { .. })
                    && !boot.awaits_tunnel()
                {
                    Err(Violation::SecondTunnel)
                } else if matches!(msg, VmmMessage::QuoteRequest { .. }) && boot.awaits_tunnel() {
                    Err(Violation::QuoteBeforeTunnel)
                } else {
                    Ok(())
                }
            }
            VmmMessage::BootFailed { .. } => {
                self.ended = Some(Reported::BootFailed);
                Ok(())
            }
            VmmMessage::Exited { .. } => {
                self.ended = Some(Reported::Exited);
                Ok(())
            }
            _ => Ok(()),
        }
    }
}
