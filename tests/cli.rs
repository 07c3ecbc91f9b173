//! The `flowlab` command as a user types it.

use std::process::{Command, Output};

fn flowlab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowlab")).args(args).output().expect("flowlab runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn gen_gives_the_same_bytes_for_the_same_arguments() {
    let args = ["gen", "--keys", "5", "--events", "2000", "--disorder", "2s", "--late-fraction", "0.01", "--seed", "3"];
    let first = flowlab(&args);
    assert!(first.status.success());
    assert_eq!(first.stdout, flowlab(&args).stdout);
    assert_eq!(stdout(&first).lines().count(), 2000);
    let mut other_seed = args;
    other_seed[10] = "4";
    assert_ne!(first.stdout, flowlab(&other_seed).stdout);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.csv");
    let to_file = flowlab(&[&args[..], &["--output", path.to_str().unwrap()]].concat());
    assert!(to_file.status.success());
    assert_eq!(std::fs::read(&path).unwrap(), first.stdout);
}

#[test]
fn watermarks_reports_late_events_writes_them_and_draws_the_svg() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    std::fs::write(&input, "key,event_time_ms,value\na,10000,1\nb,9000,2\nc,7999,3\nd,13000,4\ne,11000,5\nf,10999,6\n")
        .unwrap();
    let (svg, late) = (dir.path().join("w.svg"), dir.path().join("late.csv"));
    let output = flowlab(&[
        "watermarks",
        "--input",
        input.to_str().unwrap(),
        "--watermark",
        "bounded:2s",
        "--parallelism",
        "2",
        "--svg",
        svg.to_str().unwrap(),
        "--late-output",
        late.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = stdout(&output);
    assert!(text.contains("events: 6 read, 4 on time, 2 late"), "{text}");
    assert!(text.contains("worker 1:"), "{text}");
    assert_eq!(std::fs::read_to_string(&late).unwrap(), "c,7999,3\nf,10999,6\n");
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(picture.starts_with("<svg") && picture.contains("late event (2)"));
}

#[test]
fn a_bad_line_is_a_readable_error_and_skip_mode_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.csv");
    std::fs::write(&input, "a,1,1\nb,two,2\nc,3,3\n").unwrap();
    let failed = flowlab(&["watermarks", "--input", input.to_str().unwrap()]);
    assert!(!failed.status.success());
    let message = String::from_utf8_lossy(&failed.stderr);
    assert!(message.contains(&format!("error: {}:2: event_time_ms (field 2)", input.display())), "{message}");

    let dead = dir.path().join("dead.csv");
    let skipped = flowlab(&[
        "watermarks",
        "--input",
        input.to_str().unwrap(),
        "--on-bad-line",
        "skip",
        "--dead-letter",
        dead.to_str().unwrap(),
    ]);
    assert!(skipped.status.success());
    assert!(stdout(&skipped).contains("bad lines: 1 skipped"));
    assert_eq!(std::fs::read_to_string(&dead).unwrap(), "b,two,2\n");
}

#[test]
fn bad_arguments_are_explained() {
    let output = flowlab(&["watermarks", "--watermark", "bounded:2"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("a unit is missing"));
}

#[test]
fn graph_prints_dot() {
    let output = flowlab(&["graph", "--parallelism", "3"]);
    assert!(output.status.success());
    let dot = stdout(&output);
    assert!(dot.starts_with("digraph \"watermarks\""));
    assert!(dot.contains("hash(key)") && dot.contains("side: late") && dot.contains("parallelism 3"));
}

/// `flowlab window --output` writes rows while the job runs; the file must hold exactly the rows,
/// in exactly the order, that the library computes after the run — with late firings, sessions
/// and count windows too.
#[test]
fn window_output_streamed_while_running_equals_the_collected_result() {
    use flowlab::connectors::{BadLinePolicy, GeneratorConfig, write_events_csv};
    use flowlab::jobs::window::{Aggregate, WindowJob, WindowSpec, render_rows, run_window};
    use flowlab::runtime::JobConfig;
    use flowlab::time::WatermarkStrategy;

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    let config = GeneratorConfig { keys: 20, events: 20_000, late_fraction: 0.05, seed: 11, ..Default::default() };
    write_events_csv(&config, &mut std::fs::File::create(&input).unwrap()).unwrap();
    let aggregates = [Aggregate::Count, Aggregate::Sum, Aggregate::Min, Aggregate::Max];
    for (window, lateness) in
        [("tumbling:10s", "3s"), ("sliding:10s,3s", "5s"), ("session:1s", "2s"), ("count:7,3", "0s"), ("count:5", "0s")]
    {
        let job = WindowJob {
            input: input.clone(),
            window: WindowSpec::parse(window).unwrap(),
            strategy: WatermarkStrategy::bounded(1_000),
            lateness_ms: flowlab::time::parse_duration_ms(lateness).unwrap(),
            offset_ms: 0,
            bad_lines: BadLinePolicy::Fail,
        };
        let outcome = run_window(&job, &JobConfig::threads("collected", 1)).unwrap();
        let expected = render_rows(&outcome.rows(job.is_count_window()), &aggregates);
        for parallelism in ["1", "3"] {
            let (output, late) = (dir.path().join("out.csv"), dir.path().join("late.csv"));
            let run = flowlab(&[
                "window",
                "--input",
                input.to_str().unwrap(),
                "--window",
                window,
                "--watermark",
                "bounded:1s",
                "--lateness",
                lateness,
                "--agg",
                "count,sum,min,max",
                "--parallelism",
                parallelism,
                "--output",
                output.to_str().unwrap(),
                "--late-output",
                late.to_str().unwrap(),
            ]);
            assert!(run.status.success(), "{window}: {}", String::from_utf8_lossy(&run.stderr));
            assert_eq!(std::fs::read_to_string(&output).unwrap(), expected, "{window} parallelism {parallelism}");
            let late_text = std::fs::read_to_string(&late).unwrap();
            assert_eq!(late_text.lines().collect::<Vec<_>>(), outcome.late_lines, "{window} late lines");
        }
        if window.starts_with("tumbling") {
            assert!(
                expected.lines().count() > 1 && !outcome.late_lines.is_empty(),
                "the case should exercise lateness"
            );
        }
    }
}

#[test]
fn the_late_output_holds_the_original_lines_verbatim() {
    let dir = tempfile::tempdir().unwrap();
    let (input, late) = (dir.path().join("in.csv"), dir.path().join("late.csv"));
    std::fs::write(&input, "key,event_time_ms,value\r\na,10000,1\r\nb , 100 , 2\r\nc,9500,3\r\n").unwrap();
    let run = flowlab(&[
        "window",
        "--input",
        input.to_str().unwrap(),
        "--window",
        "tumbling:1s",
        "--watermark",
        "monotonous",
        "--late-output",
        late.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    // Watermark 9999 after the first event: [0,1000) and [9000,10000) are closed for b and c.
    assert_eq!(std::fs::read_to_string(&late).unwrap(), "b , 100 , 2\nc,9500,3\n");
    assert_eq!(stdout(&run), "key,window_start,window_end,count,sum\na,10000,11000,1,1\n");
}

#[test]
fn sim_writes_a_trace_of_crashes_and_refuses_bad_fault_settings() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.jsonl");
    let args = ["sim", "--seed", "5", "--events", "300", "--keys", "3", "--workers", "2", "--faults", "crash"];
    let mut with_trace = args.to_vec();
    with_trace.extend(["--crash-max", "0.05", "--trace", trace.to_str().unwrap()]);
    let output = flowlab(&with_trace);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let line = stdout(&output).lines().find(|line| line.starts_with("seed")).unwrap().to_string();
    assert!(line.ends_with("ok") && !line.contains("crashes 0"), "{line}");
    let text = std::fs::read_to_string(&trace).unwrap();
    assert!(text.lines().any(|line| line.starts_with(r#"{"event":"crash","#)), "no crash in the trace");
    assert!(text.lines().any(|line| line.starts_with(r#"{"event":"restart","#)), "no restart in the trace");
    let summary = text.lines().last().unwrap();
    let hash = line.split_whitespace().nth(3).unwrap();
    assert!(summary.starts_with(r#"{"event":"summary""#) && summary.contains(hash), "{summary} vs {line}");

    let bad = flowlab(&["sim", "--seed", "1", "--faults", "sometimes"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("none, delay, crash or all"));
    let many = flowlab(&["sim", "--seeds", "3", "--trace", trace.to_str().unwrap()]);
    assert!(!many.status.success());
    assert!(String::from_utf8_lossy(&many.stderr).contains("--seed"));
}

#[test]
fn bench_window_compares_flowlab_with_the_loop_and_prints_json() {
    let output = flowlab(&["bench", "window", "--window", "sliding:4s,2s", "--events", "20000", "--keys", "100"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}{}", String::from_utf8_lossy(&output.stderr));
    assert!(text.contains("same output; flowlab per core is"), "{text}");
    assert_eq!(text.lines().filter(|line| line.contains("M events/s per core")).count(), 2, "{text}");

    let output = flowlab(&["bench", "window", "--events", "5000", "--keys", "10", "--engine", "flowlab", "--json"]);
    assert!(output.status.success());
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert_eq!(report["engine"], "flowlab");
    assert_eq!(report["events"], 5000);
    assert!(report["events_per_second"].as_f64().is_some_and(|rate| rate > 0.0), "{report}");

    let output = flowlab(&["bench", "stream"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("`window` or `nexmark`"));
}

#[test]
fn bench_nexmark_runs_a_query_on_both_engines() {
    let output = flowlab(&["bench", "nexmark", "--query", "q5", "--events", "50000", "--parallelism", "2"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}{}", String::from_utf8_lossy(&output.stderr));
    assert!(text.contains("nexmark q5") && text.contains("same output; flowlab per core is"), "{text}");
    assert!(text.contains("2 worker(s)"), "{text}");

    let output = flowlab(&["bench", "nexmark", "--query", "q12", "--events", "20000"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("processing-time windows: outputs not compared"), "{text}");

    let output = flowlab(&["bench", "nexmark", "--query", "q11", "--events", "5000", "--engine", "baseline", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert_eq!(report["engine"], "baseline");
    assert!(report["results"].as_u64().is_some_and(|rows| rows > 0), "{report}");

    for (flags, words) in [
        (&["--query", "q9"][..], "unknown nexmark query"),
        (&["--delayed-fraction", "0.1"][..], "positive maximum delay"),
        (&["--out-of-order-group", "0"][..], "at least 1"),
    ] {
        let output = flowlab(&[&["bench", "nexmark", "--events", "100"][..], flags].concat());
        assert!(!output.status.success());
        assert!(String::from_utf8_lossy(&output.stderr).contains(words), "{flags:?}");
    }
}

#[test]
fn the_window_baseline_loop_writes_the_engines_file_and_refuses_what_it_does_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    let generated = flowlab(&[
        "gen",
        "--keys",
        "50",
        "--events",
        "20000",
        "--late-fraction",
        "0.02",
        "--output",
        input.to_str().unwrap(),
    ]);
    assert!(generated.status.success());
    let run = |engine: &str| {
        let (output, late) = (dir.path().join(format!("{engine}.csv")), dir.path().join(format!("{engine}.late")));
        let run = flowlab(&[
            "window",
            "--engine",
            engine,
            "--input",
            input.to_str().unwrap(),
            "--window",
            "tumbling:3s",
            "--agg",
            "count,sum,min,max",
            "--output",
            output.to_str().unwrap(),
            "--late-output",
            late.to_str().unwrap(),
        ]);
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        (std::fs::read(output).unwrap(), std::fs::read_to_string(late).unwrap())
    };
    let (engine_rows, engine_late) = run("flowlab");
    let (baseline_rows, baseline_late) = run("baseline");
    assert!(engine_late.lines().count() > 0, "the input has stragglers");
    assert_eq!(baseline_rows, engine_rows);
    assert_eq!(baseline_late, engine_late);

    let refused =
        flowlab(&["window", "--engine", "baseline", "--input", input.to_str().unwrap(), "--window", "session:1s"]);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("--engine baseline runs tumbling windows only"), "{message}");
}
