//! The TPM service thread: owns the [`Tpm`] (whose ESAPI context is not `Send`) and
//! runs jobs for every other thread, one at a time, in arrival order.

use std::sync::mpsc;
use std::thread;

use super::error::TpmError;
use super::provision::{HostIdentity, ProvisionConfig};
use super::Tpm;

type Job = Box<dyn FnOnce(&mut Tpm) + Send>;

/// A cloneable handle to the TPM thread.
#[derive(Clone)]
pub struct TpmClient {
    tx: mpsc::Sender<Job>,
    identity: HostIdentity,
}

/// The running TPM thread. Dropping every [`TpmClient`] and calling
/// [`TpmService::shutdown`] closes the TPM context cleanly.
pub struct TpmService {
    client: TpmClient,
    thread: thread::JoinHandle<()>,
}

impl TpmService {
    /// Open the TPM on a new thread and provision the host keys; returns once the TPM
    /// is ready or has failed.
    pub fn start(tcti: String, cfg: ProvisionConfig) -> Result<Self, TpmError> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("tpm".into())
            .spawn(move || {
                let mut tpm = match Tpm::open(&tcti, &cfg) {
                    Ok(t) => {
                        let _ = ready_tx.send(Ok(t.identity().clone()));
                        t
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                while let Ok(job) = rx.recv() {
                    job(&mut tpm);
                }
            })
            .map_err(|e| TpmError::Refused(format!("cannot start the TPM thread: {e}")))?;
        let identity = ready_rx.recv().map_err(|_| TpmError::ServiceStopped)??;
        Ok(TpmService {
            client: TpmClient { tx, identity },
            thread,
        })
    }

    /// A handle for callers.
    pub fn client(&self) -> TpmClient {
        self.client.clone()
    }

    /// Stop the thread once every client is gone and the queued jobs have run.
    pub fn shutdown(self) {
        drop(self.client);
        let _ = self.thread.join();
    }
}

impl TpmClient {
    /// The host identity established at start.
    pub fn identity(&self) -> &HostIdentity {
        &self.identity
    }

    /// Run `f` on the TPM thread and wait for its result (blocking).
    pub fn call<T, F>(&self, f: F) -> Result<T, TpmError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tpm) -> Result<T, TpmError> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        self.tx
            .send(Box::new(move |tpm| {
                let _ = tx.send(f(tpm));
            }))
            .map_err(|_| TpmError::ServiceStopped)?;
        rx.recv().map_err(|_| TpmError::ServiceStopped)?
    }

    /// Run `f` on the TPM thread without blocking the async runtime.
    pub async fn call_async<T, F>(&self, f: F) -> Result<T, TpmError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tpm) -> Result<T, TpmError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Box::new(move |tpm| {
                let _ = tx.send(f(tpm));
            }))
            .map_err(|_| TpmError::ServiceStopped)?;
        rx.await.map_err(|_| TpmError::ServiceStopped)?
    }
}
