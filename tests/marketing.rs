//! The marketing case study: the rule engine against an independent model of its semantics, on
//! any parallelism; exactly-once coupons under 500 simulated seeds with crashes; a savepoint
//! resumed on another parallelism; and `flowlab demo`, simulated and on real files.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Arc;

use flowlab::api::Env;
use flowlab::checkpoint::{CheckpointConfig, MemoryStore, RestartStrategy, RestoreFrom};
use flowlab::connectors::TransactionalCollectSink;
use flowlab::marketing::events::EventsConfig;
use flowlab::marketing::rules::{Rule, RuleUpdate, validate};
use flowlab::marketing::{
    Coupon, DEMO_RULES, MarketingCheck, MarketingInput, MarketingOutput, UserEvent, build, run_threads,
};
use flowlab::runtime::{JobConfig, SimConfig, execute, execute_simulated};
use flowlab::time::WATERMARK_MIN;

/// Small inputs spanning the demo rules' 300 s of changes: one event per second.
fn input(events: u64, users: u64, seed: u64, disorder_ms: i64) -> MarketingInput {
    let config = EventsConfig {
        events,
        users,
        events_per_second: 1,
        disorder_ms,
        late_fraction: 0.02,
        straggler_ms_max: 5_000,
        seed,
        start_ms: 0,
    };
    MarketingInput::generated(&config, DEMO_RULES).expect("a valid input")
}

/// The semantics, written directly: rule updates are stamped `at − 1`, events with the
/// watermark before them; elements are taken in stamp order (rules first at equal stamps);
/// before an element of stamp `s`, every decision due at or before `s` is taken with the rules
/// as they are then. A decision of rule `r` triggered at `t` sends a coupon if `r` still exists,
/// at least `at_least` matching events fall in `(t − within, t]`, no `unless` event in
/// `(t − within, t + for]`, and the limit allows it.
fn model(input: &MarketingInput) -> MarketingOutput {
    enum Element {
        Rule(Result<RuleUpdate, flowlab::marketing::RejectedRule>),
        Event(i64, UserEvent),
    }
    let mut elements: Vec<((i64, u8, usize), Element)> = Vec::new();
    let mut rules_max = i64::MIN;
    for (index, (at, line)) in input.rules.iter().enumerate() {
        rules_max = rules_max.max(*at);
        elements.push(((rules_max - 1, 0, index), Element::Rule(validate(line))));
    }
    let mut output = MarketingOutput::default();
    let mut events_max: Option<i64> = None;
    for (index, (time_ms, event)) in input.events.iter().enumerate() {
        let stamp = events_max.map_or(WATERMARK_MIN, |max| max - input.disorder_ms - 1);
        events_max = Some(events_max.map_or(*time_ms, |max| max.max(*time_ms)));
        if *time_ms <= stamp {
            output.late.push((*time_ms, event.clone()));
        } else {
            elements.push(((stamp, 1, index), Element::Event(*time_ms, event.clone())));
        }
    }
    elements.sort_by_key(|(place, _)| *place);

    let mut rules: BTreeMap<String, Rule> = BTreeMap::new();
    let mut history: BTreeMap<String, Vec<(i64, UserEvent)>> = BTreeMap::new();
    // (decision time, user, rule, trigger time)
    let mut waiting: BTreeSet<(i64, String, String, i64)> = BTreeSet::new();
    let mut last_sent: BTreeMap<(String, String), i64> = BTreeMap::new();
    let decide = |up_to: i64,
                  waiting: &mut BTreeSet<(i64, String, String, i64)>,
                  rules: &BTreeMap<String, Rule>,
                  history: &BTreeMap<String, Vec<(i64, UserEvent)>>,
                  last_sent: &mut BTreeMap<(String, String), i64>,
                  coupons: &mut Vec<Coupon>| {
        while let Some(first) = waiting.first().cloned()
            && first.0 <= up_to
        {
            waiting.remove(&first);
            let (_, user, id, trigger) = first;
            let Some(rule) = rules.get(&id) else { continue };
            let seen = &history[&user];
            let from = trigger - rule.within_ms;
            let count = seen.iter().filter(|(t, e)| *t > from && *t <= trigger && rule.when.matches(e)).count();
            let spoiled = rule.unless.as_ref().is_some_and(|(unless, for_ms)| {
                seen.iter().any(|(t, e)| *t > from && *t <= trigger + for_ms && unless.matches(e))
            });
            let allowed = match (last_sent.get(&(user.clone(), id.clone())), rule.limit_ms) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(last), Some(limit)) => trigger >= last + limit,
            };
            if count >= rule.at_least as usize && !spoiled && allowed {
                last_sent.insert((user.clone(), id.clone()), trigger);
                coupons.push(Coupon { user, rule: id, coupon: rule.coupon.clone(), trigger_ms: trigger });
            }
        }
    };
    for ((stamp, ..), element) in elements {
        decide(stamp, &mut waiting, &rules, &history, &mut last_sent, &mut output.coupons);
        match element {
            Element::Rule(Ok(RuleUpdate::Upsert(rule))) => {
                rules.insert(rule.id.clone(), rule);
            }
            Element::Rule(Ok(RuleUpdate::Remove(id))) => {
                rules.remove(&id);
            }
            Element::Rule(Err(rejected)) => output.rejected.push(rejected),
            Element::Event(time_ms, event) => {
                // A user's history reaches back as far as the active rules look from the stamp.
                let horizon = rules.values().map(Rule::horizon_ms).max().unwrap_or(0);
                let seen = history.entry(event.user.clone()).or_default();
                seen.retain(|(t, _)| *t >= stamp.saturating_sub(horizon));
                seen.push((time_ms, event.clone()));
                for (id, rule) in &rules {
                    if rule.when.matches(&event) {
                        waiting.insert((time_ms + rule.wait_ms(), event.user.clone(), id.clone(), time_ms));
                    }
                }
            }
        }
    }
    decide(i64::MAX, &mut waiting, &rules, &history, &mut last_sent, &mut output.coupons);
    output.coupons.sort();
    output.rejected.sort();
    output.late.sort();
    output
}

#[test]
fn the_demo_rules_send_coupons_of_every_kind_and_reject_two_lines() {
    let input = input(1_500, 30, 1, 2_000);
    let (output, _) = run_threads(&input, 2).expect("the job runs");
    assert_eq!(output, model(&input));
    let per_rule = output.coupons_per_rule();
    for rule in ["bookworm", "cart-reminder", "frequent-visitor", "shoe-browser"] {
        assert!(per_rule.get(rule).is_some_and(|&n| n > 0), "no coupon of {rule}: {per_rule:?}");
    }
    assert!(!per_rule.contains_key("typo") && !per_rule.contains_key("never"));
    assert_eq!(output.rejected.iter().map(|r| r.line).collect::<Vec<_>>(), vec![5, 6]);
    assert!(!output.late.is_empty(), "the input has stragglers");
    // Rule changes count from their time: bookworm starts at 60 s, cart reminders end at 300 s.
    assert!(output.coupons.iter().filter(|c| c.rule == "bookworm").all(|c| c.trigger_ms >= 60_000 - 2_000));
    assert!(output.coupons.iter().filter(|c| c.rule == "cart-reminder").all(|c| c.trigger_ms < 300_000));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, ..proptest::prelude::ProptestConfig::default() })]

    /// Any generated input, any parallelism: the job's output is the model's.
    #[test]
    fn the_rule_engine_matches_the_model(
        seed in 0u64..1_000_000,
        users in 1u64..40,
        disorder_ms in 0i64..5_000,
        workers in 1usize..=3,
    ) {
        let input = input(600, users, seed, disorder_ms);
        let (output, _) = run_threads(&input, workers).expect("the job runs");
        proptest::prop_assert_eq!(output, model(&input), "events seed {}, {} users, disorder {} ms, {} workers", seed, users, disorder_ms, workers);
    }
}

#[test]
fn five_hundred_seeds_with_crashes_commit_exactly_the_fault_free_coupons_and_replay() {
    let mut check = MarketingCheck::new(input(400, 25, 3, 2_000), 3);
    check.bounds.crash_probability_max = 0.02;
    let (expected, _) = run_threads(&check.input, 3).expect("the fault-free run");
    assert!(expected.coupons.len() >= 20, "only {} coupons", expected.coupons.len());
    let (mut crashes, mut completed, mut traces) = (0, 0, BTreeSet::new());
    for seed in 0..500 {
        let replay = format!("replay: flowlab sim --job marketing --seed {seed} --events 400 --keys 25 --workers 3");
        let run = check.run(seed).unwrap_or_else(|error| panic!("seed {seed}: {error}; {replay}"));
        assert_eq!(run.output, expected, "seed {seed} committed other coupons; {replay}");
        let again = check.run(seed).unwrap_or_else(|error| panic!("seed {seed}, second run: {error}"));
        assert_eq!(again.simulation.trace_hash(), run.simulation.trace_hash(), "seed {seed} does not replay; {replay}");
        crashes += run.simulation.crashes;
        completed += run.checkpoints_completed();
        traces.insert(run.simulation.trace_hash());
    }
    eprintln!("500 seeds: {crashes} crashes, {completed} checkpoints completed, {} distinct traces", traces.len());
    assert!(crashes >= 200, "only {crashes} crashes in 500 seeds");
    assert_eq!(traces.len(), 500, "two seeds ran the same interleaving");
}

type Sinks = (
    TransactionalCollectSink<Coupon>,
    TransactionalCollectSink<flowlab::marketing::RejectedRule>,
    TransactionalCollectSink<UserEvent>,
);

fn committed(sinks: &Sinks) -> MarketingOutput {
    let mut coupons: Vec<Coupon> = sinks.0.records().into_iter().map(|record| record.value).collect();
    coupons.sort();
    let mut late: Vec<(i64, UserEvent)> =
        sinks.2.records().into_iter().map(|record| (record.time_ms, record.value)).collect();
    late.sort();
    MarketingOutput { coupons, rejected: sinks.1.sorted_values(), late }
}

#[test]
fn a_savepoint_resumes_on_another_parallelism_with_every_coupon_exactly_once() {
    let input = input(800, 30, 5, 2_000);
    let expected = model(&input);
    for (before, after, stop_ms) in [(2, 3, 25), (3, 1, 45)] {
        let store = Arc::new(MemoryStore::default());
        let sinks: Sinks = Default::default();
        let job = {
            let (input, sinks) = (input.clone(), sinks.clone());
            move |env: &Env<'_>| build(env, &input, sinks.0.clone(), sinks.1.clone(), sinks.2.clone())
        };
        let mut checkpoint = CheckpointConfig::new(store.clone());
        checkpoint.interval_ms = 10;
        checkpoint.stop_with_savepoint_after_ms = Some(stop_ms);
        let mut first =
            JobConfig::simulated("marketing", before, 9).with_checkpoints(checkpoint, RestartStrategy::None);
        first.source_batch_max = 16;
        let report =
            execute_simulated(&first, SimConfig { workers: before, seed: 9, ..SimConfig::default() }, job.clone())
                .expect("the first part runs");
        let savepoint =
            report.savepoint.unwrap_or_else(|| panic!("no savepoint: {:?} {:?}", report.checkpoints, report.notes));
        let stopped = committed(&sinks);
        assert!(stopped.coupons.len() < expected.coupons.len(), "{before} -> {after}: stopped after every coupon");
        assert!(stopped.coupons.iter().all(|coupon| expected.coupons.contains(coupon)));

        let mut resume = CheckpointConfig::new(store);
        resume.restore = RestoreFrom::Checkpoint(savepoint);
        let second = JobConfig::threads("marketing", after).with_checkpoints(resume, RestartStrategy::None);
        execute(&second, job).expect("the second part runs");
        assert_eq!(committed(&sinks), expected, "savepoint on {before} workers resumed on {after}");
    }
}

fn flowlab(args: &[&str], dir: &std::path::Path) -> (bool, String) {
    let output =
        Command::new(env!("CARGO_BIN_EXE_flowlab")).args(args).current_dir(dir).output().expect("flowlab runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[test]
fn flowlab_demo_survives_its_crashes_and_runs_on_real_files() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, text) = flowlab(&["demo", "--events", "3000", "--users", "60", "--crash-probability", "0.01"], dir.path());
    assert!(ok, "{text}");
    assert!(text.contains("exactly-once: OK"), "{text}");
    assert!(text.contains("rejected line 5: malformed"), "{text}");
    assert!(!text.contains(" 0 crashes survived"), "{text}");
    let svg = std::fs::read_to_string(dir.path().join("demo-report.svg")).expect("the report");
    assert!(svg.starts_with("<svg") && svg.contains("coupons committed"), "{svg}");

    let (ok, text) =
        flowlab(&["demo", "--real", "--events", "3000", "--users", "60", "--checkpoint-interval", "5ms"], dir.path());
    assert!(ok, "{text}");
    assert!(text.contains("exactly-once: OK — the files committed exactly"), "{text}");
    let coupons = std::fs::read_to_string(dir.path().join("demo-out/coupons.csv")).unwrap();
    assert!(coupons.lines().count() > 10, "{coupons}");
    // Restoring the final checkpoint of that run commits nothing twice.
    let (ok, text) =
        flowlab(&["demo", "--real", "--events", "3000", "--users", "60", "--restore", "latest"], dir.path());
    assert!(ok && text.contains("restoring checkpoint"), "{text}");
    assert!(text.contains("exactly-once: OK"), "{text}");
    assert_eq!(std::fs::read_to_string(dir.path().join("demo-out/coupons.csv")).unwrap(), coupons);

    let (ok, text) = flowlab(
        &["sim", "--job", "marketing", "--seeds", "3", "--events", "300", "--keys", "20", "--check-determinism"],
        dir.path(),
    );
    assert!(ok, "{text}");
    assert!(text.contains("3 seeds, 3 ok, 0 failed"), "{text}");
    let (ok, text) = flowlab(&["sim", "--job", "nothing", "--seeds", "1"], dir.path());
    assert!(!ok && text.contains("built-in jobs: window-count, marketing"), "{text}");
}

#[test]
fn flowlab_demo_real_killed_at_any_moment_resumes_with_exactly_the_fault_free_coupons() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["demo", "--real", "--events", "30000", "--users", "300", "--checkpoint-interval", "5ms"];
    // Kill moments are fractions of an uninterrupted run, which first runs the reference on
    // threads (about half of it), so that they land in the checkpointed part on any machine.
    let started = std::time::Instant::now();
    let (ok, text) = flowlab(&[&args[..], &["--out", "uninterrupted"]].concat(), dir.path());
    assert!(ok, "{text}");
    let whole_ms = started.elapsed().as_millis() as u64;
    let mut mid_run_restores = 0;
    for (round, kill_after_ms) in [whole_ms * 6 / 10, whole_ms * 3 / 4, whole_ms * 9 / 10].into_iter().enumerate() {
        let out = format!("out-{round}");
        let mut child = Command::new(env!("CARGO_BIN_EXE_flowlab"))
            .args(args)
            .args(["--out", &out])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("flowlab starts");
        std::thread::sleep(std::time::Duration::from_millis(kill_after_ms));
        let _ = child.kill();
        let killed = !child.wait().expect("flowlab ends").success();
        // Whether it was killed mid-run or had finished, the restored run ends exactly once.
        let (ok, text) = flowlab(&[&args[..], &["--out", &out, "--restore", "latest"]].concat(), dir.path());
        assert!(ok, "round {round}, killed after {kill_after_ms} ms: {text}");
        assert!(text.contains("exactly-once: OK — the files committed exactly"), "round {round}: {text}");
        mid_run_restores += usize::from(killed && text.contains("restoring checkpoint"));
    }
    // Back-pressure spreads the input over many epochs, so kills land between checkpoints.
    assert!(mid_run_restores > 0, "no kill landed after a checkpoint and before the end");
}
