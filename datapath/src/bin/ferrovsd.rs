//! `ferrovsd`: the ferrovs switch daemon.
//!
//! ```text
//! ferrovsd --config FILE [--socket PATH] [--log-level LEVEL]
//! ```
//!
//! Builds the switch from the configuration (ports, conntrack settings,
//! flows), starts the PMD threads, serves the control socket (`ferrovs-ctl`)
//! and the optional metrics endpoint, and runs until SIGINT, SIGTERM or the
//! `exit` command; then it stops the PMD threads, flushes pcap recordings,
//! removes the socket and exits 0. Startup errors print one message and
//! exit 1.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use datapath::config::{check_log_level, DaemonConfig};
use datapath::control::ControlServer;
use datapath::daemon::{Daemon, Shutdown};
use datapath::metrics::MetricsServer;
use nix::sys::signal::{SigSet, Signal};

#[derive(Parser)]
#[command(name = "ferrovsd", version, about = "ferrovs userspace switch daemon")]
struct Args {
    /// JSON configuration file.
    #[arg(long)]
    config: PathBuf,
    /// Control socket (overrides the configuration's control_socket).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// error, warn, info, debug or trace (overrides the configuration).
    #[arg(long)]
    log_level: Option<String>,
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("ferrovsd: {msg}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Every thread inherits this mask; one thread waits for the signals.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    if let Err(e) = signals.thread_block() {
        return fail(format!("blocking signals: {e}"));
    }
    let (cfg, base) = match DaemonConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let level = args
        .log_level
        .clone()
        .unwrap_or_else(|| cfg.log_level.clone());
    if let Err(e) = check_log_level(&level) {
        return fail(format!("--{e}"));
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&level))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let socket = args
        .socket
        .clone()
        .unwrap_or_else(|| cfg.control_socket.clone());
    // Bind first: a second daemon must not touch the first one's ports.
    let server = match ControlServer::bind(&socket) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let cleanup = || {
        let _ = std::fs::remove_file(&socket);
    };
    let metrics = match cfg.metrics.as_ref().map(MetricsServer::bind).transpose() {
        Ok(m) => m,
        Err(e) => {
            cleanup();
            return fail(e);
        }
    };
    let (daemon, shutdown) = match Daemon::start(&cfg, &base) {
        Ok(d) => d,
        Err(e) => {
            cleanup();
            return fail(e);
        }
    };
    if let Err(e) = server.spawn(daemon.clone()) {
        daemon.stop();
        cleanup();
        return fail(format!("control thread: {e}"));
    }
    if let Some(m) = metrics {
        if let Ok(a) = m.local_addr() {
            tracing::info!("metrics on http://{a}/metrics");
        }
        if let Err(e) = m.spawn(daemon.clone()) {
            daemon.stop();
            cleanup();
            return fail(format!("metrics thread: {e}"));
        }
    }
    let tx = daemon.shutdown_sender();
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(sig) = signals.wait() {
                let _ = tx.send(Shutdown::Signal(sig.as_str().to_string()));
            }
        });
    if let Err(e) = spawned {
        daemon.stop();
        cleanup();
        return fail(format!("signal thread: {e}"));
    }
    tracing::info!(
        "ferrovsd {} running: {} ports, control socket {}",
        env!("CARGO_PKG_VERSION"),
        daemon.sw.port_entries().len(),
        socket.display()
    );
    let why = shutdown.recv().unwrap_or(Shutdown::Exit);
    tracing::info!("shutting down ({why:?})");
    daemon.stop();
    cleanup();
    tracing::info!("stopped");
    ExitCode::SUCCESS
}
