//! The control protocol: one JSON object per line each way over a Unix
//! stream socket.
//!
//! ```text
//! -> {"command":"dump-flows","args":["table=0"],"json":false}
//! <- {"ok":true,"output":"<text>","json":null}
//! <- {"ok":false,"error":"`foo`: unknown field"}
//! ```
//!
//! With `"json": true` the reply's `json` field carries the same result as
//! structured data (`output` still carries the text).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A command and its arguments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub json: bool,
}

/// The answer to one [`Request`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Present (possibly null) on success.
    #[serde(default, skip_serializing_if = "is_error_json")]
    pub json: Option<Value>,
}

fn is_error_json(v: &Option<Value>) -> bool {
    v.is_none()
}

impl Reply {
    /// A successful reply.
    pub fn ok(output: String, json: Value) -> Reply {
        Reply {
            ok: true,
            output: Some(output),
            error: None,
            json: Some(json),
        }
    }

    /// A failed reply.
    pub fn err(error: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            output: None,
            error: Some(error.into()),
            json: None,
        }
    }
}

/// Write `v` as one line.
pub fn write_line<T: Serialize>(w: &mut impl Write, v: &T) -> std::io::Result<()> {
    let mut s = serde_json::to_string(v)?;
    s.push('\n');
    w.write_all(s.as_bytes())?;
    w.flush()
}

/// Send `req` to the daemon at `socket` and wait for its reply.
pub fn call(socket: &Path, req: &Request, timeout: Duration) -> std::io::Result<Reply> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(timeout))?;
    write_line(&mut s, req)?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    if line.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the daemon closed the connection without replying",
        ));
    }
    serde_json::from_str(&line).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format() {
        let r: Request =
            serde_json::from_str(r#"{"command":"dump-flows","args":["x"],"json":false}"#).unwrap();
        assert_eq!(r.args, ["x"]);
        let r: Request = serde_json::from_str(r#"{"command":"version"}"#).unwrap();
        assert!(r.args.is_empty() && !r.json);
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"x"}"#).is_err());
        assert_eq!(
            serde_json::to_string(&Reply::ok("a\n".into(), Value::Null)).unwrap(),
            r#"{"ok":true,"output":"a\n","json":null}"#
        );
        assert_eq!(
            serde_json::to_string(&Reply::err("bad")).unwrap(),
            r#"{"ok":false,"error":"bad"}"#
        );
    }
}
