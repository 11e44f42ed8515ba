//! `ferrovs-ctl`: send one command to a running `ferrovsd`.
//!
//! ```text
//! ferrovs-ctl [--socket PATH] [--json] COMMAND [ARGS...]
//! ```
//!
//! The socket defaults to `$FERROVS_SOCKET`, else
//! `/tmp/ferrovs/ferrovsd.sock`. `add-flows FILE` reads the file (`-`:
//! standard input) and sends its text. Prints the daemon's output (with
//! `--json`, its JSON form) and exits 0; on error prints
//! `ferrovs-ctl: <error>` and exits 1. `ferrovs-ctl help` lists the commands.
//!
//! `events [zone=N] [type=...]` streams conntrack events, one a line (with
//! `--json`, one JSON object a line), until interrupted or the daemon
//! exits; once subscribed it says so on standard error.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use datapath::config::DEFAULT_SOCKET;
use datapath::control::protocol::{call, write_line, Reply, Request};

#[derive(Parser)]
#[command(name = "ferrovs-ctl", version, about = "control a running ferrovsd")]
struct Args {
    /// Control socket (default: $FERROVS_SOCKET, else /tmp/ferrovs/ferrovsd.sock).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Print the reply's JSON form instead of text.
    #[arg(long)]
    json: bool,
    /// Seconds to wait for the reply.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// The command (try `help`).
    command: String,
    /// Its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("ferrovs-ctl: {msg}");
    ExitCode::FAILURE
}

fn read_flows(arg: &str) -> Result<String, String> {
    let mut text = String::new();
    if arg == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("reading standard input: {e}"))?;
    } else {
        text = std::fs::read_to_string(arg).map_err(|e| format!("{arg}: {e}"))?;
    }
    Ok(text)
}

fn main() -> ExitCode {
    let a = Args::parse();
    let socket = a
        .socket
        .or_else(|| std::env::var_os("FERROVS_SOCKET").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    let mut args = a.args;
    if a.command == "add-flows" {
        let [file] = args.as_slice() else {
            return fail("add-flows: expected FILE (or - for standard input)");
        };
        match read_flows(file) {
            Ok(t) => args = vec![t],
            Err(e) => return fail(e),
        }
    }
    let req = Request {
        command: a.command,
        args,
        json: a.json,
    };
    if req.command == "events" {
        return events(&socket, &req);
    }
    let reply = match call(&socket, &req, Duration::from_secs(a.timeout)) {
        Ok(r) => r,
        Err(e) => return connect_failed(&socket, e),
    };
    if !reply.ok {
        return fail(reply.error.unwrap_or_else(|| "unknown error".into()));
    }
    if a.json {
        let v = reply.json.unwrap_or(serde_json::Value::Null);
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        print!("{}", reply.output.unwrap_or_default());
    }
    ExitCode::SUCCESS
}

fn connect_failed(socket: &Path, e: std::io::Error) -> ExitCode {
    if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) {
        return fail(format!(
            "cannot connect to ferrovsd at {}: {e} (is ferrovsd running? use --socket or FERROVS_SOCKET to choose another socket)",
            socket.display()
        ));
    }
    fail(format!("{}: {e}", socket.display()))
}

/// `events`: print each streamed event until the daemon closes the
/// connection, the reader of our output goes away, or we are interrupted.
fn events(socket: &Path, req: &Request) -> ExitCode {
    let mut s = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) => return connect_failed(socket, e),
    };
    if let Err(e) = write_line(&mut s, req) {
        return fail(format!("{}: {e}", socket.display()));
    }
    let mut subscribed = false;
    let stdout = std::io::stdout();
    for line in BufReader::new(s).lines() {
        let line = match line {
            Ok(l) => l,
            Err(e) => return fail(format!("{}: {e}", socket.display())),
        };
        let reply: Reply = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => return fail(format!("bad line from the daemon: {e}")),
        };
        if !reply.ok {
            return fail(reply.error.unwrap_or_else(|| "unknown error".into()));
        }
        if !subscribed {
            subscribed = true;
            eprintln!("ferrovs-ctl: listening for conntrack events (interrupt to stop)");
            continue;
        }
        let mut out = stdout.lock();
        let written = if req.json {
            let v = reply.json.unwrap_or(serde_json::Value::Null);
            writeln!(out, "{v}")
        } else {
            write!(out, "{}", reply.output.unwrap_or_default())
        };
        if written.and_then(|_| out.flush()).is_err() {
            return ExitCode::SUCCESS; // our reader went away
        }
    }
    if subscribed {
        ExitCode::SUCCESS
    } else {
        fail("the daemon closed the connection without replying")
    }
}
