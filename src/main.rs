//! The `flowlab` command.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use std::sync::Arc;

use flowlab::checkpoint::{CheckpointConfig, CheckpointStatus, FileStore, RestartStrategy, RestoreFrom};
use flowlab::connectors::{BadLinePolicy, GeneratorConfig, generate_events};
use flowlab::error::{Error, Result};
use flowlab::jobs::sim::{Check, FaultBounds, Faults};
use flowlab::jobs::watermarks::{Input, WatermarksJob, WatermarksOutcome, plan_watermarks, run_watermarks};
use flowlab::jobs::window::baseline::run_window_baseline;
use flowlab::jobs::window::{
    Aggregate, WindowJob, WindowSpec, plan_window, render_rows, run_window, run_window_to_file,
};
use flowlab::marketing::events::EventsConfig;
use flowlab::marketing::job::{MarketingCheck, MarketingInput, MarketingOutput, RealFiles, run_real, run_threads};
use flowlab::marketing::rules::{DEMO_RULES, rule_lines};
use flowlab::metrics::MetricsRegistry;
use flowlab::runtime::JobConfig;
use flowlab::time::{WatermarkStrategy, format_duration_ms, format_watermark, parse_duration_ms};

/// flowlab: Flink's checkpoint, state, time and window semantics on timely-dataflow.
#[derive(Parser)]
#[command(name = "flowlab", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The flagship: the real-time rule-based marketing job (dynamic rules, keyed state, timers,
    /// exactly-once coupons) in the simulator with crashes, checked against a fault-free run.
    Demo(DemoArgs),
    /// Measure throughput: `bench window` runs a windowed count per key over generated events,
    /// `bench nexmark --query q5` a Nexmark query, on flowlab and on a plain single-threaded loop
    /// (the limit), and checks they agree.
    Bench(BenchArgs),
    /// Write a generated CSV input (`key,event_time_ms,value`); the same arguments give the same bytes.
    Gen(GenArgs),
    /// Show how watermarks advance on each worker and which events are late.
    Watermarks(WatermarksArgs),
    /// Run one windowed aggregation over a CSV file, with Flink's window semantics.
    Window(WindowArgs),
    /// Print a built-in job's graph as Graphviz DOT.
    Graph(GraphArgs),
    /// Run the built-in window job under the deterministic simulator, one run per seed, and check
    /// each against the threads substrate.
    Sim(SimArgs),
}

#[derive(Args)]
struct BenchArgs {
    /// What to measure: `window` or `nexmark`.
    what: String,
    /// window: tumbling:<size> | sliding:<size>,<slide> | session:<gap>
    #[arg(long, default_value = "tumbling:10s")]
    window: String,
    /// nexmark: the query, q0 | q5 | q7 | q8 | q11 | q12.
    #[arg(long, default_value = "q5")]
    query: String,
    /// nexmark: events per second of event time.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// nexmark: permute events within groups of this many.
    #[arg(long, default_value_t = 1)]
    out_of_order_group: u64,
    /// nexmark: the fraction of events moved back in event time (by up to --delay-max).
    #[arg(long, default_value_t = 0.0)]
    delayed_fraction: f64,
    /// nexmark: how far back a delayed event moves at most, e.g. 3s.
    #[arg(long, default_value = "0s")]
    delay_max: String,
    /// window: distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Events, generated as they are read (window: 1 000 per second of event time).
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// window: bounded disorder of the events, and of the watermark.
    #[arg(long, default_value = "2s")]
    disorder: String,
    /// Generator seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// flowlab's workers.
    #[arg(long, default_value_t = 1)]
    parallelism: usize,
    /// flowlab | baseline | both (flowlab as a fraction of the loop, and a check they agree).
    #[arg(long, default_value = "both")]
    engine: String,
    /// Print JSON lines instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct DemoArgs {
    /// The simulation seed: the same seed replays the same run, crashes included.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Generated events (ignored with --events-file).
    #[arg(long, default_value_t = 20_000)]
    events: u64,
    /// Generated users.
    #[arg(long, default_value_t = 500)]
    users: u64,
    /// Seed of the event generator.
    #[arg(long, default_value_t = 0)]
    events_seed: u64,
    /// Read events from this file instead (CSV `user,kind,category,item,price_cents,time_ms`, or
    /// JSON lines if it ends in .jsonl).
    #[arg(long)]
    events_file: Option<PathBuf>,
    /// The events' bounded disorder (their watermark lags the highest time by this).
    #[arg(long, default_value = "2s")]
    disorder: String,
    /// Rules file (JSON lines of updates); the built-in demo rules without it.
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Workers.
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// Per-step crash probability in the simulator.
    #[arg(long, default_value_t = 0.002)]
    crash_probability: f64,
    /// The most crashes in the run.
    #[arg(long, default_value_t = 4)]
    crashes_max: u32,
    /// Checkpoint interval (virtual time in the simulator, real time with --real).
    #[arg(long, default_value = "50ms")]
    checkpoint_interval: String,
    /// Where the SVG time line of the simulated run goes.
    #[arg(long, default_value = "demo-report.svg")]
    report: PathBuf,
    /// Run on threads with real files in --out instead of the simulator: checkpoints in
    /// <out>/checkpoints, coupons in <out>/coupons.csv; kill it and rerun with --restore latest.
    #[arg(long)]
    real: bool,
    /// The output directory of --real.
    #[arg(long, default_value = "demo-out")]
    out: PathBuf,
    /// With --real: resume from `latest` or a checkpoint id.
    #[arg(long, requires = "real")]
    restore: Option<String>,
}

#[derive(Args)]
struct WindowArgs {
    /// CSV input (`key,event_time_ms,value`, header optional), read in file order by one reader.
    #[arg(long)]
    input: PathBuf,
    /// Output CSV; standard output without it.
    #[arg(long)]
    output: Option<PathBuf>,
    /// tumbling:<size> | sliding:<size>,<slide> | session:<gap> | count:<n>[,<slide>]
    #[arg(long)]
    window: String,
    /// Watermark strategy: `bounded:<duration>` (evaluated after every record) or `monotonous`.
    #[arg(long, default_value = "bounded:2s")]
    watermark: String,
    /// Mark the source idle after this long without records.
    #[arg(long)]
    idle: Option<String>,
    /// Allowed lateness: late elements within it fire the window again.
    #[arg(long, default_value = "0s")]
    lateness: String,
    /// Write the elements too late for every window, as input lines, to this file.
    #[arg(long)]
    late_output: Option<PathBuf>,
    /// Aggregates, in output order: any of count, sum, min, max.
    #[arg(long, default_value = "count,sum")]
    agg: String,
    /// Workers running the keyed window operator.
    #[arg(long, default_value_t = 1)]
    parallelism: usize,
    /// Window offset (tumbling and sliding), e.g. 1h or -30m.
    #[arg(long, default_value = "0s", allow_hyphen_values = true)]
    offset: String,
    /// What to do with lines that do not parse: `fail` or `skip`.
    #[arg(long, default_value = "fail")]
    on_bad_line: String,
    /// With --on-bad-line skip: where skipped lines are written.
    #[arg(long, default_value = "dead-letter.csv")]
    dead_letter: PathBuf,
    /// `flowlab` (the dataflow) or `baseline`: the same job as one plain single-threaded loop
    /// (tumbling windows only), which marks what the dataflow costs.
    #[arg(long, default_value = "flowlab")]
    engine: String,
    #[command(flatten)]
    checkpoints: CheckpointArgs,
}

#[derive(Args, Clone)]
struct CheckpointArgs {
    /// Write checkpoints to this directory (chk-<id>/ each); --output then commits exactly once.
    #[arg(long)]
    checkpoint_dir: Option<PathBuf>,
    /// Processing time between checkpoints.
    #[arg(long, default_value = "1s")]
    checkpoint_interval: String,
    /// Complete checkpoints kept.
    #[arg(long, default_value_t = 3)]
    checkpoints_retained: usize,
    /// Resume from `latest` (the newest complete checkpoint that verifies) or a checkpoint id.
    #[arg(long)]
    restore: Option<String>,
    /// Stop this long after the start with a savepoint (kept until deleted by hand), without
    /// draining open windows; resume it later with --restore <id>, on any --parallelism.
    #[arg(long)]
    stop_with_savepoint_after: Option<String>,
    /// Restart strategy after a failure: none | fixed-delay:<attempts>:<delay> |
    /// exponential-delay:<initial>:<max> | failure-rate:<failures>:<interval>:<delay>.
    #[arg(long, default_value = "none")]
    restart: String,
}

impl CheckpointArgs {
    /// Adds checkpointing to `config` when a directory is given.
    fn apply(&self, config: JobConfig) -> Result<JobConfig> {
        let Some(dir) = &self.checkpoint_dir else {
            if self.restore.is_some() || self.stop_with_savepoint_after.is_some() {
                return Err(Error::Usage(
                    "--restore and --stop-with-savepoint-after need --checkpoint-dir".to_string(),
                ));
            }
            return Ok(config);
        };
        let store = FileStore::new(dir).map_err(|e| Error::Runtime(e.to_string()))?;
        let mut checkpoint = CheckpointConfig::new(Arc::new(store));
        checkpoint.interval_ms = parse_duration_ms(&self.checkpoint_interval)?;
        checkpoint.retain = self.checkpoints_retained;
        checkpoint.stop_with_savepoint_after_ms =
            self.stop_with_savepoint_after.as_deref().map(parse_duration_ms).transpose()?;
        checkpoint.restore = parse_restore(self.restore.as_deref())?;
        Ok(config.with_checkpoints(checkpoint, RestartStrategy::parse(&self.restart)?))
    }
}

#[derive(Args, Clone)]
struct GeneratorArgs {
    /// Number of distinct keys.
    #[arg(long, default_value_t = 100)]
    keys: u64,
    /// Number of events.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Bound on ordinary out-of-orderness, e.g. 2s.
    #[arg(long, default_value = "2s")]
    disorder: String,
    /// Fraction of events that are stragglers, later than the disorder bound.
    #[arg(long, default_value_t = 0.0)]
    late_fraction: f64,
    /// How much later than the bound a straggler can be, e.g. 15s.
    #[arg(long, default_value = "15s")]
    straggler_max: String,
    /// Events per second of event time.
    #[arg(long, default_value_t = 1_000)]
    rate: u64,
    /// RNG seed (ChaCha8).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl GeneratorArgs {
    fn config(&self) -> Result<GeneratorConfig> {
        let config = GeneratorConfig {
            keys: self.keys,
            events: self.events,
            events_per_second: self.rate,
            disorder_ms: parse_duration_ms(&self.disorder)?,
            late_fraction: self.late_fraction,
            straggler_ms_max: parse_duration_ms(&self.straggler_max)?,
            seed: self.seed,
            start_ms: 0,
        };
        config.validate()?;
        Ok(config)
    }
}

#[derive(Args)]
struct GenArgs {
    #[command(flatten)]
    generator: GeneratorArgs,
    /// Output file; standard output without it.
    #[arg(long)]
    output: Option<PathBuf>,
}

#[derive(Args)]
struct WatermarksArgs {
    /// CSV input (`key,event_time_ms,value`, header optional). Without --input or --socket, events are generated.
    #[arg(long, conflicts_with = "socket")]
    input: Option<PathBuf>,
    /// Read lines from a TCP server instead, e.g. localhost:9999 (try `nc -lk 9999`).
    #[arg(long)]
    socket: Option<String>,
    /// Watermark strategy: `bounded:<duration>` or `monotonous`.
    #[arg(long, default_value = "bounded:2s")]
    watermark: String,
    /// Mark a source instance idle after this long without records, e.g. 5s.
    #[arg(long)]
    idle: Option<String>,
    /// Number of workers.
    #[arg(long, default_value_t = 1)]
    parallelism: usize,
    /// Draw event time (dots) against the watermark (line) into this SVG file.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Write the late events, as input lines, to this file.
    #[arg(long)]
    late_output: Option<PathBuf>,
    /// What to do with lines that do not parse: `fail` (stop with an error) or `skip`.
    #[arg(long, default_value = "fail")]
    on_bad_line: String,
    /// With --on-bad-line skip: where skipped lines are written.
    #[arg(long, default_value = "dead-letter.csv")]
    dead_letter: PathBuf,
    /// Generator settings, used without --input and --socket.
    #[command(flatten)]
    generator: GeneratorArgs,
}

#[derive(Args)]
struct GraphArgs {
    /// Which job: `watermarks` or `window`.
    #[arg(long, default_value = "watermarks")]
    job: String,
    /// Number of workers shown in the graph.
    #[arg(long, default_value_t = 2)]
    parallelism: usize,
}

#[derive(Args, Clone)]
struct SimArgs {
    /// The built-in job to simulate.
    #[arg(long, default_value = "window-count")]
    job: String,
    /// Run this one seed.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Seeds to run: a count `N` (seeds 0..N) or a range `A..B` (B excluded).
    #[arg(long, default_value = "20")]
    seeds: String,
    /// Number of simulated workers.
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// Events the generated input has.
    #[arg(long, default_value_t = 10_000)]
    events: u64,
    /// Distinct keys in the generated input.
    #[arg(long, default_value_t = 100)]
    keys: u64,
    /// Which faults: none | delay (messages, clogs, stalls) | crash | all.
    #[arg(long, default_value = "all")]
    faults: String,
    /// Swarm bound: each seed delays messages by up to a drawn maximum at most this.
    #[arg(long, default_value = "30ms")]
    delay_max: String,
    /// Swarm bound: the highest per-message clog probability a seed may draw.
    #[arg(long, default_value_t = 0.05)]
    clog_max: f64,
    /// Swarm bound: the highest per-step stall probability a seed may draw.
    #[arg(long, default_value_t = 0.02)]
    stall_max: f64,
    /// Swarm bound: the highest per-step crash probability a seed may draw.
    #[arg(long, default_value_t = 0.003)]
    crash_max: f64,
    /// The most crashes in one run.
    #[arg(long, default_value_t = 4)]
    crashes_max: u32,
    /// Virtual time between checkpoints.
    #[arg(long, default_value = "50ms")]
    checkpoint_interval: String,
    /// Run every seed twice and fail if the two runs differ in trace hash or output.
    #[arg(long)]
    check_determinism: bool,
    /// Write the trace of the (single) seed as JSON lines to this file.
    #[arg(long)]
    trace: Option<PathBuf>,
}

/// The `flowlab` binary allocates with mimalloc, not the system's allocator.
///
/// Generating Nexmark events allocates a few strings per event, a source batch at a time, and
/// the next operator frees them a batch at a time. glibc's per-thread cache holds seven chunks
/// per size, so most of those went through its arenas (`malloc_consolidate`, `_int_free`): a
/// sixth of a q5 run. On two workers, freeing an exchange buffer the other worker allocated
/// takes that worker's arena lock, and the workers waited on each other in `futex`. With
/// mimalloc, q5 takes 15 % less CPU on one worker and two workers reach about 1.7× one
/// (1.5-1.6× before). Window runs gain a few percent.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `arena_eager_commit` option (its number in `mi_option_t`, the same in mimalloc 2
/// and 3).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Has mimalloc commit its arena memory as it is used rather than all at once. With eager
/// commit, memory it purges stays counted in the process's resident set, and a CSV window job
/// peaked at 40 MB instead of 19, at no measurable speed. The option must be set before the
/// first allocation reserves an arena, and the Rust runtime allocates before `main`, so this
/// runs as an ELF constructor.
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static COMMIT_MEMORY_LAZILY: extern "C" fn() = commit_memory_lazily;

#[cfg(target_os = "linux")]
extern "C" fn commit_memory_lazily() {
    // SAFETY: sets an option mimalloc reads when it reserves an arena; any value is valid.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) }
}

fn main() -> ExitCode {
    // Like every Unix tool, end quietly when the reader of our output goes away
    // (`flowlab gen | head`), instead of panicking on the failed write.
    // SAFETY: called once, first thing, before any thread exists; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo_command(&args),
        Command::Bench(args) => bench_command(&args),
        Command::Gen(args) => gen_command(&args),
        Command::Watermarks(args) => watermarks_command(&args),
        Command::Window(args) => window_command(&args),
        Command::Graph(args) => graph_command(&args),
        Command::Sim(args) => sim_command(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn bench_command(args: &BenchArgs) -> Result<()> {
    use flowlab::jobs::bench::{Engine, NexmarkBench, WindowBench, bench_nexmark, bench_window};
    use flowlab::nexmark::{NexmarkConfig, Query};
    let engines = match args.engine.as_str() {
        "both" => vec![Engine::Baseline, Engine::Flowlab],
        one => vec![Engine::parse(one)?],
    };
    // What is measured, as the report line names it, and how to run it on one engine.
    type RunOn = Box<dyn Fn(Engine, &(dyn Fn(u64) + Sync)) -> Result<flowlab::jobs::bench::BenchReport>>;
    let (what, run): (String, RunOn) = match args.what.as_str() {
        "window" => {
            let bench = WindowBench {
                window: WindowSpec::parse(&args.window)?,
                input: GeneratorConfig {
                    keys: args.keys,
                    events: args.events,
                    disorder_ms: parse_duration_ms(&args.disorder)?,
                    seed: args.seed,
                    ..GeneratorConfig::default()
                },
                parallelism: args.parallelism,
            };
            (
                format!("{} over {} keys", args.window, args.keys),
                Box::new(move |engine, progress| bench_window(&bench, engine, progress)),
            )
        }
        "nexmark" => {
            let bench = NexmarkBench {
                query: Query::parse(&args.query)?,
                input: NexmarkConfig {
                    events: args.events,
                    rate_per_second: args.rate,
                    seed: args.seed,
                    out_of_order_group_size: args.out_of_order_group,
                    delayed_fraction: args.delayed_fraction,
                    delay_ms_max: parse_duration_ms(&args.delay_max)?,
                    ..NexmarkConfig::default()
                },
                parallelism: args.parallelism,
            };
            bench.input.validate()?;
            (
                format!("nexmark {}", bench.query.name()),
                Box::new(move |engine, progress| bench_nexmark(&bench, engine, progress)),
            )
        }
        other => {
            return Err(Error::Usage(format!("flowlab bench measures `window` or `nexmark`, not {other:?}")));
        }
    };
    let mut reports = Vec::new();
    for engine in engines {
        let bar = progress_bar(Some(args.events), &format!("{engine:?}"));
        let report = run(engine, &|done| bar.set_position(done))?;
        bar.finish_and_clear();
        if args.json {
            println!("{}", serde_json::to_string(&report).map_err(|e| Error::Runtime(e.to_string()))?);
        } else {
            println!(
                "{:<8} {what}, {} events, {} worker(s): {:.2} s ({:.2} CPU-s), {:.2} M events/s, {:.2} M events/s per core, {} results, {} late, peak memory {}, digest {:016x}",
                format!("{engine:?}").to_lowercase(),
                report.events,
                report.parallelism,
                report.seconds,
                report.cpu_seconds,
                report.events_per_second / 1e6,
                report.events_per_second_per_core / 1e6,
                report.results,
                report.late,
                report.peak_memory_bytes.map_or("unknown".to_string(), |bytes| format!("{} MB", bytes / 1_000_000)),
                report.digest
            );
        }
        reports.push(report);
    }
    if let [baseline, flowlab] = &reports[..] {
        let processing_time = args.what == "nexmark" && Query::parse(&args.query)? == Query::Q12;
        if baseline.digest != flowlab.digest && !processing_time {
            return Err(Error::Runtime(format!(
                "flowlab's output (digest {:016x}) differs from the baseline's ({:016x})",
                flowlab.digest, baseline.digest
            )));
        }
        if !args.json {
            println!(
                "{}; flowlab per core is {:.2} of the plain loop",
                if processing_time { "processing-time windows: outputs not compared" } else { "same output" },
                flowlab.events_per_second_per_core / baseline.events_per_second_per_core
            );
        }
    }
    Ok(())
}

/// `--restore latest|<id>`, or a fresh start without it.
fn parse_restore(restore: Option<&str>) -> Result<RestoreFrom> {
    Ok(match restore {
        None => RestoreFrom::Nothing,
        Some("latest") => RestoreFrom::Latest,
        Some(id) => RestoreFrom::Checkpoint(
            id.parse().map_err(|_| Error::Usage(format!("--restore takes `latest` or a checkpoint id, not {id:?}")))?,
        ),
    })
}

fn demo_command(args: &DemoArgs) -> Result<()> {
    let disorder_ms = parse_duration_ms(&args.disorder)?;
    let rules_text = match &args.rules {
        Some(path) => std::fs::read_to_string(path).map_err(|e| Error::io("cannot read rules", path, e))?,
        None => DEMO_RULES.to_string(),
    };
    let input = match &args.events_file {
        Some(path) => MarketingInput {
            events: Arc::new(flowlab::marketing::events::read_file(path)?),
            rules: Arc::new(rule_lines(&rules_text)),
            disorder_ms,
        },
        None => {
            let config = EventsConfig {
                events: args.events,
                users: args.users,
                seed: args.events_seed,
                disorder_ms,
                ..EventsConfig::default()
            };
            MarketingInput::generated(&config, &rules_text)?
        }
    };
    let checkpoint_interval_ms = parse_duration_ms(&args.checkpoint_interval)?;
    let events = input.events.len() as u64;
    println!(
        "flowlab demo: real-time marketing over {events} user events and {} rule updates, {} workers",
        input.rules.len(),
        args.workers
    );
    let spinner = |message: &str| {
        let bar = ProgressBar::new_spinner().with_message(message.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    };
    let bar = spinner("reference run on threads, without faults or checkpoints");
    let (expected, _) = run_threads(&input, args.workers)?;
    bar.finish_and_clear();
    let (output, verdict_of) = if args.real {
        std::fs::create_dir_all(&args.out).map_err(|e| Error::io("cannot create", &args.out, e))?;
        let store = FileStore::new(args.out.join("checkpoints")).map_err(|e| Error::Runtime(e.to_string()))?;
        let mut checkpoint = CheckpointConfig::new(Arc::new(store));
        checkpoint.interval_ms = checkpoint_interval_ms;
        checkpoint.restore = parse_restore(args.restore.as_deref())?;
        let config = JobConfig::threads("marketing", args.workers)
            .with_checkpoints(checkpoint, RestartStrategy::FixedDelay { attempts: 3, delay_ms: 100 });
        let files = RealFiles::in_dir(&args.out);
        let (output, report) = with_progress_of(&config.metrics, "user events", Some(events), "reading", || {
            run_real(&input, &config, &files)
        })?;
        for note in &report.notes {
            println!("{note}");
        }
        let completed = report.checkpoints.iter().filter(|c| c.status == CheckpointStatus::Completed).count();
        println!(
            "threads: {completed} checkpoints completed in {}, {} restarts",
            args.out.join("checkpoints").display(),
            report.restarts
        );
        println!("files: {}, {}, {}", files.coupons.display(), files.rejected.display(), files.late.display());
        (output, "the files")
    } else {
        let mut check = MarketingCheck::new(input.clone(), args.workers);
        check.swarm = false;
        check.keep_trace = true;
        check.checkpoint_interval_ms = checkpoint_interval_ms;
        check.bounds.crash_probability_max = args.crash_probability;
        check.bounds.crashes_max = args.crashes_max;
        let metrics = check.metrics.clone();
        let what = "simulating (the count restarts after each crash)";
        let run = with_progress_of(&metrics, "user events", Some(events), what, || check.run(args.seed))?;
        let simulation = &run.simulation;
        println!(
            "simulation (seed {}): {} crashes survived, {} restarts, {}/{} checkpoints completed, {} steps, {} virtual ms, trace {:016x}",
            args.seed,
            simulation.crashes,
            run.restarts,
            run.checkpoints_completed(),
            run.checkpoints.len(),
            simulation.steps,
            simulation.end_ms,
            simulation.trace_hash()
        );
        let title = format!(
            "flowlab demo, seed {}: {} coupons, {} crashes, {} checkpoints",
            args.seed,
            run.output.coupons.len(),
            simulation.crashes,
            run.checkpoints_completed()
        );
        write_text(&args.report, &flowlab::marketing::report::svg(&title, &run))?;
        println!("report: {} (coupons committed over time, checkpoints, crashes)", args.report.display());
        (run.output, "the simulated run with crashes")
    };
    print_demo_summary(events, &input, &expected, &output);
    if output == expected {
        println!(
            "exactly-once: OK — {verdict_of} committed exactly the {} coupons of the fault-free run (digest {:016x})",
            output.coupons.len(),
            output.digest()
        );
        Ok(())
    } else {
        let missing = expected.coupons.iter().filter(|c| !output.coupons.contains(c)).count();
        let extra = output.coupons.len() + missing - expected.coupons.len();
        Err(Error::Runtime(format!(
            "exactly-once violated: {verdict_of} committed {} coupons, the fault-free run {} ({missing} missing, {extra} extra)",
            output.coupons.len(),
            expected.coupons.len()
        )))
    }
}

fn print_demo_summary(events: u64, input: &MarketingInput, expected: &MarketingOutput, output: &MarketingOutput) {
    println!("events: {events} ({} too late, on a side output)", output.late.len());
    println!(
        "rules: {} updates, {} accepted, {} rejected",
        input.rules.len(),
        input.rules.len() - output.rejected.len(),
        output.rejected.len()
    );
    for rejected in &output.rejected {
        println!("  rejected line {}: {}", rejected.line, rejected.reason);
    }
    println!("coupons per rule (fault-free run / this run):");
    let (want, got) = (expected.coupons_per_rule(), output.coupons_per_rule());
    for rule in want.keys().chain(got.keys()).collect::<std::collections::BTreeSet<_>>() {
        println!("  {rule:<20} {:>6} / {:>6}", want.get(rule).unwrap_or(&0), got.get(rule).unwrap_or(&0));
    }
}

fn progress_bar(length: Option<u64>, what: &str) -> ProgressBar {
    let bar = match length {
        Some(length) => ProgressBar::new(length).with_style(
            ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} events ({per_sec}, eta {eta})")
                .expect("valid template"),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg} {pos} events ({per_sec})").expect("valid template"),
        ),
    };
    bar.set_message(what.to_string());
    bar
}

fn gen_command(args: &GenArgs) -> Result<()> {
    let config = args.generator.config()?;
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(BufWriter::with_capacity(
            1 << 16,
            File::create(path).map_err(|e| Error::io("cannot create", path, e))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let bar = args.output.as_ref().map(|_| progress_bar(Some(config.events), "generating"));
    let context = args.output.as_ref().map_or("stdout".to_string(), |p| p.display().to_string());
    for (time_ms, event) in generate_events(&config) {
        writeln!(out, "{},{},{}", event.key, time_ms, event.value)
            .map_err(|e| Error::io("cannot write", &context, e))?;
        if let Some(bar) = &bar
            && event.line % 65_536 == 0
        {
            bar.set_position(event.line);
        }
    }
    out.flush().map_err(|e| Error::io("cannot write", &context, e))?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
        eprintln!("wrote {} events to {context}", config.events);
    }
    Ok(())
}

fn bad_line_policy(choice: &str, dead_letter: &std::path::Path) -> Result<BadLinePolicy> {
    match choice {
        "fail" => Ok(BadLinePolicy::Fail),
        "skip" => Ok(BadLinePolicy::Skip { dead_letter: dead_letter.to_path_buf() }),
        other => Err(Error::Usage(format!("--on-bad-line must be `fail` or `skip`, not {other:?}"))),
    }
}

fn strategy(watermark: &str, idle: Option<&String>) -> Result<WatermarkStrategy> {
    let strategy = WatermarkStrategy::parse(watermark)?;
    Ok(match idle {
        Some(idle) => strategy.with_idleness(parse_duration_ms(idle)?),
        None => strategy,
    })
}

fn signed_duration_ms(text: &str) -> Result<i64> {
    match text.trim().strip_prefix('-') {
        Some(magnitude) => Ok(-parse_duration_ms(magnitude)?),
        None => parse_duration_ms(text),
    }
}

fn write_text(path: &std::path::Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::io("cannot write", path, e))
}

fn window_job(args: &WindowArgs) -> Result<WindowJob> {
    Ok(WindowJob {
        input: args.input.clone(),
        window: WindowSpec::parse(&args.window)?,
        strategy: strategy(&args.watermark, args.idle.as_ref())?,
        lateness_ms: parse_duration_ms(&args.lateness)?,
        offset_ms: signed_duration_ms(&args.offset)?,
        bad_lines: bad_line_policy(&args.on_bad_line, &args.dead_letter)?,
    })
}

fn window_command(args: &WindowArgs) -> Result<()> {
    let job = window_job(args)?;
    let aggregates = Aggregate::parse_list(&args.agg)?;
    match args.engine.as_str() {
        "flowlab" => {}
        "baseline" => return window_baseline_command(args, &job, &aggregates),
        other => return Err(Error::Usage(format!("--engine must be `flowlab` or `baseline`, not {other:?}"))),
    }
    if args.checkpoints.checkpoint_dir.is_some() && args.output.is_none() {
        // Refused before the store creates the directory.
        return Err(Error::Usage("--checkpoint-dir needs --output: exactly-once output goes to a file".to_string()));
    }
    let config = args.checkpoints.apply(JobConfig::threads("window", args.parallelism))?;
    let (rows, late_lines) = match &args.output {
        Some(path) => {
            let (rows, late, report) =
                with_progress(&config.metrics, None, || run_window_to_file(&job, &config, path, &aggregates))?;
            for note in &report.notes {
                eprintln!("{note}");
            }
            if config.checkpoint.is_some() {
                let completed = report.checkpoints.iter().filter(|c| c.status == CheckpointStatus::Completed).count();
                eprintln!("{completed} checkpoints completed, {} restarts", report.restarts);
                if let Some(savepoint) = report.savepoint {
                    eprintln!(
                        "stopped with savepoint {savepoint}; resume with the same command and --restore {savepoint}"
                    );
                }
            }
            (rows, late)
        }
        None => {
            let outcome = with_progress(&config.metrics, None, || run_window(&job, &config))?;
            let rows = outcome.rows(job.is_count_window());
            print!("{}", render_rows(&rows, &aggregates));
            (rows.len() as u64, outcome.late_lines)
        }
    };
    if let Some(path) = &args.late_output {
        write_lines(path, &late_lines)?;
    }
    let destination =
        args.late_output.as_ref().map_or("counted".to_string(), |p| format!("written to {}", p.display()));
    // After a restore, earlier runs wrote part of the rows; the late lines come from the committed file.
    let this_run = if args.checkpoints.restore.is_some() { " by this run" } else { "" };
    eprintln!(
        "{rows} window firings{this_run}; {} elements too late for every window ({destination})",
        late_lines.len()
    );
    Ok(())
}

/// Writes `lines` to `path`, each ended by a line end.
fn write_lines(path: &std::path::Path, lines: &[String]) -> Result<()> {
    let mut text = lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    write_text(path, &text)
}

/// `flowlab window --engine baseline`: the job as one plain loop, for measuring the engine by.
fn window_baseline_command(args: &WindowArgs, job: &WindowJob, aggregates: &[Aggregate]) -> Result<()> {
    let checkpoints = &args.checkpoints;
    if args.parallelism != 1
        || checkpoints.checkpoint_dir.is_some()
        || checkpoints.restore.is_some()
        || checkpoints.stop_with_savepoint_after.is_some()
    {
        return Err(Error::Usage(
            "--engine baseline is one plain loop: no --parallelism, checkpoints, --restore or savepoints".to_string(),
        ));
    }
    let outcome = match &args.output {
        Some(path) => {
            let file = File::create(path).map_err(|e| Error::io("cannot create output", path, e))?;
            run_window_baseline(job, aggregates, &mut BufWriter::with_capacity(1 << 20, file))?
        }
        None => run_window_baseline(job, aggregates, &mut std::io::stdout().lock())?,
    };
    if let Some(path) = &args.late_output {
        write_lines(path, &outcome.late_lines)?;
    }
    eprintln!(
        "{} window firings (baseline loop); {} elements too late for every window",
        outcome.rows,
        outcome.late_lines.len()
    );
    Ok(())
}

fn watermarks_job(args: &WatermarksArgs) -> Result<WatermarksJob> {
    let strategy = strategy(&args.watermark, args.idle.as_ref())?;
    let input = match (&args.input, &args.socket) {
        (Some(path), _) => Input::Csv(path.clone()),
        (None, Some(address)) => Input::Socket(address.clone()),
        (None, None) => Input::Generated(args.generator.config()?),
    };
    let bad_lines = match args.on_bad_line.as_str() {
        "fail" => BadLinePolicy::Fail,
        "skip" => BadLinePolicy::Skip { dead_letter: args.dead_letter.clone() },
        other => {
            return Err(Error::Usage(format!("--on-bad-line must be `fail` or `skip`, not {other:?}")));
        }
    };
    Ok(WatermarksJob {
        input,
        strategy,
        bad_lines,
        late_output: args.late_output.clone(),
        keep_points: args.svg.is_some(),
    })
}

/// Runs `run` while a progress spinner shows how many records the sources have read.
fn with_progress<T>(metrics: &MetricsRegistry, total: Option<u64>, run: impl FnOnce() -> Result<T>) -> Result<T> {
    with_progress_of(metrics, "source:", total, "reading", run)
}

/// Runs `run` while a bar shows the records read by the operators whose names start with `sources`.
fn with_progress_of<T>(
    metrics: &MetricsRegistry,
    sources: &str,
    total: Option<u64>,
    what: &str,
    run: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let bar = progress_bar(total, what);
    let (done, finished) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|scope| {
        let bar = &bar;
        scope.spawn(move || {
            // Dropping `done` wakes this at once: the run is not kept waiting for the next tick.
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                finished.recv_timeout(Duration::from_millis(100))
            {
                bar.set_position(metrics.total(sources, |m| m.records_out));
            }
        });
        let result = run();
        drop(done);
        bar.finish_and_clear();
        result
    })
}

fn watermarks_command(args: &WatermarksArgs) -> Result<()> {
    let job = watermarks_job(args)?;
    let config = JobConfig::threads("watermarks", args.parallelism);
    let total = match &job.input {
        Input::Generated(generator) => Some(generator.events),
        _ => None,
    };
    let outcome = with_progress(&config.metrics, total, || run_watermarks(&job, &config))?;
    print_watermarks(args, &job, &outcome);
    if let Some(path) = &args.svg {
        let title = format!("watermark {} over {} events", job.strategy, outcome.points.len());
        let svg = flowlab::viz::watermark_svg(&title, &outcome.points);
        std::fs::write(path, svg).map_err(|e| Error::io("cannot write", path, e))?;
        println!("picture: {} (dots: events, red: late, blue line: watermark)", path.display());
    }
    Ok(())
}

fn print_watermarks(args: &WatermarksArgs, job: &WatermarksJob, outcome: &WatermarksOutcome) {
    let late = outcome.late.len() as u64;
    let total = late + outcome.on_time_total();
    println!("watermark strategy: {}", job.strategy);
    println!("events: {total} read, {} on time, {late} late", outcome.on_time_total());
    for worker in 0..args.parallelism {
        let steps = outcome.trace.steps_of(worker);
        let records: u64 = steps.last().map_or(0, |s| s.records_seen);
        let last_finite = steps.iter().rev().find(|s| s.watermark_ms != i64::MAX).map_or(i64::MIN, |s| s.watermark_ms);
        println!(
            "worker {worker}: {records} on-time records counted; frontier watermark advanced {} times, to {} before the end of input, then {}",
            steps.len().saturating_sub(1),
            format_watermark(last_finite),
            format_watermark(steps.last().map_or(i64::MIN, |s| s.watermark_ms)),
        );
        let stride = steps.len().div_ceil(6).max(1);
        let samples: Vec<String> = steps
            .iter()
            .step_by(stride)
            .map(|s| format!("{}@{}", format_watermark(s.watermark_ms), s.records_seen))
            .collect();
        println!("  samples (watermark@records seen): {}", samples.join("  "));
    }
    let destination = match &args.late_output {
        Some(path) => format!("the late side output, written to {}", path.display()),
        None => "the late side output (counted; --late-output FILE writes them)".to_string(),
    };
    println!(
        "late events: {late} of {total} ({:.3}%) went to {destination}",
        if total == 0 { 0.0 } else { late as f64 * 100.0 / total as f64 }
    );
    for record in outcome.late.iter().take(5) {
        println!(
            "  line {}: {},{},{} arrived behind watermark {} ({} late)",
            record.value.line,
            record.value.key,
            record.time_ms,
            record.value.value,
            record.watermark_ms,
            format_duration_ms(record.watermark_ms - record.time_ms + 1)
        );
    }
    let bad = outcome.report.metrics.total("source:", |m| m.records_bad);
    if bad > 0 {
        println!("bad lines: {bad} skipped, written to {}", args.dead_letter.display());
    }
    println!();
    print!("{}", outcome.report.metrics.render());
}

fn graph_command(args: &GraphArgs) -> Result<()> {
    match args.job.as_str() {
        "watermarks" => {
            let job = WatermarksJob {
                input: Input::Csv(PathBuf::from("events.csv")),
                strategy: WatermarkStrategy::bounded(2_000),
                bad_lines: BadLinePolicy::Fail,
                late_output: Some(PathBuf::from("late.csv")),
                keep_points: false,
            };
            print!("{}", plan_watermarks(&job, args.parallelism).to_dot());
            Ok(())
        }
        "window" => {
            let job = WindowJob {
                input: PathBuf::from("events.csv"),
                window: WindowSpec::Sliding { size_ms: 10_000, slide_ms: 5_000 },
                strategy: WatermarkStrategy::bounded(2_000),
                lateness_ms: 0,
                offset_ms: 0,
                bad_lines: BadLinePolicy::Fail,
            };
            print!("{}", plan_window(&job, args.parallelism)?.to_dot());
            Ok(())
        }
        other => Err(Error::Usage(format!("unknown job {other:?}; built-in jobs: watermarks, window"))),
    }
}

/// Parses a count `N` (seeds `0..N`) or a range `A..B` (B excluded).
fn parse_seeds(text: &str) -> Result<std::ops::Range<u64>> {
    let bad = || Error::Usage(format!("bad --seeds {text:?}: write a count such as 1000, or a range such as 20..40"));
    let number = |part: &str| part.trim().parse::<u64>().map_err(|_| bad());
    let range = match text.split_once("..") {
        Some((start, end)) => number(start)?..number(end)?,
        None => 0..number(text)?,
    };
    if range.is_empty() {
        return Err(bad());
    }
    Ok(range)
}

impl SimArgs {
    /// The command that runs exactly `seed` with these settings.
    fn replay_command(&self, seed: u64) -> String {
        let mut command = format!(
            "flowlab sim --job {} --seed {seed} --workers {} --events {} --keys {} --faults {} --delay-max {} --clog-max {} --stall-max {} --crash-max {} --crashes-max {} --checkpoint-interval {}",
            self.job,
            self.workers,
            self.events,
            self.keys,
            self.faults,
            self.delay_max,
            self.clog_max,
            self.stall_max,
            self.crash_max,
            self.crashes_max,
            self.checkpoint_interval,
        );
        if self.check_determinism {
            command.push_str(" --check-determinism");
        }
        command
    }

    fn check(&self) -> Result<SimJob> {
        let faults = Faults::parse(&self.faults)?;
        let bounds = FaultBounds {
            delay_ms_max: parse_duration_ms(&self.delay_max)?,
            clog_probability_max: self.clog_max,
            stall_probability_max: self.stall_max,
            crash_probability_max: self.crash_max,
            crashes_max: self.crashes_max,
        };
        let checkpoint_interval_ms = parse_duration_ms(&self.checkpoint_interval)?;
        match self.job.as_str() {
            "window-count" => {
                let mut check = Check::window_count(self.events, self.keys, self.workers);
                check.input.validate()?;
                check.faults = faults;
                check.bounds = bounds;
                check.checkpoint_interval_ms = checkpoint_interval_ms;
                check.keep_trace = self.trace.is_some();
                Ok(SimJob::WindowCount(check))
            }
            "marketing" => {
                // About 400 s of event time, whatever the count: the demo rules change within it.
                let events_per_second = (self.events / 400).max(1);
                let events = EventsConfig {
                    events: self.events,
                    users: self.keys,
                    events_per_second,
                    ..EventsConfig::default()
                };
                let mut check = MarketingCheck::new(MarketingInput::generated(&events, DEMO_RULES)?, self.workers);
                check.faults = faults;
                check.bounds = bounds;
                check.checkpoint_interval_ms = checkpoint_interval_ms;
                check.keep_trace = self.trace.is_some();
                Ok(SimJob::Marketing(Box::new(check)))
            }
            other => Err(Error::Usage(format!("unknown job {other:?}; built-in jobs: window-count, marketing"))),
        }
    }
}

/// A built-in job `flowlab sim` checks.
enum SimJob {
    WindowCount(Check),
    Marketing(Box<MarketingCheck>),
}

/// What `flowlab sim` reports of one seed's run.
struct SimSeedRun {
    digest: u64,
    simulation: flowlab_sim::SimReport,
    restarts: u32,
    checkpoints_completed: usize,
    checkpoints_total: usize,
}

impl SimJob {
    /// The digest of the job's output run on threads without faults.
    fn expected_digest(&self) -> Result<u64> {
        match self {
            SimJob::WindowCount(check) => Ok(check.expected()?.digest()),
            SimJob::Marketing(check) => Ok(run_threads(&check.input, check.workers)?.0.digest()),
        }
    }

    fn run(&self, seed: u64) -> Result<SimSeedRun> {
        match self {
            SimJob::WindowCount(check) => {
                let run = check.run(seed)?;
                Ok(SimSeedRun {
                    digest: run.committed.digest(),
                    restarts: run.restarts,
                    checkpoints_completed: run.checkpoints_completed(),
                    checkpoints_total: run.checkpoints.len(),
                    simulation: run.simulation,
                })
            }
            SimJob::Marketing(check) => {
                let run = check.run(seed)?;
                Ok(SimSeedRun {
                    digest: run.output.digest(),
                    restarts: run.restarts,
                    checkpoints_completed: run.checkpoints_completed(),
                    checkpoints_total: run.checkpoints.len(),
                    simulation: run.simulation,
                })
            }
        }
    }
}

/// One seed's line and verdict (empty when it passed).
fn sim_seed(check: &SimJob, args: &SimArgs, expected: u64, seed: u64) -> (String, Vec<String>) {
    let mut verdict = Vec::new();
    let run = match check.run(seed) {
        Ok(run) => run,
        Err(error) => return (format!("seed {seed:>6}  FAIL: {error}"), vec![error.to_string()]),
    };
    let digest = run.digest;
    let hash = run.simulation.trace_hash();
    if digest != expected {
        verdict.push(format!("committed output {digest:016x} differs from the fault-free output"));
    }
    if args.check_determinism {
        match check.run(seed) {
            Ok(again) if again.simulation.trace_hash() != hash => {
                verdict.push(format!("second run's trace hash {:016x} differs", again.simulation.trace_hash()))
            }
            Ok(again) if again.digest != digest => {
                verdict.push(format!("second run's output {:016x} differs", again.digest))
            }
            Ok(_) => {}
            Err(error) => verdict.push(format!("second run failed: {error}")),
        }
    }
    if let Some(path) = &args.trace {
        let written = File::create(path)
            .and_then(|file| {
                let mut out = BufWriter::new(file);
                run.simulation.trace.write_jsonl(&mut out)?;
                out.flush()
            })
            .map_err(|e| Error::io("cannot write trace", path, e));
        if let Err(error) = written {
            verdict.push(error.to_string());
        }
    }
    let status = if verdict.is_empty() { "ok".to_string() } else { format!("FAIL: {}", verdict.join("; ")) };
    let line = format!(
        "seed {seed:>6}  trace {hash:016x}  steps {:>7}  crashes {}  restarts {}  checkpoints {}/{}  {status}",
        run.simulation.steps, run.simulation.crashes, run.restarts, run.checkpoints_completed, run.checkpoints_total,
    );
    (line, verdict)
}

fn sim_command(args: &SimArgs) -> Result<()> {
    let seeds = match args.seed {
        Some(seed) => seed..seed.checked_add(1).ok_or_else(|| Error::Usage("--seed is too large".to_string()))?,
        None => parse_seeds(&args.seeds)?,
    };
    if args.trace.is_some() && seeds.end - seeds.start != 1 {
        return Err(Error::Usage("--trace writes the trace of one seed: use it with --seed".to_string()));
    }
    let check = args.check()?;
    let expected = check.expected_digest()?;
    println!(
        "{} over {} events, {} workers, faults {}; fault-free output digest {expected:016x}",
        args.job, args.events, args.workers, args.faults
    );
    let total = seeds.end - seeds.start;
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} seeds ({per_sec}, eta {eta}) {msg}")
            .expect("valid template"),
    );
    let started = std::time::Instant::now();
    let mut failed = Vec::new();
    for seed in seeds {
        let (line, verdict) = sim_seed(&check, args, expected, seed);
        // `suspend`, not `println`: the lines must appear even when the bar is hidden (no terminal).
        bar.suspend(|| {
            println!("{line}");
            if !verdict.is_empty() {
                println!("  replay: {}", args.replay_command(seed));
            }
        });
        if !verdict.is_empty() {
            failed.push(seed);
        }
        bar.set_message(format!("{} failed", failed.len()));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    let runs = total * if args.check_determinism { 2 } else { 1 };
    println!(
        "{total} seeds, {} ok, {} failed; {runs} simulated runs in {seconds:.2} s: {:.1} runs/s",
        total - failed.len() as u64,
        failed.len(),
        runs as f64 / seconds,
    );
    match failed.first() {
        None => Ok(()),
        Some(first) => Err(Error::Runtime(format!(
            "{} of {total} seeds failed; replay the first with: {}",
            failed.len(),
            args.replay_command(*first)
        ))),
    }
}
