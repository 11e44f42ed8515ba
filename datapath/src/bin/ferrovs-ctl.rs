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

use std::io::{ErrorKind, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use datapath::config::DEFAULT_SOCKET;
use datapath::control::protocol::{call, Request};

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
    let reply = match call(&socket, &req, Duration::from_secs(a.timeout)) {
        Ok(r) => r,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
            return fail(format!(
                "cannot connect to ferrovsd at {}: {e} (is ferrovsd running? use --socket or FERROVS_SOCKET to choose another socket)",
                socket.display()
            ))
        }
        Err(e) => return fail(format!("{}: {e}", socket.display())),
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
