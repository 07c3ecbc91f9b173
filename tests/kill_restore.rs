//! Real processes: `flowlab window` with checkpoints, killed with SIGKILL at several moments and
//! rerun with `--restore latest`, leaves exactly the rows of an uninterrupted run; a damaged newest
//! checkpoint is refused and the previous one restored.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const FLOWLAB: &str = env!("CARGO_BIN_EXE_flowlab");

fn flowlab(args: &[&str]) -> Output {
    Command::new(FLOWLAB).args(args).output().expect("flowlab runs")
}

fn window_args<'a>(input: &'a str, output: &'a str, checkpoints: Option<&'a str>) -> Vec<&'a str> {
    let mut args =
        vec!["window", "--input", input, "--output", output, "--window", "tumbling:1s", "--parallelism", "2"];
    if let Some(dir) = checkpoints {
        args.extend(["--checkpoint-dir", dir, "--checkpoint-interval", "10ms"]);
    }
    args
}

fn setup(dir: &Path) -> (String, Vec<u8>) {
    let input = dir.join("in.csv").display().to_string();
    let generated =
        flowlab(&["gen", "--events", "300000", "--keys", "500", "--late-fraction", "0.01", "--output", &input]);
    assert!(generated.status.success(), "{}", String::from_utf8_lossy(&generated.stderr));
    let reference = dir.join("reference.csv").display().to_string();
    let output = flowlab(&window_args(&input, &reference, None));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    (input, std::fs::read(&reference).expect("the reference output"))
}

#[test]
fn sigkill_at_any_moment_then_restore_latest_writes_exactly_the_uninterrupted_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (input, reference) = setup(dir.path());
    for (round, kill_after_ms) in [0u64, 40, 120, 250].into_iter().enumerate() {
        let output = dir.path().join(format!("out-{round}.csv")).display().to_string();
        let checkpoints = dir.path().join(format!("chk-{round}")).display().to_string();
        let mut args = window_args(&input, &output, Some(&checkpoints));
        // Kill it, then kill the restored run too, before letting one finish.
        for kill in [kill_after_ms, kill_after_ms / 2 + 30] {
            let mut child = Command::new(FLOWLAB).args(&args).spawn().expect("flowlab starts");
            std::thread::sleep(Duration::from_millis(kill));
            child.kill().expect("SIGKILL");
            child.wait().expect("reaped");
            if !args.contains(&"--restore") {
                args.extend(["--restore", "latest"]);
            }
        }
        let finished = flowlab(&args);
        assert!(finished.status.success(), "round {round}: {}", String::from_utf8_lossy(&finished.stderr));
        let written = std::fs::read(&output).expect("the output");
        assert!(
            written == reference,
            "round {round} (kill after {kill_after_ms} ms): output differs from the uninterrupted run"
        );
    }
}

#[test]
fn a_damaged_newest_checkpoint_is_refused_and_the_previous_one_restored() {
    let dir = tempfile::tempdir().unwrap();
    let (input, reference) = setup(dir.path());
    let output = dir.path().join("out.csv").display().to_string();
    let checkpoints = dir.path().join("chk");
    let checkpoints_arg = checkpoints.display().to_string();
    let mut args = window_args(&input, &output, Some(&checkpoints_arg));
    args.extend(["--checkpoints-retained", "100"]);
    let first = flowlab(&args);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let mut ids: Vec<u64> = std::fs::read_dir(&checkpoints)
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.strip_prefix("chk-")?.parse().ok())
        .collect();
    ids.sort();
    assert!(ids.len() >= 3, "only {} checkpoints", ids.len());
    // Damage the newest (the final one) and the one before it: a flipped byte and a truncation.
    for (id, flip) in [(ids[ids.len() - 1], true), (ids[ids.len() - 2], false)] {
        let part = std::fs::read_dir(checkpoints.join(format!("chk-{id}")))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.file_name().unwrap() != "_metadata")
            .max_by_key(|path| std::fs::metadata(path).unwrap().len())
            .unwrap();
        let mut bytes = std::fs::read(&part).unwrap();
        if flip {
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x20;
        } else {
            bytes.truncate(bytes.len() / 2);
        }
        std::fs::write(&part, bytes).unwrap();
    }
    args.extend(["--restore", "latest"]);
    let restored = flowlab(&args);
    let stderr = String::from_utf8_lossy(&restored.stderr);
    assert!(restored.status.success(), "{stderr}");
    let (newest, second) = (ids[ids.len() - 1], ids[ids.len() - 2]);
    assert!(stderr.contains(&format!("refused chk-{newest}")), "{stderr}");
    assert!(stderr.contains(&format!("refused chk-{second}")), "{stderr}");
    assert!(stderr.contains(&format!("restoring checkpoint {}", ids[ids.len() - 3])), "{stderr}");
    assert!(std::fs::read(&output).unwrap() == reference, "output after the fallback differs");
}

#[test]
fn checkpoint_flags_without_their_companions_are_refused() {
    let restore = flowlab(&["window", "--input", "x.csv", "--window", "tumbling:1s", "--restore", "latest"]);
    assert!(!restore.status.success());
    assert!(String::from_utf8_lossy(&restore.stderr).contains("need --checkpoint-dir"));
    let no_output = flowlab(&["window", "--input", "x.csv", "--window", "tumbling:1s", "--checkpoint-dir", "d"]);
    assert!(!no_output.status.success());
    assert!(String::from_utf8_lossy(&no_output.stderr).contains("needs --output"));
}
