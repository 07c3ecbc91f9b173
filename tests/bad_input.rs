//! Bad input lines: a clear error by default, or counted and written to a dead-letter file.

use std::io::Write;

use flowlab::api::Env;
use flowlab::connectors::{BadLinePolicy, CollectSink, CsvSource};
use flowlab::error::Error;
use flowlab::runtime::{JobConfig, execute};
use flowlab::time::WatermarkStrategy;

const INPUT: &str = "key,event_time_ms,value\n\
a,1000,1\n\
b,2000\n\
c,3000,3\n\
d,notatime,4\n\
e,5000,5\n\
,6000,6\n\
f,7000,seven\n\
g,8000,8\n";

fn write_input(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let path = dir.path().join("events.csv");
    std::fs::File::create(&path).unwrap().write_all(INPUT.as_bytes()).unwrap();
    path
}

fn run(source: CsvSource, parallelism: usize) -> (flowlab::Result<flowlab::runtime::JobReport>, Vec<String>) {
    let out = CollectSink::new();
    let sink = out.clone();
    let result = execute(&JobConfig::threads("bad input", parallelism), move |env: &Env| {
        env.source(source.clone(), WatermarkStrategy::bounded(0)).map(|event| event.key).sink(sink.clone());
    });
    (result, out.sorted_values())
}

#[test]
fn the_first_bad_line_fails_the_job_with_file_line_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_input(&dir);
    let (result, _) = run(CsvSource::new(&path), 2);
    let error = result.expect_err("a bad line must fail the job");
    match &error {
        Error::BadLine { file, line, reason } => {
            assert_eq!(file, &path.display().to_string());
            assert_eq!(*line, 3);
            assert!(reason.contains("expected 3 comma-separated fields"), "{reason}");
        }
        other => panic!("wrong error: {other:?}"),
    }
    assert!(error.to_string().starts_with(&format!("{}:3: ", path.display())), "{error}");
}

#[test]
fn skip_mode_counts_every_bad_line_and_writes_it_to_the_dead_letter_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_input(&dir);
    let dead_letter = dir.path().join("dead.csv");
    let source = CsvSource::new(&path).on_bad_line(BadLinePolicy::Skip { dead_letter: dead_letter.clone() });
    let (result, keys) = run(source, 2);
    let report = result.expect("skip mode keeps going");
    assert_eq!(keys, vec!["a", "c", "e", "g"]);
    assert_eq!(report.metrics.total("source:", |m| m.records_bad), 4);
    let written = std::fs::read_to_string(&dead_letter).unwrap();
    assert_eq!(written, "b,2000\nd,notatime,4\n,6000,6\nf,7000,seven\n");
}

#[test]
fn a_missing_file_is_an_error_naming_it() {
    let (result, _) = run(CsvSource::new("/nonexistent/events.csv"), 1);
    let message = result.expect_err("missing file").to_string();
    assert!(message.contains("/nonexistent/events.csv"), "{message}");
}

#[test]
fn a_source_resumed_at_a_reader_offset_replays_exactly_the_rest() {
    use flowlab::connectors::{Source, SourceReader};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.csv");
    std::fs::write(&path, "a,1,1\nb,2,2\nc,3,3\nd,4,4\n").unwrap();
    let mut reader: Box<dyn SourceReader<_>> = CsvSource::new(&path).open(0, 1).unwrap();
    let mut first = Vec::new();
    reader.read(&mut first, 2).unwrap();
    let offset = reader.offset();
    let mut rest = Vec::new();
    let mut resumed = CsvSource::new(&path).resume_at(offset, 2).open(0, 1).unwrap();
    while resumed.read(&mut rest, 10).unwrap() != flowlab::connectors::ReadStatus::Finished {}
    let keys: Vec<(String, u64)> = rest.into_iter().map(|(_, e)| (e.key, e.line)).collect();
    assert_eq!(keys, vec![("c".to_string(), 3), ("d".to_string(), 4)]);
    assert_eq!(first.len(), 2);
}
