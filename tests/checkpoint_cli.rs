//! `flowlab window` with checkpoints, as real processes: killed with SIGKILL at any moment and
//! rerun with `--restore latest`, it leaves in `--output` (and `--late-output`) exactly the bytes
//! an uninterrupted run without checkpoints writes — no row lost, none twice; a damaged newest
//! checkpoint is refused, said so on stderr, and the one before it restored; the checkpoint flags
//! without their companions are usage errors.
//!
//! Kill moments are fractions of the measured length of an uninterrupted checkpointed run, chosen
//! by round, so that they spread over the run on a fast machine and on a slow one alike.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

const FLOWLAB: &str = env!("CARGO_BIN_EXE_flowlab");

/// A few hundred milliseconds of `flowlab window` in the test profile (opt-level 1).
const EVENTS: &str = "300000";
const CHECKPOINT_INTERVAL: &str = "20ms";

fn flowlab(args: &[String]) -> Output {
    Command::new(FLOWLAB).args(args).output().expect("flowlab runs")
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn path(path: &Path) -> String {
    path.to_str().expect("a UTF-8 temporary path").to_string()
}

/// An input and what an uninterrupted run without checkpoints makes of it.
struct Fixture {
    dir: tempfile::TempDir,
    input: PathBuf,
    reference: Vec<u8>,
    reference_late: Vec<u8>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let input = dir.path().join("in.csv");
        let generated = flowlab(&strings(&[
            "gen",
            "--events",
            EVENTS,
            "--keys",
            "500",
            "--late-fraction",
            "0.01",
            "--seed",
            "7",
            "--output",
            &path(&input),
        ]));
        assert!(generated.status.success(), "{}", stderr_of(&generated));
        let (output, late) = (dir.path().join("reference.csv"), dir.path().join("reference-late.csv"));
        let mut args = strings(&["window", "--input", &path(&input), "--window", "tumbling:1s"]);
        args.extend(strings(&["--output", &path(&output), "--late-output", &path(&late)]));
        let reference = flowlab(&args);
        assert!(reference.status.success(), "{}", stderr_of(&reference));
        let fixture = Fixture {
            reference: std::fs::read(&output).expect("the reference output"),
            reference_late: std::fs::read(&late).expect("the reference late output"),
            dir,
            input,
        };
        assert!(fixture.reference.len() > 1_000_000, "the reference has {} bytes", fixture.reference.len());
        assert!(!fixture.reference_late.is_empty(), "the input has no late elements");
        fixture
    }

    /// A run directory: its own output, late output and checkpoint directory.
    fn run(&self, name: &str) -> Run {
        let dir = self.dir.path().join(name);
        std::fs::create_dir(&dir).expect("a run directory");
        Run { input: self.input.clone(), dir, parallelism: 1, extra: Vec::new() }
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|arg| arg.to_string()).collect()
}

/// One checkpointed command, always the same, run (and killed) several times.
struct Run {
    input: PathBuf,
    dir: PathBuf,
    parallelism: usize,
    extra: Vec<String>,
}

impl Run {
    fn output(&self) -> PathBuf {
        self.dir.join("out.csv")
    }

    fn late(&self) -> PathBuf {
        self.dir.join("late.csv")
    }

    fn checkpoints(&self) -> PathBuf {
        self.dir.join("chk")
    }

    /// The command line; with `restore`, plus `--restore latest`.
    fn args(&self, restore: bool) -> Vec<String> {
        let mut args = strings(&["window", "--input", &path(&self.input), "--window", "tumbling:1s"]);
        args.extend(strings(&["--output", &path(&self.output()), "--late-output", &path(&self.late())]));
        args.extend(strings(&["--parallelism", &self.parallelism.to_string()]));
        args.extend(strings(&["--checkpoint-dir", &path(&self.checkpoints())]));
        args.extend(strings(&["--checkpoint-interval", CHECKPOINT_INTERVAL]));
        args.extend(self.extra.iter().cloned());
        if restore {
            args.extend(strings(&["--restore", "latest"]));
        }
        args
    }

    /// Starts the command; its stderr goes to `stderr-<attempt>` in the run directory.
    fn spawn(&self, restore: bool, attempt: usize) -> Child {
        let log = File::create(self.stderr_path(attempt)).expect("a stderr file");
        Command::new(FLOWLAB)
            .args(self.args(restore))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("flowlab starts")
    }

    fn stderr_path(&self, attempt: usize) -> PathBuf {
        self.dir.join(format!("stderr-{attempt}"))
    }

    fn stderr(&self, attempt: usize) -> String {
        std::fs::read_to_string(self.stderr_path(attempt)).unwrap_or_default()
    }

    /// Runs the command to its end.
    fn finish(&self, restore: bool, attempt: usize) -> (ExitStatus, String) {
        let status = self.spawn(restore, attempt).wait().expect("flowlab ends");
        (status, self.stderr(attempt))
    }

    /// Runs the command to its end, which must be a success, and returns how long it took.
    fn finish_ok(&self, restore: bool, attempt: usize) -> (Duration, String) {
        let started = Instant::now();
        let (status, stderr) = self.finish(restore, attempt);
        assert!(status.success(), "{:?} failed: {stderr}", self.args(restore));
        (started.elapsed(), stderr)
    }

    /// Complete checkpoints (with `_metadata`) in the checkpoint directory, oldest first.
    fn complete_checkpoints(&self) -> Vec<u64> {
        checkpoint_ids(&self.checkpoints()).into_iter().filter(|id| self.metadata(*id).is_file()).collect()
    }

    fn checkpoint_dir(&self, id: u64) -> PathBuf {
        self.checkpoints().join(format!("chk-{id}"))
    }

    fn metadata(&self, id: u64) -> PathBuf {
        self.checkpoint_dir(id).join("_metadata")
    }

    /// The output and the late output equal the reference's, byte for byte.
    fn assert_reference(&self, fixture: &Fixture, what: &str) {
        let output = std::fs::read(self.output()).unwrap_or_default();
        assert!(
            output == fixture.reference,
            "{what}: --output differs from the uninterrupted run: {} bytes, expected {}; first difference at byte {}",
            output.len(),
            fixture.reference.len(),
            first_difference(&output, &fixture.reference)
        );
        let late = std::fs::read(self.late()).unwrap_or_default();
        assert!(
            late == fixture.reference_late,
            "{what}: --late-output differs from the uninterrupted run: {} bytes, expected {}; first difference at byte {}",
            late.len(),
            fixture.reference_late.len(),
            first_difference(&late, &fixture.reference_late)
        );
    }
}

fn first_difference(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()))
}

/// The ids of the `chk-<id>` directories in `dir`, ascending.
fn checkpoint_ids(dir: &Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut ids: Vec<u64> =
        entries.filter_map(|entry| entry.ok()?.file_name().to_str()?.strip_prefix("chk-")?.parse().ok()).collect();
    ids.sort_unstable();
    ids
}

/// SIGKILLs `child` (on Unix `Child::kill` sends SIGKILL) and reaps it. Returns `true` if it was
/// killed, `false` if it had already ended — successfully, or the test fails.
fn kill(child: &mut Child, run: &Run, attempt: usize) -> bool {
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("reaped");
    if status.success() {
        return false;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(9),
            "attempt {attempt} ended by itself, with {status}: {}",
            run.stderr(attempt)
        );
    }
    true
}

/// A restore that ran to its end restored the newest of `complete` (the complete checkpoints when
/// it started), or started fresh if there were none.
fn assert_restored_newest(complete: &[u64], stderr: &str, what: &str) {
    match complete.last() {
        Some(newest) => assert!(
            stderr.contains(&format!("restoring checkpoint {newest} ")),
            "{what}: checkpoints {complete:?} were complete, but: {stderr}"
        ),
        None => assert!(!stderr.contains("restoring checkpoint"), "{what}: nothing was complete, but: {stderr}"),
    }
}

/// Kill moments as fractions of an uninterrupted run, from before the first checkpoint to its
/// very end; round `r`'s `k`-th kill uses `KILL_AT[(r + 3k) % KILL_AT.len()]`.
const KILL_AT: [f64; 8] = [0.0, 0.08, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95];

#[test]
fn sigkill_at_any_moment_then_restore_latest_leaves_exactly_the_uninterrupted_output() {
    let fixture = Fixture::new();
    // An uninterrupted checkpointed run: the same bytes, and the time kill moments scale with.
    let uninterrupted = fixture.run("uninterrupted");
    let (mut duration, _) = uninterrupted.finish_ok(false, 0);
    uninterrupted.assert_reference(&fixture, "an uninterrupted checkpointed run");
    assert!(!uninterrupted.complete_checkpoints().is_empty());
    eprintln!("an uninterrupted checkpointed run takes {duration:?}");

    // Every kill that landed: (round, attempt, complete checkpoints at the kill).
    let mut landed: Vec<(usize, usize, usize)> = Vec::new();
    for round in 0..KILL_AT.len() {
        let mut run = fixture.run(&format!("round-{round}"));
        run.parallelism = 1 + round % 2;
        let kills_max = 1 + round % 3;
        let mut kills = Vec::new();
        let mut attempt = 0;
        loop {
            let restore = attempt > 0;
            let complete_before = run.complete_checkpoints();
            let spawned = Instant::now();
            let mut child = run.spawn(restore, attempt);
            if kills.len() < kills_max {
                let delay = duration.mul_f64(KILL_AT[(round + 3 * kills.len()) % KILL_AT.len()]);
                std::thread::sleep(delay);
                if kill(&mut child, &run, attempt) {
                    kills.push(delay);
                    landed.push((round, attempt, run.complete_checkpoints().len()));
                    attempt += 1;
                    continue;
                }
            }
            let status = child.wait().expect("flowlab ends");
            if !restore {
                // A whole run that ended by itself: when the machine has sped up since the
                // uninterrupted run was timed (it was busy then), later kill moments scale to this
                // run, or they would all fall after the end.
                duration = duration.min(spawned.elapsed());
            }
            let stderr = run.stderr(attempt);
            assert!(status.success(), "round {round}, after kills at {kills:?}: {stderr}");
            if restore {
                assert_restored_newest(&complete_before, &stderr, &format!("round {round}, attempt {attempt}"));
            }
            break;
        }
        run.assert_reference(&fixture, &format!("round {round} (parallelism {}, kills at {kills:?})", run.parallelism));
    }
    eprintln!("kills (round, attempt, complete checkpoints): {landed:?}");
    // The kills fell before the first checkpoint, between checkpoints, and into restored runs.
    assert!(landed.iter().any(|&(_, _, complete)| complete == 0), "{landed:?}");
    assert!(landed.iter().any(|&(_, _, complete)| complete > 0), "{landed:?}");
    assert!(landed.iter().any(|&(_, attempt, _)| attempt > 0), "{landed:?}");
    assert!(landed.len() >= KILL_AT.len(), "only {} kills landed: {landed:?}", landed.len());
}

#[test]
fn killed_before_the_first_checkpoint_restore_latest_starts_fresh() {
    let fixture = Fixture::new();
    // Killed at once: no checkpoint can have completed (the first is due after 20 ms).
    let run = fixture.run("at-once");
    assert!(kill(&mut run.spawn(false, 0), &run, 0), "the run ended by itself at once");
    assert_eq!(run.complete_checkpoints(), Vec::<u64>::new());
    let (_, stderr) = run.finish_ok(true, 1);
    assert!(!stderr.contains("restoring checkpoint"), "{stderr}");
    run.assert_reference(&fixture, "killed at once, then restored from an empty directory");

    // A partial first checkpoint (parts, no _metadata), and the outputs an earlier run left: a
    // restore that finds nothing complete is a fresh start, which keeps nothing of them.
    let run = fixture.run("partial");
    let partial = run.checkpoint_dir(1);
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join("n0-w0"), b"half a checkpoint").unwrap();
    std::fs::write(partial.join("n2-w0.tmp"), b"a part being written").unwrap();
    std::fs::write(run.output(), b"key,window_start,window_end,count,sum\nstale,0,1000,1,1\n").unwrap();
    std::fs::write(run.late(), b"stale,1,1\n").unwrap();
    let (_, stderr) = run.finish_ok(true, 0);
    assert!(!stderr.contains("restoring checkpoint"), "{stderr}");
    run.assert_reference(&fixture, "restored from a directory with only a partial checkpoint");
    assert!(!partial.exists(), "the partial checkpoint is still there after a complete one");
    assert!(!run.complete_checkpoints().is_empty());
}

#[test]
fn a_rerun_killed_early_then_restored_does_not_take_the_earlier_runs_checkpoints_for_its_own() {
    let fixture = Fixture::new();
    let run = fixture.run("rerun");
    run.finish_ok(false, 0);
    run.assert_reference(&fixture, "the first run");
    // The same command again, from the start (no --restore): kill it early, before or after it
    // has replaced the first run's output but before its own first checkpoint, then restore.
    let mut attempt = 1;
    for delay_ms in [0, 3, 6, 9, 12, 16] {
        let mut child = run.spawn(false, attempt);
        std::thread::sleep(Duration::from_millis(delay_ms));
        let killed = kill(&mut child, &run, attempt);
        attempt += 1;
        if killed {
            let (status, stderr) = run.finish(true, attempt);
            assert!(status.success(), "rerun killed after {delay_ms} ms, then --restore latest: {stderr}");
            attempt += 1;
        }
        run.assert_reference(&fixture, &format!("rerun killed after {delay_ms} ms, then restored"));
    }
}

/// What to do to a part file.
#[derive(Clone, Copy, Debug)]
enum Damage {
    FlipByte,
    Truncate,
}

/// Damages the largest part of checkpoint `id` of `run`; returns the part's name and the reason
/// the store must give for refusing it.
fn damage(run: &Run, id: u64, damage: Damage) -> (String, String) {
    let part = std::fs::read_dir(run.checkpoint_dir(id))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            let name = path.file_name().unwrap().to_str().unwrap();
            name != "_metadata" && !name.ends_with(".tmp")
        })
        .max_by_key(|path| (std::fs::metadata(path).unwrap().len(), path.clone()))
        .expect("a checkpoint has parts");
    let name = part.file_name().unwrap().to_str().unwrap().to_string();
    let mut bytes = std::fs::read(&part).unwrap();
    let len = bytes.len();
    assert!(len > 1, "part {name} of chk-{id} has {len} bytes");
    let reason = match damage {
        Damage::FlipByte => {
            bytes[len / 2] ^= 0x01;
            format!("part {name} fails its checksum")
        }
        Damage::Truncate => {
            bytes.truncate(len / 2);
            format!("part {name} is {} bytes, metadata says {len}", len / 2)
        }
    };
    std::fs::write(&part, bytes).unwrap();
    (name, reason)
}

#[test]
fn a_damaged_newest_checkpoint_is_refused_and_the_one_before_it_restored() {
    let fixture = Fixture::new();
    for (case, (kill_mid_run, how)) in
        [(false, Damage::FlipByte), (false, Damage::Truncate), (true, Damage::FlipByte), (true, Damage::Truncate)]
            .into_iter()
            .enumerate()
    {
        let mut run = fixture.run(&format!("damaged-{case}"));
        run.parallelism = 1 + case % 2;
        run.extra = strings(&["--checkpoints-retained", "5"]);
        let what = if kill_mid_run { "killed mid-run" } else { "completed" };
        if kill_mid_run {
            // Kill once two checkpoints are complete: the newest will be damaged, the other
            // restored.
            let mut child = run.spawn(false, 0);
            let started = Instant::now();
            while run.complete_checkpoints().len() < 2 && started.elapsed() < Duration::from_secs(20) {
                std::thread::sleep(Duration::from_millis(1));
            }
            kill(&mut child, &run, 0);
        } else {
            run.finish_ok(false, 0);
            run.assert_reference(&fixture, "the run before the damage");
        }
        let complete = run.complete_checkpoints();
        assert!(complete.len() >= 2, "case {case} ({what}): only {complete:?} complete");
        let (newest, previous) = (complete[complete.len() - 1], complete[complete.len() - 2]);
        let (part, reason) = damage(&run, newest, how);
        let (_, stderr) = run.finish_ok(true, 1);
        let context = format!("case {case}: {what}, {how:?} part {part} of chk-{newest}");
        assert!(stderr.contains(&format!("refused chk-{newest}: {reason}")), "{context}: {stderr}");
        assert!(stderr.contains(&format!("restoring checkpoint {previous} ")), "{context}: {stderr}");
        run.assert_reference(&fixture, &context);
    }
}

#[test]
fn restoring_the_final_checkpoint_is_a_no_op_and_restoring_an_older_one_replays() {
    let fixture = Fixture::new();
    let mut run = fixture.run("final");
    run.extra = strings(&["--checkpoints-retained", "100"]);
    run.finish_ok(false, 0);
    let complete = run.complete_checkpoints();
    assert!(complete.len() >= 3, "only {complete:?} complete");
    // The newest is the final checkpoint: restoring it changes nothing.
    let (_, stderr) = run.finish_ok(true, 1);
    let newest = complete[complete.len() - 1];
    assert!(stderr.contains(&format!("restoring checkpoint {newest} ")), "{stderr}");
    run.assert_reference(&fixture, "the final checkpoint restored");
    // An older one, by id: the output is cut back to what it had committed, and replayed.
    let older = complete[complete.len() / 2];
    let mut args = run.args(false);
    args.extend(strings(&["--restore", &older.to_string()]));
    let restored = flowlab(&args);
    assert!(restored.status.success(), "{}", stderr_of(&restored));
    assert!(stderr_of(&restored).contains(&format!("restoring checkpoint {older} ")), "{}", stderr_of(&restored));
    run.assert_reference(&fixture, &format!("checkpoint {older} restored after the run had finished"));
}

#[test]
fn restore_latest_may_change_the_parallelism() {
    let fixture = Fixture::new();
    for (case, (before, after)) in [(2, 3), (3, 1)].into_iter().enumerate() {
        let mut run = fixture.run(&format!("rescale-{case}"));
        run.parallelism = before;
        // Killed once a checkpoint is complete; the key groups go to the new instances.
        let mut child = run.spawn(false, 0);
        let started = Instant::now();
        while run.complete_checkpoints().is_empty() && started.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(1));
        }
        kill(&mut child, &run, 0);
        let complete = run.complete_checkpoints();
        run.parallelism = after;
        let (_, stderr) = run.finish_ok(true, 1);
        assert_restored_newest(&complete, &stderr, &format!("parallelism {before} to {after}"));
        assert!(stderr.contains(&format!("(taken with parallelism {before})")), "{stderr}");
        run.assert_reference(&fixture, &format!("restored from parallelism {before} on {after}"));
    }
}

#[test]
fn no_checkpoint_that_verifies_is_an_error_not_a_fresh_start() {
    let fixture = Fixture::new();
    let run = fixture.run("all-damaged");
    run.finish_ok(false, 0);
    let complete = run.complete_checkpoints();
    for &id in &complete {
        damage(&run, id, Damage::FlipByte);
    }
    let (status, stderr) = run.finish(true, 1);
    assert!(!status.success(), "restored from {complete:?}, all damaged: {stderr}");
    assert!(stderr.contains("no checkpoint verifies"), "{stderr}");
    // The committed output is left alone.
    run.assert_reference(&fixture, "a refused restore");
}

#[test]
fn checkpoint_flags_without_their_companions_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    std::fs::write(&input, "a,1000,1\n").unwrap();
    let (input, output) = (path(&input), path(&dir.path().join("out.csv")));
    let checkpoints = path(&dir.path().join("chk"));
    let window = |extra: &[&str]| {
        let mut args = strings(&["window", "--input", &input, "--window", "tumbling:1s"]);
        args.extend(strings(extra));
        flowlab(&args)
    };
    let expect_error = |output: Output, message: &str| {
        assert!(!output.status.success(), "no error: {}", stderr_of(&output));
        assert_eq!(output.status.code(), Some(1));
        assert!(stderr_of(&output).contains(message), "{}", stderr_of(&output));
    };

    expect_error(window(&["--output", &output, "--restore", "latest"]), "need --checkpoint-dir");
    expect_error(window(&["--restore", "3"]), "need --checkpoint-dir");
    expect_error(window(&["--checkpoint-dir", &checkpoints]), "--checkpoint-dir needs --output");
    expect_error(
        window(&["--output", &output, "--checkpoint-dir", &checkpoints, "--restore", "newest"]),
        "--restore takes `latest` or a checkpoint id",
    );
    expect_error(
        window(&["--output", &output, "--checkpoint-dir", &checkpoints, "--restore", "42"]),
        "no checkpoint 42",
    );
    expect_error(
        window(&["--output", &output, "--checkpoint-dir", &checkpoints, "--checkpoint-interval", "0ms"]),
        "checkpoint interval and timeout must be positive",
    );
    // And with both, the same tiny job works.
    let ok = window(&["--output", &output, "--checkpoint-dir", &checkpoints]);
    assert!(ok.status.success(), "{}", stderr_of(&ok));
    assert_eq!(std::fs::read_to_string(&output).unwrap(), "key,window_start,window_end,count,sum\na,1000,2000,1,1\n");
}
