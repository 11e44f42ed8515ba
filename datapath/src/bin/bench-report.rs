//! bench-report: turn the benches' JSON-lines results into something to look at.
//!
//! ```text
//! bench-report [--input target/bench-report/results.jsonl] [--out-dir target/bench-report]
//!              [--command "scripts/bench.sh --quick"]
//! ```
//!
//! Reads the records (format: `datapath::bench_result`) and writes, in
//! `--out-dir`:
//! - `report.md`: a section per suite, with one markdown table per unit
//!   (rows: case, columns: the `x` values, cells: median with unit), after
//!   a line naming the command, the date, `nproc` and the load average;
//! - `mpps-vs-conns.svg`: Mpps against connection count (log x), one line
//!   per case of the `ct` and `pipeline` suites.
//!
//! Then prints the two paths.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::Parser;
use datapath::bench_result::{read_jsonl, BenchRecord};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

#[derive(Parser)]
#[command(about = "markdown table and SVG plot from bench --json-out results")]
struct Args {
    /// JSON-lines results file.
    #[arg(long, default_value = "target/bench-report/results.jsonl")]
    input: PathBuf,
    /// Where report.md and mpps-vs-conns.svg go.
    #[arg(long, default_value = "target/bench-report")]
    out_dir: PathBuf,
    /// The command that produced the results, for the report's header line.
    #[arg(long)]
    command: Option<String>,
    /// A line to add under the header (repeatable), e.g. the load average
    /// before the run.
    #[arg(long)]
    note: Vec<String>,
}

const SVG_NAME: &str = "mpps-vs-conns.svg";

fn main() {
    let a = Args::parse();
    let recs = match read_jsonl(&a.input) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench-report: {}: {e}", a.input.display());
            std::process::exit(1);
        }
    };
    let command = a.command.clone().unwrap_or_else(|| {
        std::env::args()
            .map(|s| shell_word(&s))
            .collect::<Vec<_>>()
            .join(" ")
    });
    let res = std::fs::create_dir_all(&a.out_dir).and_then(|()| {
        let md = a.out_dir.join("report.md");
        std::fs::write(&md, markdown(&recs, &command, &a.note))?;
        let svg = a.out_dir.join(SVG_NAME);
        plot(&recs, &svg).map_err(|e| std::io::Error::other(format!("plot: {e}")))?;
        println!("{}", md.display());
        println!("{}", svg.display());
        Ok(())
    });
    if let Err(e) = res {
        eprintln!("bench-report: {}: {e}", a.out_dir.display());
        std::process::exit(1);
    }
}

fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=,:+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Distinct values in order of first appearance.
fn ordered<'a>(it: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for s in it {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// `1000000` -> `1M`, `100000` -> `100k`; other values as they are.
fn compact(x: f64) -> String {
    if x.fract() == 0.0 && x >= 1000.0 {
        let n = x as u64;
        if n.is_multiple_of(1_000_000) {
            return format!("{}M", n / 1_000_000);
        }
        if n.is_multiple_of(1000) {
            return format!("{}k", n / 1000);
        }
    }
    if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x}")
    }
}

/// About three significant digits.
fn figure(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 0.1 || a == 0.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn markdown(recs: &[BenchRecord], command: &str, notes: &[String]) -> String {
    let mut s = String::from("# ferrovs benchmark report\n\n");
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    s.push_str(&format!(
        "Command: `{command}` · date: {} · nproc: {nproc} · load average (1/5/15 min, at report time): {load}\n\n",
        utc_now()
    ));
    for n in notes {
        s.push_str(&format!("{n}\n\n"));
    }
    s.push_str(
        "Each cell is the median of the cell's runs, with its unit. \
         The machine may be shared: compare figures within one report.\n",
    );
    for suite in ordered(recs.iter().map(|r| r.suite.as_str())) {
        let rs: Vec<&BenchRecord> = recs.iter().filter(|r| r.suite == suite).collect();
        let runs: BTreeSet<usize> = rs.iter().map(|r| r.runs.len()).collect();
        let runs = match (runs.first(), runs.last()) {
            (Some(a), Some(b)) if a == b => format!("{a}"),
            (Some(a), Some(b)) => format!("{a}–{b}"),
            _ => "0".into(),
        };
        s.push_str(&format!("\n## {suite}\n\n(runs per cell: {runs})\n"));
        // One table per unit, so each table's columns are one kind of x
        // (lookups over flows apart from translations over corpus size).
        let units = ordered(rs.iter().map(|r| r.unit.as_str()));
        for unit in &units {
            if units.len() > 1 {
                s.push_str(&format!("\n### {suite}: {unit}\n"));
            }
            let cells: Vec<&BenchRecord> = rs.iter().copied().filter(|r| r.unit == *unit).collect();
            s.push('\n');
            s.push_str(&table(&cells));
        }
    }
    if recs.is_empty() {
        s.push_str("\nNo results.\n");
    }
    s.push_str(&format!("\n![Mpps against connection count]({SVG_NAME})\n"));
    s
}

/// Rows: case (and param), columns: the sorted `x` values, cells: median
/// with unit.
fn table(rs: &[&BenchRecord]) -> String {
    let mut s = String::new();
    let mut xs: Vec<f64> = rs.iter().map(|r| r.x).collect();
    xs.sort_by(|a, b| a.total_cmp(b));
    xs.dedup();
    s.push_str("| case | param |");
    for &x in &xs {
        s.push_str(&format!(" {} |", compact(x)));
    }
    s.push_str("\n|---|---|");
    for _ in &xs {
        s.push_str("---:|");
    }
    s.push('\n');
    for case in ordered(rs.iter().map(|r| r.case.as_str())) {
        let params = ordered(
            rs.iter()
                .filter(|r| r.case == case)
                .map(|r| r.param.as_str()),
        );
        for param in params {
            s.push_str(&format!("| {} | {} |", md_escape(case), md_escape(param)));
            for &x in &xs {
                // The last record wins if a cell was measured twice.
                let cell = rs
                    .iter()
                    .rev()
                    .find(|r| r.case == case && r.param == param && r.x == x);
                match cell {
                    Some(r) => s.push_str(&format!(" {} {} |", figure(r.median), r.unit)),
                    None => s.push_str(" |"),
                }
            }
            s.push('\n');
        }
    }
    s
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}

/// Current UTC time as `YYYY-MM-DD HH:MM UTC` (no date crate needed).
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// The plotted lines: (label, points sorted by x), one per case of the
/// `ct` and `pipeline` suites with Mpps records.
fn mpps_series(recs: &[BenchRecord]) -> Vec<(String, Vec<(f64, f64)>)> {
    let mpps: Vec<&BenchRecord> = recs
        .iter()
        .filter(|r| (r.suite == "ct" || r.suite == "pipeline") && r.unit == "Mpps" && r.x > 0.0)
        .collect();
    let keys = ordered(mpps.iter().map(|r| r.suite.as_str()))
        .into_iter()
        .flat_map(|suite| {
            ordered(
                mpps.iter()
                    .filter(|r| r.suite == suite)
                    .map(|r| r.case.as_str()),
            )
            .into_iter()
            .map(move |case| (suite, case))
        })
        .collect::<Vec<_>>();
    keys.into_iter()
        .map(|(suite, case)| {
            let mut pts: Vec<(f64, f64)> = mpps
                .iter()
                .filter(|r| r.suite == suite && r.case == case)
                .map(|r| (r.x, r.median))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            pts.dedup_by(|a, b| a.0 == b.0);
            (format!("{suite}: {case}"), pts)
        })
        .collect()
}

/// Distinguishable on white (Tableau 10).
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Axis label: no trailing zeros on round values.
fn tick(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        figure(v)
    }
}

/// Writes the plot: the chart on the left, the legend in its own panel on
/// the right (so it never hides a line). Each case is one `<polyline>` of
/// stroke width 2 plus a `<circle>` per point.
fn plot(recs: &[BenchRecord], path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let series = mpps_series(recs);
    let root = SVGBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        "ferrovs: packet rate against connection count",
        ("sans-serif", 26),
    )?;
    let (left, right) = root.split_horizontally(760);
    let (mut x0, mut x1, mut y1) = (f64::MAX, 0f64, 0f64);
    for &(x, y) in series.iter().flat_map(|(_, p)| p.iter()) {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if series.is_empty() {
        (x0, x1, y1) = (1.0, 1e6, 1.0);
    }
    // Room on both sides of the outer points, and above the highest.
    let (x0, x1) = (x0 / 2.0, x1 * 2.0);
    let y1 = if y1 > 0.0 { y1 * 1.1 } else { 1.0 };
    let mut chart = ChartBuilder::on(&left)
        .margin(12)
        .x_label_area_size(56)
        .y_label_area_size(64)
        .build_cartesian_2d((x0..x1).log_scale(), 0f64..y1)?;
    chart
        .configure_mesh()
        .x_desc("connections per thread (log scale)")
        .y_desc("Mpps (median, all threads)")
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .x_label_formatter(&|x| compact(*x))
        .y_label_formatter(&|y| tick(*y))
        .draw()?;
    let legend_font = ("sans-serif", 16).into_font();
    if series.is_empty() {
        right.draw(&Text::new("no Mpps results", (10, 40), legend_font.clone()))?;
        right.draw(&Text::new(
            "(ct or pipeline suite)",
            (10, 62),
            legend_font.clone(),
        ))?;
    }
    for (i, (label, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?;
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
        let y = 40 + 26 * i as i32;
        right.draw(&Rectangle::new([(8, y - 5), (30, y + 5)], color.filled()))?;
        right.draw(&Text::new(
            label.clone(),
            (38, y),
            TextStyle::from(legend_font.clone()).pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
    }
    root.present()?;
    Ok(())
}
