//! The VMM's end of the private channel to tvpd: connecting (inherited socketpair fd or
//! a socket path), a locked writer shared by the threads, and a reader thread that
//! routes tvpd's messages (start decision, mailbox answers, stop). Once tvpd said the
//! VM runs, a closed channel is replaced by a restarted tvpd's connection on the
//! adoption socket ([`crate::adopt`]) if one proves itself within the grace.

use crate::adopt::AdoptionPort;
use crate::mailbox::{HostAnswer, HostPort};
use crate::shutdown::{Shutdown, StopCause};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tvp_vmm_channel::{read_frame, write_frame, ChannelError, HostMessage, VmmMessage};

use crate::error::VmmError;

/// tvpd's decision after the measurements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartDecision {
    /// Run the VM.
    Start,
    /// Do not run it.
    Abort(String),
}

/// The current channel socket: replaced when a restarted tvpd adopts the VMM.
type Current = Arc<Mutex<Arc<UnixStream>>>;

/// The sending side, shared by the main and vCPU threads. `None` in standalone mode.
#[derive(Clone)]
pub struct ChannelTx {
    stream: Option<Current>,
}

impl ChannelTx {
    /// Sends a message (dropped, with a debug log, in standalone mode).
    pub fn send(&self, msg: &VmmMessage) -> Result<(), ChannelError> {
        match &self.stream {
            None => {
                log::debug!(msg = format!("{msg:?}"); "standalone, not sent");
                Ok(())
            }
            Some(s) => {
                let guard = s.lock().map_err(|_| {
                    ChannelError::Io(std::io::Error::other("channel writer lock poisoned"))
                })?;
                write_frame(&mut &**guard, msg)
            }
        }
    }

    /// True when there is no tvpd.
    pub fn is_standalone(&self) -> bool {
        self.stream.is_none()
    }
}

/// The receiving side's outputs.
pub struct ChannelRx {
    /// Start/Abort from tvpd.
    pub start: Receiver<StartDecision>,
    /// Answers to mailbox requests.
    pub replies: Receiver<HostMessage>,
}

/// Takes ownership of an inherited socket descriptor.
pub fn from_fd(fd: RawFd) -> Result<UnixStream, VmmError> {
    if fd < 3 {
        return Err(VmmError::ChannelSetup(format!(
            "refusing fd {fd}: stdio is not a channel"
        )));
    }
    // SAFETY: F_GETFD only inspects the descriptor table entry; no memory is touched.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(VmmError::ChannelSetup(format!("fd {fd} is not open")));
    }
    let mut ty: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `ty` and `len` are valid, writable and sized as getsockopt(SO_TYPE) expects.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut ty as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 || ty != libc::SOCK_STREAM {
        return Err(VmmError::ChannelSetup(format!(
            "fd {fd} is not a stream socket"
        )));
    }
    // SAFETY: the descriptor is open, is a stream socket, and was handed to this process
    // by its parent for exclusive use as the channel; nothing else in the process owns it.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    // SAFETY: plain fcntl on a descriptor we now own; sets close-on-exec.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok(stream)
}

/// Connects to a listening socket at `path`.
pub fn from_path(path: &Path) -> Result<UnixStream, VmmError> {
    UnixStream::connect(path)
        .map_err(|e| VmmError::ChannelSetup(format!("cannot connect to {}: {e}", path.display())))
}

/// Starts the reader thread on `stream` (or nothing, in standalone mode, where Start is
/// immediate and mailbox requests go unanswered). With `adoption`, a running VM
/// outlives its channel for the adoption grace.
pub fn open(
    stream: Option<UnixStream>,
    shutdown: Arc<Shutdown>,
    adoption: Option<AdoptionPort>,
) -> Result<(ChannelTx, ChannelRx), VmmError> {
    let (start_tx, start_rx) = mpsc::channel();
    let (reply_tx, reply_rx) = mpsc::channel();
    let Some(stream) = stream else {
        let _ = start_tx.send(StartDecision::Start);
        return Ok((
            ChannelTx { stream: None },
            ChannelRx {
                start: start_rx,
                replies: reply_rx,
            },
        ));
    };
    let current: Current = Arc::new(Mutex::new(Arc::new(stream)));
    let reader = Reader {
        current: current.clone(),
        start: start_tx,
        replies: reply_tx,
        shutdown,
        adoption,
        secret: None,
        running: false,
    };
    std::thread::Builder::new()
        .name("channel-rx".into())
        .spawn(move || reader.run())
        .map_err(|e| VmmError::Process(format!("cannot spawn channel reader: {e}")))?;
    Ok((
        ChannelTx {
            stream: Some(current),
        },
        ChannelRx {
            start: start_rx,
            replies: reply_rx,
        },
    ))
}

/// The reader thread's state: where tvpd's messages go, and what adoption needs.
struct Reader {
    current: Current,
    start: Sender<StartDecision>,
    replies: Sender<HostMessage>,
    shutdown: Arc<Shutdown>,
    adoption: Option<AdoptionPort>,
    /// The adoption secret tvpd gave (the first one; later ones are ignored).
    secret: Option<[u8; 32]>,
    /// tvpd said the VM runs: a closed channel waits for adoption.
    running: bool,
}

impl Reader {
    fn run(mut self) {
        let mut s = match self.current.lock() {
            Ok(g) => g.clone(),
            Err(_) => {
                self.shutdown.request(StopCause::ChannelClosed);
                return;
            }
        };
        loop {
            match read_frame::<_, HostMessage>(&mut &*s) {
                Ok(m) => self.route(m),
                Err(e) => {
                    match e {
                        ChannelError::Closed => {
                            log::info!("tvpd closed the channel")
                        }
                        e => log::error!(error = e.to_string(); "channel broken"),
                    }
                    match self.adopted() {
                        Some(new) => s = new,
                        None => {
                            self.shutdown.request(StopCause::ChannelClosed);
                            return;
                        }
                    }
                }
            }
        }
    }

    fn route(&mut self, m: HostMessage) {
        match m {
            HostMessage::Start => {
                let _ = self.start.send(StartDecision::Start);
            }
            HostMessage::Abort { reason } => {
                let _ = self.start.send(StartDecision::Abort(reason));
            }
            HostMessage::Stop => {
                log::info!("tvpd asked to stop the VM");
                self.shutdown.request(StopCause::Host);
            }
            HostMessage::AdoptionSecret { secret } => {
                if self.secret.is_none() {
                    self.secret = Some(secret);
                } else {
                    log::warn!("a second adoption secret ignored");
                }
            }
            HostMessage::Running => {
                if !self.running {
                    log::info!(adoptable = self.adoption.is_some() && self.secret.is_some(); "tvpd reports the VM running");
                }
                self.running = true;
            }
            HostMessage::Adopt { .. } => {
                log::warn!("'adopt' on the channel ignored (it belongs on the adoption socket)");
            }
            m => {
                let _ = self.replies.send(m);
            }
        }
    }

    /// The channel closed: if the VM runs and can be adopted, wait for a restarted
    /// tvpd and make its connection the channel.
    fn adopted(&self) -> Option<Arc<UnixStream>> {
        if !self.running {
            return None;
        }
        let (port, secret) = (self.adoption.as_ref()?, self.secret.as_ref()?);
        let new = Arc::new(port.wait(secret, &self.shutdown)?);
        match self.current.lock() {
            Ok(mut g) => *g = new.clone(),
            Err(_) => return None,
        }
        Some(new)
    }
}

/// [`HostPort`] over the channel: sends a request and waits for the answer with the same
/// `request_id`, giving up at the timeout or when the VM is being stopped.
pub struct ChannelHost {
    /// Sender.
    pub tx: ChannelTx,
    /// Answers.
    pub replies: Receiver<HostMessage>,
    /// Stop flag, checked while waiting.
    pub shutdown: Arc<Shutdown>,
}

impl HostPort for ChannelHost {
    fn request(&mut self, request_id: u64, msg: VmmMessage, timeout: Duration) -> HostAnswer {
        if self.tx.is_standalone() {
            return HostAnswer::Unavailable;
        }
        if let Err(e) = self.tx.send(&msg) {
            log::error!(error = e.to_string(); "cannot forward mailbox request");
            return HostAnswer::Unavailable;
        }
        let deadline = Instant::now() + timeout;
        loop {
            let now = Instant::now();
            if now >= deadline || self.shutdown.requested().is_some() {
                log::warn!(request = request_id; "no answer from tvpd");
                return HostAnswer::Unavailable;
            }
            let wait = (deadline - now).min(Duration::from_millis(100));
            match self.replies.recv_timeout(wait) {
                Ok(HostMessage::Ack { request_id: r }) if r == request_id => {
                    return HostAnswer::Ack
                }
                Ok(HostMessage::Evidence {
                    request_id: r,
                    evidence,
                }) if r == request_id => return HostAnswer::Evidence(evidence),
                Ok(HostMessage::Refused {
                    request_id: r,
                    code,
                    message,
                }) if r == request_id => {
                    log::info!(request = r, code = code, message = message.as_str(); "tvpd refused the request");
                    return HostAnswer::Refused(code);
                }
                Ok(other) => {
                    log::warn!(answer = format!("{other:?}"); "ignoring stale or unexpected answer");
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return HostAnswer::Unavailable,
            }
        }
    }
}
