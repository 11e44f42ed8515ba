//! The control socket: a Unix stream listener, one thread per connection,
//! one request per line. Local only: the socket is created mode 0600 (the
//! umask is tightened around `bind`, so it is never reachable with looser
//! permissions) inside a directory created 0700. At most
//! [`MAX_CONNECTIONS`] clients at once and [`MAX_REQUEST_BYTES`] per
//! request, so a local client cannot exhaust threads or memory.

use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use nix::sys::stat::{umask, Mode};

use super::commands;
use super::protocol::{write_line, Reply, Request};
use crate::daemon::{Daemon, Shutdown};

/// Clients served at once; more are answered with an error and closed.
pub const MAX_CONNECTIONS: usize = 32;
/// The longest request line (an `add-flows` file travels in one).
pub const MAX_REQUEST_BYTES: u64 = 64 << 20;

/// A bound control socket.
pub struct ControlServer {
    path: PathBuf,
    listener: UnixListener,
}

impl ControlServer {
    /// Bind `path`: create its directory (0700) if missing, refuse if a
    /// daemon already answers there, replace a stale socket file, and make
    /// the socket 0600.
    pub fn bind(path: &Path) -> Result<ControlServer, String> {
        let shown = path.display();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| format!("control socket directory {}: {e}", dir.display()))?;
            }
        }
        match fs::symlink_metadata(path) {
            Ok(_) => {
                if UnixStream::connect(path).is_ok() {
                    return Err(format!(
                        "control socket {shown}: another ferrovsd is already running there"
                    ));
                }
                fs::remove_file(path)
                    .map_err(|e| format!("control socket {shown}: removing stale socket: {e}"))?;
                tracing::info!("removed stale control socket {shown}");
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(format!("control socket {shown}: {e}")),
        }
        // Owner read/write only from the moment the socket exists.
        let old = umask(Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(path);
        umask(old);
        let listener = bound.map_err(|e| format!("control socket {shown}: {e}"))?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("control socket {shown}: chmod 0600: {e}"))?;
        Ok(ControlServer {
            path: path.to_path_buf(),
            listener,
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serve connections on a background thread.
    pub fn spawn(self, daemon: Arc<Daemon>) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                let active = Arc::new(AtomicUsize::new(0));
                for conn in self.listener.incoming() {
                    match conn {
                        Ok(mut stream) => {
                            if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                                active.fetch_sub(1, Ordering::AcqRel);
                                let _ = write_line(
                                    &mut stream,
                                    &Reply::err(format!(
                                        "too many control connections (at most {MAX_CONNECTIONS})"
                                    )),
                                );
                                continue;
                            }
                            let (d, a) = (daemon.clone(), active.clone());
                            let r = std::thread::Builder::new()
                                .name("control-conn".into())
                                .spawn(move || {
                                    serve(stream, &d);
                                    a.fetch_sub(1, Ordering::AcqRel);
                                });
                            if let Err(e) = r {
                                active.fetch_sub(1, Ordering::AcqRel);
                                tracing::warn!("control: cannot spawn a connection thread: {e}");
                            }
                        }
                        Err(e) => tracing::warn!("control: accept: {e}"),
                    }
                }
            })?;
        Ok(())
    }
}

/// Answer requests on one connection until the peer closes it.
fn serve(stream: UnixStream, daemon: &Daemon) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.by_ref().take(MAX_REQUEST_BYTES).read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if !line.ends_with('\n') && line.len() as u64 >= MAX_REQUEST_BYTES {
            let _ = write_line(
                &mut out,
                &Reply::err(format!("request longer than {MAX_REQUEST_BYTES} bytes")),
            );
            return;
        }
        if line.trim().is_empty() {
            continue;
        }
        let (reply, exit) = match serde_json::from_str::<Request>(&line) {
            Ok(req) if req.command == "events" => {
                // A stream: this connection carries events until it closes.
                tracing::debug!("control: events {:?}", req.args);
                super::events_cmd::stream(out, reader.into_inner(), daemon, &req.args, req.json);
                return;
            }
            Ok(req) => {
                tracing::debug!("control: {} {:?}", req.command, req.args);
                let exit = req.command == "exit";
                match commands::dispatch(daemon, &req) {
                    Ok(o) => {
                        let json = if req.json {
                            o.json
                        } else {
                            serde_json::Value::Null
                        };
                        (Reply::ok(o.text, json), exit)
                    }
                    Err(e) => (Reply::err(e), false),
                }
            }
            Err(e) => (Reply::err(format!("bad request: {e}")), false),
        };
        let sent = write_line(&mut out, &reply);
        if exit {
            daemon.request_shutdown(Shutdown::Exit);
        }
        if sent.is_err() {
            return;
        }
    }
}
