//! flowlab's windows against outputs produced by a real Apache Flink 2.3 (`../shared/conformance`).
//!
//! Each expected file holds `key,window_start,window_end,count,sum` rows; they are compared as
//! sorted sets of rows, for parallelism 1, 2 and 4, through the library and through the CLI.

use std::path::{Path, PathBuf};
use std::process::Command;

use flowlab::connectors::BadLinePolicy;
use flowlab::jobs::window::{Aggregate, WindowJob, WindowSpec, render_rows, run_window};
use flowlab::runtime::JobConfig;
use flowlab::time::WatermarkStrategy;

fn conformance_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance")
}

const CASES: [(&str, &str, &str); 6] = [
    ("events", "tumble", "tumbling:10s"),
    ("events", "sliding", "sliding:10s,5s"),
    ("events", "session", "session:3s"),
    ("edge", "tumble", "tumbling:10s"),
    ("edge", "sliding", "sliding:10s,5s"),
    ("edge", "session", "session:3s"),
];

fn sorted_rows(text: &str) -> Vec<String> {
    let mut rows: Vec<String> = text.lines().filter(|line| !line.is_empty()).map(str::to_string).collect();
    rows.sort();
    rows
}

fn expected(input: &str, window: &str) -> Vec<String> {
    let path = conformance_dir().join(format!("{input}_{window}.expected.csv"));
    sorted_rows(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

#[test]
fn the_library_matches_flink_for_every_case_and_parallelism() {
    for (input, window, spec) in CASES {
        let job = WindowJob {
            input: conformance_dir().join(format!("{input}.input.csv")),
            window: WindowSpec::parse(spec).unwrap(),
            strategy: WatermarkStrategy::bounded(2_000),
            lateness_ms: 0,
            offset_ms: 0,
            bad_lines: BadLinePolicy::Fail,
        };
        let want = expected(input, window);
        for parallelism in [1, 2, 4] {
            let outcome = run_window(&job, &JobConfig::threads("conformance", parallelism)).unwrap();
            let text = render_rows(&outcome.rows(false), &[Aggregate::Count, Aggregate::Sum]);
            let got = sorted_rows(text.split_once('\n').unwrap().1);
            assert_eq!(got.len(), want.len(), "{input} {window} parallelism {parallelism}: row count");
            assert_eq!(got, want, "{input} {window} parallelism {parallelism}");
        }
    }
}

#[test]
fn the_cli_matches_flink_and_its_output_is_sorted_by_end_key_start() {
    let dir = tempfile::tempdir().unwrap();
    for (input, window, spec) in CASES {
        let output = dir.path().join(format!("{input}_{window}.csv"));
        let run = Command::new(env!("CARGO_BIN_EXE_flowlab"))
            .args(["window", "--input"])
            .arg(conformance_dir().join(format!("{input}.input.csv")))
            .args(["--window", spec, "--watermark", "bounded:2s", "--agg", "count,sum", "--parallelism", "2"])
            .arg("--output")
            .arg(&output)
            .output()
            .unwrap();
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        let text = std::fs::read_to_string(&output).unwrap();
        let (header, body) = text.split_once('\n').unwrap();
        assert_eq!(header, "key,window_start,window_end,count,sum");
        assert_eq!(sorted_rows(body), expected(input, window), "{input} {window}");
        let order: Vec<(i64, String, i64)> = body
            .lines()
            .map(|line| {
                let fields: Vec<&str> = line.split(',').collect();
                (fields[2].parse().unwrap(), fields[0].to_string(), fields[1].parse().unwrap())
            })
            .collect();
        assert!(
            order.windows(2).all(|pair| pair[0] <= pair[1]),
            "{input} {window}: rows not sorted by end, key, start"
        );
    }
}
