//! `bench-report` on a small JSON-lines file: the markdown tables and the
//! SVG plot (parsed as XML, one data line per plotted case).

use std::path::{Path, PathBuf};
use std::process::Command;

const RESULTS: &str = r#"{"suite":"ct","case":"established-1T","param":"conns","x":1,"value":9.5,"unit":"Mpps","runs":[9.4,9.5,9.7],"median":9.5}
{"suite":"ct","case":"established-1T","param":"conns","x":1000,"value":8.1,"unit":"Mpps","runs":[8.1],"median":8.1}
{"suite":"ct","case":"established-1T","param":"conns","x":1000000,"value":3.2,"unit":"Mpps","runs":[3.2],"median":3.2}
{"suite":"ct","case":"established-2T","param":"conns","x":1000,"value":14.1,"unit":"Mpps","runs":[14.1],"median":14.1}
{"suite":"ct","case":"established-2T","param":"conns","x":1000000,"value":5.25,"unit":"Mpps","runs":[5.25],"median":5.25}

{"suite":"ct","case":"setup-tcp","param":"conns","x":1000000,"value":1.2,"unit":"Mconn/s","runs":[1.2],"median":1.2}
{"suite":"classifier","case":"random-8masks","param":"flows","x":1000,"value":30.2,"unit":"Mlookups/s","runs":[30.2],"median":30.2}
{"suite":"pipeline","case":"emc+megaflow","param":"conns","x":1000,"value":5.5,"unit":"Mpps","runs":[5.5],"median":5.5}
{"suite":"pipeline","case":"emc+megaflow","param":"conns","x":100000,"value":4.0,"unit":"Mpps","runs":[4.0],"median":4.0}
"#;

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bench-report-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(dir: &Path, results: &str) -> (String, String) {
    let input = dir.join("results.jsonl");
    std::fs::write(&input, results).unwrap();
    let out = dir.join("out");
    let st = Command::new(env!("CARGO_BIN_EXE_bench-report"))
        .arg("--input")
        .arg(&input)
        .arg("--out-dir")
        .arg(&out)
        .args(["--command", "scripts/bench.sh --quick"])
        .args(["--note", "load average before the run: 0.10 0.20 0.30"])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let stdout = String::from_utf8(st.stdout).unwrap();
    assert!(stdout.contains("report.md") && stdout.contains("mpps-vs-conns.svg"));
    (
        std::fs::read_to_string(out.join("report.md")).unwrap(),
        std::fs::read_to_string(out.join("mpps-vs-conns.svg")).unwrap(),
    )
}

/// The data lines: polylines of stroke width 2 (axes and ticks are width 1).
fn data_lines<'a>(doc: &'a roxmltree::Document) -> Vec<roxmltree::Node<'a, 'a>> {
    doc.descendants()
        .filter(|n| n.has_tag_name("polyline") && n.attribute("stroke-width") == Some("2"))
        .collect()
}

#[test]
fn markdown_tables_and_svg_plot() {
    let dir = tmpdir("full");
    let (md, svg) = run(&dir, RESULTS);

    // Header line.
    assert!(md.contains("Command: `scripts/bench.sh --quick`"), "{md}");
    assert!(
        md.contains("nproc: ") && md.contains("load average"),
        "{md}"
    );
    assert!(md.contains(" UTC"), "{md}");
    assert!(
        md.contains("\nload average before the run: 0.10 0.20 0.30\n"),
        "{md}"
    );
    // One section per suite, in order of appearance, columns = sorted x.
    let ct = md.find("## ct").expect("ct table");
    let cl = md.find("## classifier").expect("classifier table");
    let pl = md.find("## pipeline").expect("pipeline table");
    assert!(ct < cl && cl < pl);
    assert!(
        md.contains("| case | param | 1 | 1k | 1M |\n|---|---|---:|---:|---:|\n"),
        "{md}"
    );
    assert!(
        md.contains("| established-1T | conns | 9.50 Mpps | 8.10 Mpps | 3.20 Mpps |\n"),
        "{md}"
    );
    assert!(
        md.contains("| established-2T | conns | | 14.1 Mpps | 5.25 Mpps |\n"),
        "{md}"
    );
    // A suite with several units gets one table per unit.
    let mpps = md.find("### ct: Mpps").expect("ct Mpps table");
    let setup = md.find("### ct: Mconn/s").expect("ct Mconn/s table");
    assert!(ct < mpps && mpps < setup && setup < cl);
    assert!(
        md.contains(
            "| case | param | 1M |\n|---|---|---:|\n| setup-tcp | conns | 1.20 Mconn/s |\n"
        ),
        "{md}"
    );
    assert!(!md.contains("### classifier"), "one unit, one table: {md}");
    assert!(
        md.contains("| random-8masks | flows | 30.2 Mlookups/s |\n"),
        "{md}"
    );
    assert!(md.contains("| case | param | 1k | 100k |\n"), "{md}");
    assert!(
        md.contains("| emc+megaflow | conns | 5.50 Mpps | 4.00 Mpps |\n"),
        "{md}"
    );
    assert!(md.contains("(runs per cell: 1–3)"), "{md}");
    assert!(md.contains("](mpps-vs-conns.svg)"), "{md}");

    // The SVG is well-formed XML with an <svg> root.
    let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts: Vec<String> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| n.text().unwrap_or("").trim().to_string())
        .collect();
    for t in [
        "ferrovs: packet rate against connection count",
        "connections per thread (log scale)",
        "Mpps (median, all threads)",
        "1k",
        "1M",
    ] {
        assert!(
            texts.iter().any(|x| x == t),
            "missing text {t:?} in {texts:?}"
        );
    }
    // One line per Mpps case of ct and pipeline (setup-tcp is Mconn/s and
    // the classifier suite is not plotted), each with a legend entry.
    let cases = [
        "ct: established-1T",
        "ct: established-2T",
        "pipeline: emc+megaflow",
    ];
    for c in cases {
        assert_eq!(texts.iter().filter(|x| *x == c).count(), 1, "legend {c}");
    }
    assert!(!texts
        .iter()
        .any(|x| x.contains("setup-tcp") || x.contains("random-8masks")));
    let lines = data_lines(&doc);
    assert_eq!(lines.len(), cases.len());
    let npoints: Vec<usize> = lines
        .iter()
        .map(|n| n.attribute("points").unwrap().split_whitespace().count())
        .collect();
    assert_eq!(npoints, [3, 2, 2]);
    // Distinct colours, and a marker per point.
    let strokes: std::collections::BTreeSet<_> = lines
        .iter()
        .map(|n| n.attribute("stroke").unwrap())
        .collect();
    assert_eq!(strokes.len(), 3);
    assert_eq!(
        doc.descendants()
            .filter(|n| n.has_tag_name("circle"))
            .count(),
        7
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn empty_input_still_writes_both_files() {
    let dir = tmpdir("empty");
    let (md, svg) = run(&dir, "");
    assert!(md.contains("No results."), "{md}");
    let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
    assert!(data_lines(&doc).is_empty());
    assert!(svg.contains("no Mpps results"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_fails_with_line_number() {
    let dir = tmpdir("bad");
    let input = dir.join("results.jsonl");
    std::fs::write(&input, "{\"suite\":\"ct\"}\n").unwrap();
    let st = Command::new(env!("CARGO_BIN_EXE_bench-report"))
        .arg("--input")
        .arg(&input)
        .arg("--out-dir")
        .arg(dir.join("out"))
        .output()
        .unwrap();
    assert!(!st.status.success());
    assert!(String::from_utf8_lossy(&st.stderr).contains("line 1"));
    std::fs::remove_dir_all(&dir).unwrap();
}
