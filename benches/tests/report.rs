//! `acs-bench report --quick` end to end: real child runs, JSON, SVG and markdown.

use std::process::Command;

const BEGIN: &str = "<!-- BEGIN acs-bench report";
const END: &str = "<!-- END acs-bench report -->";

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn quick_report_writes_json_svg_and_markdown() {
    let dir = tempfile::tempdir().unwrap();
    // A hand-written part with a stale generated section between: the run must replace
    // only the section.
    let md_path = dir.path().join("benchmarks.md");
    let begin_line = format!("{BEGIN}: generated, rewritten by every `acs-bench report` run; edit only outside these markers -->");
    std::fs::write(
        &md_path,
        format!("# Benchmarks\n\nHand-written table above.\n\n{begin_line}\nSTALE NUMBERS\n{END}\n\nHand-written notes below.\n"),
    )
    .unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_acs-bench"))
        .args(["report", "--quick", "--repeat", "2", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "report failed: {stderr}");

    let figs = dir.path().join("figures").join("bench");
    let sort: serde_json::Value = serde_json::from_str(&read(&figs.join("sort.json"))).unwrap();
    let round: serde_json::Value = serde_json::from_str(&read(&figs.join("round.json"))).unwrap();

    // Every sort configuration measured at every size, all verified.
    let sizes = sort["sizes"].as_array().unwrap();
    let configs = sort["configs"].as_array().unwrap();
    assert_eq!(configs.len(), 8);
    let points = sort["points"].as_array().unwrap();
    assert_eq!(points.len(), sizes.len() * configs.len(), "{sort:#}");
    for p in points {
        assert_eq!(p["verified"], true);
        assert!(p["seconds"].as_f64().unwrap() > 0.0);
        assert!(p["bytes_per_party"].as_u64().unwrap() > 0);
        assert!(p["rounds"].as_u64().unwrap() > 0);
        // Two runs with different seeds; the point's figure is their median.
        let runs = p["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 2);
        let (a, b) = (
            runs[0]["seconds"].as_f64().unwrap(),
            runs[1]["seconds"].as_f64().unwrap(),
        );
        assert!((p["seconds"].as_f64().unwrap() - (a + b) / 2.0).abs() < 1e-12);
    }
    assert!(sort["failed"].as_array().unwrap().is_empty());
    assert!(sort["meta"]["cores"].as_u64().unwrap() >= 1);
    assert!(!sort["meta"]["commit"].as_str().unwrap().is_empty());

    // Fig. 4 grid (users × 4 message sizes) plus the large-population points.
    let rpoints = round["points"].as_array().unwrap();
    let grid = round["users"].as_array().unwrap().len() * 4;
    let large = round["large_users"].as_array().unwrap().len();
    assert!(large >= 1);
    assert_eq!(rpoints.len(), grid + large, "{round:#}");
    for p in rpoints {
        assert_eq!(p["verified"], true);
        assert!(p["seconds"].as_f64().unwrap() > 0.0);
    }
    assert!(round["failed"].as_array().unwrap().is_empty());

    for f in [
        "sort_seconds.svg",
        "sort_bytes_per_element.svg",
        "sort_rounds.svg",
        "round_latency.svg",
        "round_large.svg",
    ] {
        let svg = read(&figs.join(f));
        assert!(svg.trim_start().starts_with("<svg"), "{f}");
        assert!(svg.trim_end().ends_with("</svg>"), "{f}");
        // Lines were drawn (not just axes).
        assert!(svg.contains("<polyline") || svg.contains("<path"), "{f}");
        assert_eq!(svg.matches("<svg").count(), 1, "{f}");
    }

    let md = read(&md_path);
    assert!(md.starts_with("# Benchmarks\n\nHand-written table above.\n"));
    assert!(md.trim_end().ends_with("Hand-written notes below."));
    assert!(!md.contains("STALE NUMBERS"));
    assert_eq!(md.matches(BEGIN).count(), 1);
    assert_eq!(md.matches(END).count(), 1);
    for algo in ["quick", "bitonic"] {
        for threads in ["1 thread,", "2 threads,"] {
            for payload in ["payload 0 B", "payload 256 B"] {
                let label = format!("{algo}, {threads} {payload}");
                assert!(md.contains(&label), "markdown lacks {label}");
            }
        }
    }
    for m in ["1 KB", "2 KB", "4 KB", "8 KB", "256 B messages"] {
        assert!(md.contains(m), "markdown lacks {m}");
    }
    for f in ["sort_seconds.svg", "round_latency.svg", "round_large.svg"] {
        assert!(
            md.contains(&format!("(figures/bench/{f})")),
            "markdown lacks {f}"
        );
    }
    for fact in [
        "Machine:",
        "Commit:",
        "Load average",
        "Method",
        "Verification",
    ] {
        assert!(md.contains(fact), "markdown lacks {fact}");
    }
    assert!(md.contains("`--quick` run"));

    // A second run replaces its own section and keeps the hand-written parts.
    let again = Command::new(env!("CARGO_BIN_EXE_acs-bench"))
        .args(["report", "--quick", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(again.status.success());
    let md2 = read(&md_path);
    assert_eq!(md2.matches(BEGIN).count(), 1);
    assert!(md2.contains("Hand-written table above.") && md2.contains("Hand-written notes below."));
}

#[test]
fn broken_markers_are_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let md_path = dir.path().join("benchmarks.md");
    let text = format!("# Benchmarks\n\n{END}\nhand\n");
    std::fs::write(&md_path, &text).unwrap();
    // The markers are checked before any point runs.
    let out = Command::new(env!("CARGO_BIN_EXE_acs-bench"))
        .args(["report", "--quick", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("markers"));
    assert_eq!(read(&md_path), text);
    assert!(!dir.path().join("figures").exists());
}
