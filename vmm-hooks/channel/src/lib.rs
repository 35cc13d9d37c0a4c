//! The private channel between `tvpd` and one `tvp-vmm` process.
//!
//! A Unix stream socket (normally one end of a socketpair that `tvpd` passes to the
//! child as `--channel-fd N`). Each message is one frame:
//!
//! ```text
//! u32 big-endian length N (1..=MAX_FRAME_LEN) | N bytes of UTF-8 JSON
//! ```
//!
//! The JSON is one [`VmmMessage`] (tvp-vmm → tvpd) or one [`HostMessage`]
//! (tvpd → tvp-vmm), externally tagged by `"type"`. Binary fields are lowercase hex,
//! evidence is base64. The first message on the channel is [`VmmMessage::Hello`]
//! carrying [`PROTOCOL_VERSION`]; a peer that does not speak that version closes the
//! channel. See `docs/vmm-channel.md` for the sequence.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::io::{Read, Write};

/// Version of this protocol, sent in [`VmmMessage::Hello`].
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest frame body either side sends or accepts (1 MiB).
pub const MAX_FRAME_LEN: usize = 1 << 20;

/// Errors reading or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The socket failed.
    #[error("channel I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the channel (EOF at a frame boundary).
    #[error("the peer closed the channel")]
    Closed,
    /// A frame length of 0 or above the limit was announced; the channel is unusable.
    #[error("frame of {0} bytes announced; allowed 1..={MAX_FRAME_LEN}: peer is broken or hostile, close the channel")]
    FrameTooLarge(usize),
    /// A frame body is not a valid message.
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// Messages from `tvp-vmm` to `tvpd`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum VmmMessage {
    /// First message: protocol version and who is speaking.
    Hello {
        /// [`PROTOCOL_VERSION`].
        protocol_version: u32,
        /// The VM id given on the command line.
        vm_id: String,
        /// The VMM's process id.
        pid: u32,
    },
    /// One PCR 23 measurement event, in order; `tvpd` extends `digest` into PCR 23.
    Measurement {
        /// 0-based position in the sequence.
        index: u32,
        /// Stable name of the event type (`tvp_abi::measure::EventType::name`).
        event_type: String,
        /// SHA-256 digest.
        #[serde(with = "hex32")]
        digest: [u8; 32],
        /// Human-readable description.
        description: String,
    },
    /// All events sent; `pcr23` is their replay from zeros, for cross-checking. The VMM
    /// now waits for [`HostMessage::Start`] before running any vCPU.
    MeasurementsDone {
        /// Number of events sent.
        count: u32,
        /// Replay of the events from a reset PCR.
        #[serde(with = "hex32")]
        pcr23: [u8; 32],
    },
    /// A boot-timer milestone written by the guest.
    Milestone {
        /// The byte the guest wrote.
        code: u8,
        /// Microseconds since the VMM process started.
        micros_since_start: u64,
        /// Wall-clock time, microseconds since the Unix epoch.
        unix_micros: u64,
    },
    /// virtio-blk: chunk `chunk` of the VM's encrypted disk failed authentication; the
    /// guest got an I/O error and no plaintext. Sent once per chunk, for at most 64
    /// chunks per VM.
    DiskTamper {
        /// Index of the chunk in the tvp-image.
        chunk: u64,
    },
    /// Mailbox: the tunnel is up; extend `measurement` into PCR 16. Answer with
    /// [`HostMessage::Ack`] or [`HostMessage::Refused`].
    TunnelEstablished {
        /// Correlates the answer.
        request_id: u64,
        /// The 32-byte tunnel measurement.
        #[serde(with = "hex32")]
        measurement: [u8; 32],
    },
    /// Mailbox: quote request. Answer with [`HostMessage::Evidence`] or `Refused`.
    QuoteRequest {
        /// Correlates the answer.
        request_id: u64,
        /// The nonce (8..=64 bytes), qualifying data of the quote.
        #[serde(with = "hexvec")]
        nonce: Vec<u8>,
    },
    /// Mailbox: the firmware hands over. Answer with `Ack` or `Refused`.
    Handover {
        /// Correlates the answer.
        request_id: u64,
        /// Digest of what the firmware is about to run.
        #[serde(with = "hex32")]
        digest: [u8; 32],
    },
    /// Mailbox: the firmware reports a failed boot. Answer with `Ack` or `Refused`.
    BootFailed {
        /// Correlates the answer.
        request_id: u64,
        /// The firmware's reason code.
        reason: u32,
    },
    /// Last message: the VM ended.
    Exited {
        /// Why (the same text as the VMM's exit status table in `docs/vmm-channel.md`).
        reason: ExitReason,
        /// The process exit code that follows.
        exit_code: i32,
        /// Details (e.g. suberror and RIP of a KVM internal error).
        detail: String,
    },
    /// Answer on the adoption socket to a correct [`HostMessage::Adopt`]: this VMM
    /// (still running its VM) takes the new tvpd's connection as its channel.
    Adopted {
        /// [`PROTOCOL_VERSION`].
        protocol_version: u32,
        /// The VM id given on the command line.
        vm_id: String,
        /// The VMM's process id.
        pid: u32,
    },
}

/// Why a VM ended.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ExitReason {
    /// The guest powered off.
    PoweredOff,
    /// The guest asked for a reboot (i8042 reset or the ACPI reset register); a measured
    /// VM is not restarted: a new boot is a new VM with a new attestation. Named
    /// `reboot-requested` on the wire (`reset` is still accepted from an older VMM).
    #[serde(rename = "reboot-requested", alias = "reset")]
    Reset,
    /// The guest halted with no interrupt source left to wake it.
    Halted,
    /// Triple fault (KVM_EXIT_SHUTDOWN).
    TripleFault,
    /// KVM_EXIT_INTERNAL_ERROR.
    KvmInternalError,
    /// Any other KVM failure (failed entry, unexpected exit, ioctl error).
    KvmError,
    /// SIGTERM/SIGINT/SIGHUP.
    KilledBySignal,
    /// `tvpd` sent [`HostMessage::Stop`].
    StoppedByHost,
    /// The channel to `tvpd` closed or broke.
    ChannelClosed,
    /// The VM could not be set up (e.g. its image was refused); `detail` says why.
    SetupFailed,
}

/// Messages from `tvpd` to `tvp-vmm`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum HostMessage {
    /// PCR 23 holds the measurements; run the vCPUs.
    Start,
    /// Do not run the VM (e.g. the measurement did not match); the VMM exits.
    Abort {
        /// Why, for the log.
        reason: String,
    },
    /// Success answer to a mailbox request without payload.
    Ack {
        /// The request answered.
        request_id: u64,
    },
    /// Answer to [`VmmMessage::QuoteRequest`]: evidence bytes for the guest.
    Evidence {
        /// The request answered.
        request_id: u64,
        /// Opaque evidence, written to the mailbox response payload.
        #[serde(with = "b64")]
        evidence: Vec<u8>,
    },
    /// Refusal of a mailbox request; `code` reaches the guest as the response detail.
    Refused {
        /// The request answered.
        request_id: u64,
        /// tvpd's reason code.
        code: u32,
        /// Human-readable reason (not shown to the guest).
        message: String,
    },
    /// Stop the VM now.
    Stop,
    /// Sent once, right after the spawn: the per-VM adoption secret. Only a tvpd that
    /// presents it on the adoption socket ([`HostMessage::Adopt`]) becomes this VMM's
    /// channel after the original one closed. Never on a command line or in the
    /// environment.
    AdoptionSecret {
        /// 32 random bytes.
        #[serde(with = "hex32")]
        secret: [u8; 32],
    },
    /// The VM runs (its boot was handed over and tvpd holds no PCR lease for it): from
    /// now on a closed channel makes the VMM wait for adoption instead of stopping.
    Running,
    /// First (and only accepted) message of a new tvpd on the adoption socket;
    /// answered with [`VmmMessage::Adopted`] if `secret` is right, else the connection
    /// is closed unanswered.
    Adopt {
        /// The secret of [`HostMessage::AdoptionSecret`].
        #[serde(with = "hex32")]
        secret: [u8; 32],
    },
}

/// Compares two secrets in time independent of where they differ.
pub fn secrets_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b.iter()) {
        diff |= x ^ y;
    }
    // Keeps the comparison from being short-circuited into an early exit.
    std::hint::black_box(diff) == 0
}

/// Writes one frame.
pub fn write_frame<W: Write, M: Serialize>(w: &mut W, msg: &M) -> Result<(), ChannelError> {
    let body = serde_json::to_vec(msg)?;
    if body.is_empty() || body.len() > MAX_FRAME_LEN {
        return Err(ChannelError::FrameTooLarge(body.len()));
    }
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&body);
    w.write_all(&buf)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame. Returns [`ChannelError::Closed`] on EOF before a frame starts.
pub fn read_frame<R: Read, M: for<'de> Deserialize<'de>>(r: &mut R) -> Result<M, ChannelError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Err(ChannelError::Closed),
            Ok(0) => return Err(ChannelError::Io(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let n = u32::from_be_bytes(len) as usize;
    if n == 0 || n > MAX_FRAME_LEN {
        return Err(ChannelError::FrameTooLarge(n));
    }
    let mut body = vec![0u8; n];
    r.read_exact(&mut body)?;
    Ok(serde_json::from_slice(&body)?)
}

mod hex32 {
    use super::*;
    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let v = hex::decode(s).map_err(serde::de::Error::custom)?;
        <[u8; 32]>::try_from(v.as_slice())
            .map_err(|_| serde::de::Error::custom("expected 32 bytes"))
    }
}

mod hexvec {
    use super::*;
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        hex::decode(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

mod b64 {
    use super::*;
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        base64::engine::general_purpose::STANDARD
            .decode(String::deserialize(d)?)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_roundtrip() {
        let mut buf = Vec::new();
        let m = VmmMessage::QuoteRequest {
            request_id: 7,
            nonce: vec![1, 2, 3],
        };
        write_frame(&mut buf, &m).unwrap();
        let h = HostMessage::Evidence {
            request_id: 7,
            evidence: vec![0; 10],
        };
        write_frame(&mut buf, &h).unwrap();
        let mut r = buf.as_slice();
        assert_eq!(read_frame::<_, VmmMessage>(&mut r).unwrap(), m);
        assert_eq!(read_frame::<_, HostMessage>(&mut r).unwrap(), h);
        assert!(matches!(
            read_frame::<_, HostMessage>(&mut r),
            Err(ChannelError::Closed)
        ));
    }

    #[test]
    fn adoption_messages_roundtrip_and_secrets_compare() {
        let mut buf = Vec::new();
        let h = HostMessage::Adopt { secret: [7; 32] };
        write_frame(&mut buf, &h).unwrap();
        let a = VmmMessage::Adopted {
            protocol_version: PROTOCOL_VERSION,
            vm_id: "vm-1".into(),
            pid: 9,
        };
        write_frame(&mut buf, &a).unwrap();
        write_frame(&mut buf, &HostMessage::Running).unwrap();
        let mut r = buf.as_slice();
        assert_eq!(read_frame::<_, HostMessage>(&mut r).unwrap(), h);
        assert_eq!(read_frame::<_, VmmMessage>(&mut r).unwrap(), a);
        assert_eq!(
            read_frame::<_, HostMessage>(&mut r).unwrap(),
            HostMessage::Running
        );
        assert!(secrets_equal(&[1; 32], &[1; 32]));
        let mut b = [1; 32];
        b[31] = 0;
        assert!(!secrets_equal(&[1; 32], &b));
    }

    #[test]
    fn fuzz_seeds_are_whole_sessions_of_every_message() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/channel_frames");
        let host = std::fs::read(format!("{dir}/host-session")).unwrap();
        let mut r = &host[1..];
        let mut kinds = Vec::new();
        while !r.is_empty() {
            let m: HostMessage = read_frame(&mut r).unwrap();
            kinds.push(serde_json::to_value(&m).unwrap()["type"].clone());
        }
        for k in ["adoption-secret", "running", "adopt", "stop", "start"] {
            assert!(kinds.iter().any(|v| v == k), "{k} missing in {kinds:?}");
        }
        let vmm = std::fs::read(format!("{dir}/vmm-session")).unwrap();
        let mut r = &vmm[1..];
        let mut last = None;
        while !r.is_empty() {
            last = Some(read_frame::<_, VmmMessage>(&mut r).unwrap());
        }
        assert!(matches!(last, Some(VmmMessage::Adopted { .. })), "{last:?}");
    }

    #[test]
    fn rejects_oversized_and_unknown() {
        let mut b = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(b"{}");
        assert!(matches!(
            read_frame::<_, HostMessage>(&mut b.as_slice()),
            Err(ChannelError::FrameTooLarge(_))
        ));
        let body = br#"{"type":"ack","request_id":1,"extra":1}"#;
        let mut b = (body.len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(body);
        assert!(matches!(
            read_frame::<_, HostMessage>(&mut b.as_slice()),
            Err(ChannelError::Malformed(_))
        ));
    }
}
