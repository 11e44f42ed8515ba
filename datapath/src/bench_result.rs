//! The benchmark result format shared by every ferrovs bench binary.
//!
//! One JSON object per measured cell, one per line (JSON lines), appended to
//! the file given with `--json-out`:
//!
//! ```json
//! {"suite":"ct","case":"established-1T","param":"conns","x":1000,"value":9.1,
//!  "unit":"Mpps","runs":[9.0,9.1,9.3],"median":9.1}
//! ```
//!
//! - `suite`: `ct`, `classifier` or `pipeline`;
//! - `case`: a short row name (`established-1T`, `setup-tcp`, `emc+megaflow`);
//! - `param`, `x`: what was varied (`conns`, `flows`) and its value;
//! - `value`, `unit`: the reported figure (`Mpps`, `Mlookups/s`, `Mconn/s`,
//!   `B/conn`), normally the median of `runs`;
//! - `runs`: every run's value, `median`: their median.
//!
//! `ct` and `ofproto` do not depend on this crate: their benches write the
//! same fields with `serde_json` directly. `bench-report` reads the file back
//! and renders the markdown table and the SVG plot.

use std::fs::OpenOptions;
use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One measured cell of a benchmark matrix.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchRecord {
    /// `ct`, `classifier` or `pipeline`.
    pub suite: String,
    /// Short row name, e.g. `established-1T`, `no-emc`.
    pub case: String,
    /// What `x` counts, e.g. `conns` or `flows`.
    pub param: String,
    /// The varied parameter's value (connection count, flow count);
    /// written as a JSON integer when it is one.
    #[serde(serialize_with = "integral_as_int")]
    pub x: f64,
    /// The reported figure (normally `median`).
    pub value: f64,
    /// Unit of `value`, `runs` and `median`: `Mpps`, `Mlookups/s`, ...
    pub unit: String,
    /// Every run's value, in run order.
    pub runs: Vec<f64>,
    /// Median of `runs`.
    pub median: f64,
}

impl BenchRecord {
    /// A record whose `value` and `median` are the median of `runs`.
    pub fn from_runs(
        suite: &str,
        case: &str,
        param: &str,
        x: f64,
        unit: &str,
        runs: Vec<f64>,
    ) -> Self {
        let m = median(&runs);
        BenchRecord {
            suite: suite.into(),
            case: case.into(),
            param: param.into(),
            x,
            value: m,
            unit: unit.into(),
            runs,
            median: m,
        }
    }
}

fn integral_as_int<S: serde::Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        s.serialize_i64(*x as i64)
    } else {
        s.serialize_f64(*x)
    }
}

/// Median of `v` (mean of the two middle values for an even count; NaN for
/// an empty slice).
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Append `rec` as one line to `path` (created if missing).
pub fn append_jsonl(path: impl AsRef<Path>, rec: &BenchRecord) -> io::Result<()> {
    let mut line = serde_json::to_string(rec).map_err(io::Error::other)?;
    line.push('\n');
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    // One write per record, so concurrent appenders do not interleave lines.
    f.write_all(line.as_bytes())
}

/// Read every record of a JSON-lines file; blank lines are skipped, a line
/// that does not parse is an error naming its line number.
pub fn read_jsonl(path: impl AsRef<Path>) -> io::Result<Vec<BenchRecord>> {
    let f = BufReader::new(std::fs::File::open(path)?);
    let mut out = Vec::new();
    for (i, line) in f.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let rec = serde_json::from_str(&line).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidData, format!("line {}: {e}", i + 1))
        })?;
        out.push(rec);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn append_then_read_round_trips() {
        let dir = std::env::temp_dir().join(format!("bench-result-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.jsonl");
        let _ = std::fs::remove_file(&path);
        let a = BenchRecord::from_runs(
            "ct",
            "established-1T",
            "conns",
            1000.0,
            "Mpps",
            vec![3.0, 1.0, 2.0],
        );
        let b = BenchRecord::from_runs(
            "classifier",
            "random-8masks",
            "flows",
            10.0,
            "Mlookups/s",
            vec![5.0],
        );
        append_jsonl(&path, &a).unwrap();
        append_jsonl(&path, &b).unwrap();
        assert_eq!(a.median, 2.0);
        assert_eq!(a.value, 2.0);
        assert_eq!(read_jsonl(&path).unwrap(), vec![a, b]);
        // The field names are the documented ones.
        let text = std::fs::read_to_string(&path).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        for k in [
            "suite", "case", "param", "x", "value", "unit", "runs", "median",
        ] {
            assert!(first.get(k).is_some(), "missing {k}");
        }
        assert!(
            text.starts_with(r#"{"suite":"ct","case":"established-1T","param":"conns","x":1000,"#),
            "{text}"
        );
        std::fs::write(&path, "{\"suite\":1}\n").unwrap();
        let err = read_jsonl(&path).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
