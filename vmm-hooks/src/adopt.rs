//! Surviving a tvpd restart: once tvpd says the VM runs (handed over, no PCR lease),
//! a closed channel does not stop the VM. The VMM waits up to a grace period on its
//! adoption socket (bound at start, before privileges are dropped and the syscall
//! filter installed, in tvpd's private directory, mode 0600) for a new tvpd that
//! presents the VM's adoption secret (given by the first tvpd over the channel, never
//! on the command line). A connection without the right secret is closed and logged,
//! and the wait goes on; past the grace the VM stops as before.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tvp_vmm_channel::{
    read_frame, secrets_equal, write_frame, HostMessage, VmmMessage, PROTOCOL_VERSION,
};

use crate::error::VmmError;
use crate::shutdown::Shutdown;

/// How long a connecting tvpd has to present the secret.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the listener is polled while waiting.
const POLL: Duration = Duration::from_millis(50);

/// The adoption socket and how long to wait on it.
#[derive(Debug)]
pub struct AdoptionPort {
    listener: UnixListener,
    path: PathBuf,
    grace: Duration,
    vm_id: String,
}

impl AdoptionPort {
    /// Bind the adoption socket at `path` (a stale file there is replaced), mode 0600,
    /// non-blocking.
    pub fn bind(path: &Path, grace: Duration, vm_id: &str) -> Result<Self, VmmError> {
        let err = |what: &str, e: std::io::Error| {
            VmmError::ChannelSetup(format!("adoption socket {}: {what}: {e}", path.display()))
        };
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(err("cannot remove the stale file", e))
            }
            _ => {}
        }
        let listener = UnixListener::bind(path).map_err(|e| err("bind", e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| err("chmod 0600", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| err("non-blocking", e))?;
        Ok(AdoptionPort {
            listener,
            path: path.to_path_buf(),
            grace,
            vm_id: vm_id.to_string(),
        })
    }

    /// Wait up to the grace for a tvpd with `secret`; its connection, answered with
    /// `adopted`, or `None` (grace over, or the VM is stopping).
    pub fn wait(&self, secret: &[u8; 32], shutdown: &Shutdown) -> Option<UnixStream> {
        let deadline = Instant::now() + self.grace;
        log::warn!(vm = self.vm_id.as_str(), socket = self.path.display().to_string(), grace_secs = self.grace.as_secs(); "channel to tvpd lost while the VM runs: waiting for a restarted tvpd to adopt it");
        while Instant::now() < deadline {
            crate::shutdown::poll_signal(shutdown);
            if shutdown.requested().is_some() {
                return None;
            }
            match self.listener.accept() {
                Ok((s, _)) => match self.handshake(s, secret) {
                    Ok(s) => {
                        log::info!(vm = self.vm_id.as_str(); "adopted by a restarted tvpd");
                        return Some(s);
                    }
                    Err(why) => {
                        log::warn!(vm = self.vm_id.as_str(), reason = why.as_str(); "adoption refused; still waiting")
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(POLL),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::error!(vm = self.vm_id.as_str(), error = e.to_string(); "adoption socket failed");
                    return None;
                }
            }
        }
        log::warn!(vm = self.vm_id.as_str(), grace_secs = self.grace.as_secs(); "no tvpd adopted the VM within the grace: stopping it");
        None
    }

    /// The first frame must be `adopt` with the right secret; then `adopted` is sent.
    fn handshake(&self, mut s: UnixStream, secret: &[u8; 32]) -> Result<UnixStream, String> {
        s.set_read_timeout(Some(HELLO_TIMEOUT))
            .map_err(|e| e.to_string())?;
        match read_frame::<_, HostMessage>(&mut s) {
            Ok(HostMessage::Adopt { secret: given }) if secrets_equal(&given, secret) => {}
            Ok(HostMessage::Adopt { .. }) => return Err("wrong adoption secret".into()),
            Ok(other) => return Err(format!("expected 'adopt', got {}", kind(&other))),
            Err(e) => return Err(format!("no adoption request: {e}")),
        }
        s.set_read_timeout(None).map_err(|e| e.to_string())?;
        let adopted = VmmMessage::Adopted {
            protocol_version: PROTOCOL_VERSION,
            vm_id: self.vm_id.clone(),
            pid: std::process::id(),
        };
        write_frame(&mut s, &adopted).map_err(|e| e.to_string())?;
        Ok(s)
    }
}

/// A host message's kind, for the log (never its contents: a secret may be in it).
fn kind(m: &HostMessage) -> &'static str {
    match m {
        HostMessage::Start => "start",
        HostMessage::Abort { .. } => "abort",
        HostMessage::Ack { .. } => "ack",
        HostMessage::Evidence { .. } => "evidence",
        HostMessage::Refused { .. } => "refused",
        HostMessage::Stop => "stop",
        HostMessage::AdoptionSecret { .. } => "adoption-secret",
        HostMessage::Running => "running",
        HostMessage::Adopt { .. } => "adopt",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_secret_adopts_and_the_grace_ends_the_wait() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("adopt.sock");
        std::fs::write(&path, b"stale").unwrap();
        let port = AdoptionPort::bind(&path, Duration::from_secs(10), "vm-1").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let p = path.clone();
        let client = std::thread::spawn(move || {
            // An impostor first: wrong secret, answered with nothing.
            let mut bad = UnixStream::connect(&p).unwrap();
            write_frame(&mut bad, &HostMessage::Adopt { secret: [9; 32] }).unwrap();
            assert!(read_frame::<_, VmmMessage>(&mut bad).is_err());
            let mut good = UnixStream::connect(&p).unwrap();
            write_frame(&mut good, &HostMessage::Adopt { secret: [1; 32] }).unwrap();
            read_frame::<_, VmmMessage>(&mut good).unwrap()
        });
        let s = port.wait(&[1; 32], &Shutdown::default());
        assert!(s.is_some());
        match client.join().unwrap() {
            VmmMessage::Adopted { vm_id, pid, .. } => {
                assert_eq!(vm_id, "vm-1");
                assert_eq!(pid, std::process::id());
            }
            other => panic!("{other:?}"),
        }
        let short = AdoptionPort::bind(&path, Duration::from_millis(200), "vm-1").unwrap();
        let t = Instant::now();
        assert!(short.wait(&[1; 32], &Shutdown::default()).is_none());
        assert!(t.elapsed() >= Duration::from_millis(200));
    }
}
