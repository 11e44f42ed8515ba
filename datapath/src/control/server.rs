//! The control socket: a Unix stream listener, one thread per connection,
//! one request per line. Local only (the socket is mode 0600 inside a
//! directory created 0700).

use std::fs;
use std::io::{BufRead, BufReader, ErrorKind};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::commands;
use super::protocol::{write_line, Reply, Request};
use crate::daemon::{Daemon, Shutdown};

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
        let listener =
            UnixListener::bind(path).map_err(|e| format!("control socket {shown}: {e}"))?;
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
                for conn in self.listener.incoming() {
                    match conn {
                        Ok(stream) => {
                            let d = daemon.clone();
                            let r = std::thread::Builder::new()
                                .name("control-conn".into())
                                .spawn(move || serve(stream, &d));
                            if let Err(e) = r {
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
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        if line.trim().is_empty() {
            continue;
        }
        let (reply, exit) = match serde_json::from_str::<Request>(&line) {
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
