//! The API's Unix socket: created with restrictive permissions from the start, never
//! stolen from another tvpd, a stale one removed.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use super::StartError;
use crate::config::Config;

/// Refuse if another process answers on `socket`.
pub(super) fn refuse_if_served(socket: &Path) -> Result<(), StartError> {
    if UnixStream::connect(socket).is_ok() {
        return Err(StartError::SocketInUse {
            socket: socket.to_path_buf(),
        });
    }
    Ok(())
}

/// Bind the API socket with the configured mode and group; non-blocking, for tokio.
pub(super) fn bind(cfg: &Config) -> Result<UnixListener, StartError> {
    let socket = &cfg.socket;
    let fail = |what: &'static str| {
        move |source: std::io::Error| StartError::Socket {
            what,
            socket: socket.clone(),
            source,
        }
    };
    let mode = cfg.socket_mode_bits()?;
    if let Some(dir) = socket.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::create_dir_all(dir)
                .and_then(|_| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)))
                .map_err(fail("cannot create socket directory"))?;
        }
    }
    if socket.exists() {
        refuse_if_served(socket)?;
        std::fs::remove_file(socket).map_err(fail("cannot remove stale socket"))?;
    }
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(socket);
    nix::sys::stat::umask(old);
    let listener = bound.map_err(fail("cannot bind socket"))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(mode))
        .map_err(fail("cannot set socket mode"))?;
    if let Some(group) = &cfg.socket_group {
        let gid = match group.parse::<u32>() {
            Ok(n) => Some(nix::unistd::Gid::from_raw(n)),
            Err(_) => nix::unistd::Group::from_name(group)
                .ok()
                .flatten()
                .map(|g| g.gid),
        };
        let gid = gid.ok_or_else(|| StartError::SocketGroup(group.clone()))?;
        nix::unistd::chown(socket, None, Some(gid))
            .map_err(|e| fail("cannot set socket group")(std::io::Error::from(e)))?;
    }
    listener
        .set_nonblocking(true)
        .map_err(fail("cannot configure socket"))?;
    Ok(listener)
}
