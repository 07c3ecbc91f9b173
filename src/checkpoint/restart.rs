//! Restart strategies: what the job manager does when a running job fails.
//!
//! A checkpoint makes recovery *possible*; a restart strategy decides whether recovery is
//! *attempted*, and when. Flink ("Task Failure Recovery") offers four, and so does flowlab:
//!
//! - **`none`** — never restart. The first failure fails the job. Right for batch-like jobs and
//!   tests, where a failure should surface at once rather than be papered over.
//! - **`fixed-delay:<attempts>:<delay>`** — restart up to `attempts` times, always waiting `delay`.
//!   The simplest budget: it tolerates a few transient faults (a lost connection, a preempted
//!   machine) and then gives up, however far apart those faults were.
//! - **`exponential-delay:<initial>:<max>[:<multiplier>…]`** — restart (by default without limit),
//!   waiting `initial`, then `initial·multiplier`, `initial·multiplier²`, … capped at `max`. A job
//!   that keeps crashing against a broken dependency backs off instead of hammering it, yet a job
//!   that has run smoothly for `reset-after` since its last restart starts again from `initial`.
//!   An optional jitter spreads the restarts of many jobs that failed together. Flink ≥ 1.19 uses
//!   it by default when checkpointing is enabled, and so does [`RestartStrategy::default`].
//! - **`failure-rate:<max-failures>:<interval>:<delay>`** — restart after `delay` as long as no
//!   window of length `interval` holds more than `max-failures` failures. It budgets a *rate*, not
//!   a total: a long-running job may fail a thousand times over a year, but not five times in a
//!   minute.
//!
//! A [`RestartTracker`] applies one strategy to one job's failures. The caller reports each
//! failure with [`RestartTracker::on_failure`], passing the failure's processing time from the
//! job's clock (virtual in the simulator), and gets a [`RestartDecision`]. Every decision is kept
//! in [`RestartTracker::history`] for the metrics. Jitter is drawn from a ChaCha8 generator seeded
//! by the caller, so a simulated run makes the same decisions every time.
//!
//! ```
//! use flowlab::checkpoint::{RestartDecision, RestartStrategy, RestartTracker};
//!
//! // Two restarts, one second apart; the third failure fails the job.
//! let strategy = RestartStrategy::parse("fixed-delay:2:1s")?;
//! assert_eq!(strategy.to_string(), "fixed-delay:2:1s");
//! let mut tracker = RestartTracker::new(strategy, 7);
//! assert_eq!(tracker.on_failure(10_000), RestartDecision::RestartAfterMs(1_000));
//! assert_eq!(tracker.on_failure(20_000), RestartDecision::RestartAfterMs(1_000));
//! assert_eq!(tracker.on_failure(30_000), RestartDecision::GiveUp);
//! assert_eq!(tracker.restarts(), 2);
//!
//! // Exponential backoff: 100ms, 200ms, 400ms, then capped at 500ms.
//! let mut tracker = RestartTracker::new(RestartStrategy::parse("exponential-delay:100ms:500ms:2")?, 7);
//! let delays: Vec<_> = [0, 1_000, 2_000, 3_000].iter().map(|&t| tracker.on_failure(t)).collect();
//! assert_eq!(delays, [100, 200, 400, 500].map(RestartDecision::RestartAfterMs));
//! # Ok::<(), flowlab::Error>(())
//! ```
//!
//! # Where flowlab differs from Flink
//!
//! - One call to [`RestartTracker::on_failure`] is one job-level failure. Flink ≥ 1.19's
//!   exponential-delay merges failures that arrive before the pending restart (several tasks of one
//!   incident failing together) into one attempt; flowlab's caller reports each incident once.
//! - Exponential-delay's `attempts` caps the restarts over the tracker's whole life. Flink's
//!   `attempts-before-reset-backoff` is reset together with the backoff.
//! - Jitter is drawn from a seeded ChaCha8 generator, not `ThreadLocalRandom`, and defaults to 0
//!   (Flink: 0.1) so that runs are reproducible unless jitter is asked for.
//! - [`RestartDecision::GiveUp`] is final: once the job has failed, further failures reported to
//!   the same tracker get `GiveUp` too. (In Flink a failed job reports no further failures.)

use std::collections::VecDeque;
use std::fmt;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::time::{format_duration_ms, parse_duration_ms};

/// Flink's default initial backoff of exponential-delay: 1 s.
const DEFAULT_INITIAL_MS: i64 = 1_000;
/// Flink ≥ 1.19's default maximum backoff of exponential-delay: 1 min.
const DEFAULT_MAX_MS: i64 = 60_000;
/// Flink ≥ 1.19's default backoff multiplier of exponential-delay.
const DEFAULT_MULTIPLIER: f64 = 1.5;
/// Flink's default reset-backoff threshold of exponential-delay: 1 h.
const DEFAULT_RESET_AFTER_MS: i64 = 3_600_000;
/// flowlab's default jitter: none, for reproducible runs (Flink: 0.1).
const DEFAULT_JITTER: f64 = 0.0;
/// Unlimited attempts (Flink's default, `Integer.MAX_VALUE`).
const UNLIMITED: u32 = u32::MAX;
/// Upper bound on an exponential backoff before clamping, so that the jitter arithmetic cannot
/// overflow (2^62 ms is about 146 million years).
const BASE_CAP: f64 = 4_611_686_018_427_387_904.0;

/// The forms [`RestartStrategy::parse`] accepts, quoted in its error messages.
const ACCEPTED: &str = "accepted restart strategies: `none`; `fixed-delay:<attempts>:<delay>` (as in \
fixed-delay:3:1s); `exponential-delay[:<initial>:<max>[:<multiplier>[:<reset-after>[:<jitter>[:<attempts>]]]]]` \
(as in exponential-delay:100ms:10s or exponential-delay:100ms:10s:2); \
`failure-rate:<max-failures>:<interval>:<delay>` (as in failure-rate:3:1min:1s); \
durations are whole numbers with a unit: ms, s, m or min, h";

/// What to do after a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartDecision {
    /// Restart after this many milliseconds.
    RestartAfterMs(i64),
    /// Give up: the job fails.
    GiveUp,
}

impl fmt::Display for RestartDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartDecision::RestartAfterMs(delay) => write!(f, "restart after {}", format_duration_ms(*delay)),
            RestartDecision::GiveUp => write!(f, "give up"),
        }
    }
}

/// One failure and what the tracker decided about it: an entry of [`RestartTracker::history`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartRecord {
    /// The processing time of the failure, from the job's clock, in milliseconds.
    pub failure_ms: i64,
    /// The decision taken for it.
    pub decision: RestartDecision,
}

/// Flink's restart strategies. See the [module documentation](self) for what each is for, and
/// [`RestartStrategy::parse`] for the command-line syntax, which [`Display`](fmt::Display) writes
/// back.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum RestartStrategy {
    /// Never restart: the first failure fails the job.
    None,
    /// Restart at most `attempts` times, each after `delay_ms`; the next failure fails the job.
    FixedDelay {
        /// How many restarts are allowed in total (0: none).
        attempts: u32,
        /// The wait before each restart, in milliseconds (at least 0).
        delay_ms: i64,
    },
    /// Restart after a backoff that grows exponentially, resetting after a quiet spell.
    ///
    /// The `k`-th restart since the last reset (counting from 0) waits
    /// `clamp(⌊initial_ms · multiplier^k⌋ + j, initial_ms, max_ms)`, where the jitter `j` is drawn
    /// uniformly from `[-n, n]`, `n = ⌊⌊initial_ms · multiplier^k⌋ · jitter⌋` (Flink's formula, so a
    /// delay never exceeds `max_ms` nor falls below `initial_ms`). When a failure comes at least
    /// `reset_after_ms` after the restart the previous decision scheduled (failure time + delay),
    /// `k` goes back to 0, as in Flink ≥ 1.19.
    ExponentialDelay {
        /// The first backoff, in milliseconds (at least 1).
        initial_ms: i64,
        /// The largest backoff, in milliseconds (at least `initial_ms`).
        max_ms: i64,
        /// What the backoff is multiplied by after each restart (greater than 1).
        multiplier: f64,
        /// How long the job must run without failure after a restart for the backoff to go back
        /// to `initial_ms`, in milliseconds (at least 1).
        reset_after_ms: i64,
        /// The jitter as a fraction of the backoff, in `[0, 1]`; 0 for none.
        jitter: f64,
        /// How many restarts are allowed over the tracker's whole life (at least 1); `u32::MAX`
        /// means unlimited. Unlike Flink's `attempts-before-reset-backoff`, it is not reset with
        /// the backoff.
        attempts: u32,
    },
    /// Restart after `delay_ms` unless more than `max_failures` failures fall within `interval_ms`.
    ///
    /// Flink's rule exactly: the failure at `t` fails the job when the window `[t - interval_ms, t]`
    /// (both ends included) holds more than `max_failures` failures, counting `t` itself.
    FailureRate {
        /// How many failures a window of `interval_ms` may hold (at least 1).
        max_failures: u32,
        /// The length of the window, in milliseconds (at least 1).
        interval_ms: i64,
        /// The wait before each restart, in milliseconds (at least 0).
        delay_ms: i64,
    },
}

impl Default for RestartStrategy {
    /// Flink ≥ 1.19's default when checkpointing is enabled: exponential-delay with initial backoff
    /// 1 s, maximum 1 min, multiplier 1.5, reset after 1 h and unlimited attempts — except that the
    /// jitter is 0 (Flink: 0.1), so that runs are reproducible. Written `exponential-delay:1s:1m`.
    fn default() -> Self {
        Self::exponential(DEFAULT_INITIAL_MS, DEFAULT_MAX_MS)
    }
}

impl RestartStrategy {
    /// Exponential-delay from `initial_ms` to `max_ms`, with the other fields at their defaults
    /// (multiplier 1.5, reset after 1 h, no jitter, unlimited attempts).
    pub fn exponential(initial_ms: i64, max_ms: i64) -> Self {
        RestartStrategy::ExponentialDelay {
            initial_ms,
            max_ms,
            multiplier: DEFAULT_MULTIPLIER,
            reset_after_ms: DEFAULT_RESET_AFTER_MS,
            jitter: DEFAULT_JITTER,
            attempts: UNLIMITED,
        }
    }

    /// Parses the command-line syntax:
    ///
    /// - `none` (also `off`, `disable`);
    /// - `fixed-delay:<attempts>:<delay>`, as in `fixed-delay:3:1s`;
    /// - `exponential-delay[:<initial>:<max>[:<multiplier>[:<reset-after>[:<jitter>[:<attempts>]]]]]`,
    ///   as in `exponential-delay:100ms:10s` or `exponential-delay:100ms:10s:2`; omitted fields take
    ///   the [defaults](RestartStrategy::default) (`attempts` may be written `unlimited`);
    /// - `failure-rate:<max-failures>:<interval>:<delay>`, as in `failure-rate:3:1min:1s`.
    ///
    /// Durations are read by [`parse_duration_ms`] (`500ms`, `10s`, `2m` or `2min`, `1h`). Flink's
    /// unhyphenated names (`fixeddelay`, `exponentialdelay`, `failurerate`) are accepted too. The
    /// values must pass [`RestartStrategy::validate`]. Errors are [`Error::Usage`], listing the
    /// accepted forms.
    pub fn parse(text: &str) -> Result<RestartStrategy, Error> {
        let usage = |why: String| Error::Usage(format!("bad restart strategy {text:?}: {why}; {ACCEPTED}"));
        let fields: Vec<&str> = text.trim().split(':').map(str::trim).collect();
        let name = fields[0].to_ascii_lowercase();
        let args = &fields[1..];
        let duration = |field: &str, what: &str| {
            parse_duration_ms(field).map_err(|error| usage(format!("the {what} is not a duration ({error})")))
        };
        let count = |field: &str, what: &str| {
            field.parse::<u32>().map_err(|_| usage(format!("the {what} {field:?} is not a whole number")))
        };
        let arity = |expected: &str| usage(format!("`{name}` takes {expected}, not {}", args.len()));
        let strategy = match name.as_str() {
            "none" | "off" | "disable" => match args {
                [] => RestartStrategy::None,
                _ => return Err(arity("no fields")),
            },
            "fixed-delay" | "fixeddelay" => match args {
                [attempts, delay] => RestartStrategy::FixedDelay {
                    attempts: count(attempts, "number of attempts")?,
                    delay_ms: duration(delay, "delay")?,
                },
                _ => return Err(arity("2 fields (attempts and delay)")),
            },
            "exponential-delay" | "exponentialdelay" => {
                if args.len() == 1 || args.len() > 6 {
                    return Err(arity("0, or 2 to 6 fields"));
                }
                let mut strategy = RestartStrategy::default();
                if let RestartStrategy::ExponentialDelay {
                    initial_ms,
                    max_ms,
                    multiplier,
                    reset_after_ms,
                    jitter,
                    attempts,
                } = &mut strategy
                {
                    if let [initial, max, ..] = args {
                        *initial_ms = duration(initial, "initial backoff")?;
                        *max_ms = duration(max, "maximum backoff")?;
                    }
                    if let Some(field) = args.get(2) {
                        *multiplier = parse_fraction(field)
                            .ok_or_else(|| usage(format!("the multiplier {field:?} is not a number")))?;
                    }
                    if let Some(field) = args.get(3) {
                        *reset_after_ms = duration(field, "reset-after threshold")?;
                    }
                    if let Some(field) = args.get(4) {
                        *jitter = parse_fraction(field)
                            .ok_or_else(|| usage(format!("the jitter {field:?} is not a number")))?;
                    }
                    if let Some(field) = args.get(5) {
                        *attempts = match field.to_ascii_lowercase().as_str() {
                            "unlimited" => UNLIMITED,
                            _ => count(field, "number of attempts")?,
                        };
                    }
                }
                strategy
            }
            "failure-rate" | "failurerate" => match args {
                [max_failures, interval, delay] => RestartStrategy::FailureRate {
                    max_failures: count(max_failures, "maximum number of failures")?,
                    interval_ms: duration(interval, "interval")?,
                    delay_ms: duration(delay, "delay")?,
                },
                _ => return Err(arity("3 fields (max-failures, interval and delay)")),
            },
            _ => return Err(usage(format!("unknown strategy `{name}`"))),
        };
        strategy.validate().map_err(|error| match error {
            Error::Usage(why) => usage(why),
            other => other,
        })?;
        Ok(strategy)
    }

    /// Checks the values against Flink's preconditions: delays at least 0; exponential-delay's
    /// `initial_ms` at least 1 and at most `max_ms`, `multiplier` greater than 1, `reset_after_ms`
    /// at least 1, `jitter` in `[0, 1]` and `attempts` at least 1; failure-rate's `max_failures`
    /// and `interval_ms` at least 1. Errors are [`Error::Usage`] saying which value is wrong.
    ///
    /// [`RestartTracker::new`] does not insist on this: it clamps out-of-range values instead.
    pub fn validate(&self) -> Result<(), Error> {
        let fail = |why: &str| Err(Error::Usage(why.to_string()));
        match *self {
            RestartStrategy::None => Ok(()),
            RestartStrategy::FixedDelay { delay_ms, .. } if delay_ms < 0 => fail("the delay must be at least 0"),
            RestartStrategy::FixedDelay { .. } => Ok(()),
            RestartStrategy::ExponentialDelay { initial_ms, max_ms, multiplier, reset_after_ms, jitter, attempts } => {
                if initial_ms < 1 {
                    fail("the initial backoff must be at least 1ms")
                } else if max_ms < initial_ms {
                    fail("the maximum backoff must not be less than the initial backoff")
                } else if !(multiplier > 1.0 && multiplier.is_finite()) {
                    fail("the multiplier must be a finite number greater than 1")
                } else if reset_after_ms < 1 {
                    fail("the reset-after threshold must be at least 1ms")
                } else if !(0.0..=1.0).contains(&jitter) {
                    fail("the jitter must be between 0 and 1")
                } else if attempts < 1 {
                    fail("the number of attempts must be at least 1")
                } else {
                    Ok(())
                }
            }
            RestartStrategy::FailureRate { max_failures, interval_ms, delay_ms } => {
                if max_failures < 1 {
                    fail("the maximum number of failures must be at least 1")
                } else if interval_ms < 1 {
                    fail("the interval must be at least 1ms")
                } else if delay_ms < 0 {
                    fail("the delay must be at least 0")
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// Reads a multiplier or jitter: a finite decimal number (no `inf` or `NaN`).
fn parse_fraction(field: &str) -> Option<f64> {
    field.parse::<f64>().ok().filter(|value| value.is_finite())
}

impl fmt::Display for RestartStrategy {
    /// Writes the syntax [`RestartStrategy::parse`] reads, so that `parse(s.to_string()) == s`.
    /// Exponential-delay's optional fields are written up to the last one that differs from its
    /// default.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RestartStrategy::None => write!(f, "none"),
            RestartStrategy::FixedDelay { attempts, delay_ms } => {
                write!(f, "fixed-delay:{attempts}:{}", format_duration_ms(delay_ms))
            }
            RestartStrategy::ExponentialDelay { initial_ms, max_ms, multiplier, reset_after_ms, jitter, attempts } => {
                write!(f, "exponential-delay:{}:{}", format_duration_ms(initial_ms), format_duration_ms(max_ms))?;
                let optional = [
                    (multiplier == DEFAULT_MULTIPLIER, multiplier.to_string()),
                    (reset_after_ms == DEFAULT_RESET_AFTER_MS, format_duration_ms(reset_after_ms)),
                    (jitter == DEFAULT_JITTER, jitter.to_string()),
                    (
                        attempts == UNLIMITED,
                        if attempts == UNLIMITED { "unlimited".into() } else { attempts.to_string() },
                    ),
                ];
                let shown = optional.iter().rposition(|(is_default, _)| !is_default).map_or(0, |last| last + 1);
                for (_, field) in &optional[..shown] {
                    write!(f, ":{field}")?;
                }
                Ok(())
            }
            RestartStrategy::FailureRate { max_failures, interval_ms, delay_ms } => {
                write!(
                    f,
                    "failure-rate:{max_failures}:{}:{}",
                    format_duration_ms(interval_ms),
                    format_duration_ms(delay_ms)
                )
            }
        }
    }
}

/// Applies a [`RestartStrategy`] to one job's failures, remembering what it decided.
///
/// Report each failure with [`on_failure`](RestartTracker::on_failure), in order, with
/// non-decreasing times. The tracker needs no notice of the restart itself: like Flink, the
/// exponential-delay reset is measured from the restart the previous decision scheduled (failure
/// time + delay), not from when the job was actually running again.
#[derive(Clone, Debug)]
pub struct RestartTracker {
    /// The strategy, as given.
    strategy: RestartStrategy,
    /// The source of jitter, seeded by the caller.
    rng: ChaCha8Rng,
    /// How many restarts have been granted.
    restarts: u32,
    /// Whether a failure has been answered with [`RestartDecision::GiveUp`].
    gave_up: bool,
    /// Exponential-delay: restarts since the backoff was last reset (the exponent `k`).
    backoff_step: u32,
    /// Exponential-delay: when the last granted restart was scheduled to happen.
    scheduled_restart_ms: Option<i64>,
    /// Failure-rate: the times of the last `max_failures + 1` failures, oldest first.
    recent_failures: VecDeque<i64>,
    /// Every failure and its decision.
    history: Vec<RestartRecord>,
}

impl RestartTracker {
    /// A tracker for `strategy`, drawing jitter from a ChaCha8 generator seeded with `seed`.
    ///
    /// The strategy is not [validated](RestartStrategy::validate); out-of-range values are
    /// clamped so that every decision is defined: negative delays count as 0, a jitter outside
    /// `[0, 1]` (or NaN) as the nearest bound (0 for NaN), a multiplier below 1 (or NaN) as 1, a
    /// negative initial backoff as 0 and a maximum below the initial backoff as the initial backoff.
    pub fn new(strategy: RestartStrategy, seed: u64) -> Self {
        RestartTracker {
            strategy,
            rng: ChaCha8Rng::seed_from_u64(seed),
            restarts: 0,
            gave_up: false,
            backoff_step: 0,
            scheduled_restart_ms: None,
            recent_failures: VecDeque::new(),
            history: Vec::new(),
        }
    }

    /// Reports a failure at processing time `now_ms` (the job's clock) and decides what to do.
    ///
    /// Once a failure has been answered with [`RestartDecision::GiveUp`], every later one is too.
    pub fn on_failure(&mut self, now_ms: i64) -> RestartDecision {
        let decision = if self.gave_up { RestartDecision::GiveUp } else { self.decide(now_ms) };
        match decision {
            RestartDecision::RestartAfterMs(_) => self.restarts = self.restarts.saturating_add(1),
            RestartDecision::GiveUp => self.gave_up = true,
        }
        self.history.push(RestartRecord { failure_ms: now_ms, decision });
        decision
    }

    /// How many restarts have been granted so far.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// Whether the tracker has given up, failing the job.
    pub fn gave_up(&self) -> bool {
        self.gave_up
    }

    /// Every failure reported so far, oldest first, with its decision.
    pub fn history(&self) -> &[RestartRecord] {
        &self.history
    }

    /// The strategy being applied.
    pub fn strategy(&self) -> &RestartStrategy {
        &self.strategy
    }

    /// The decision for a failure at `now_ms`, before any give-up.
    fn decide(&mut self, now_ms: i64) -> RestartDecision {
        match self.strategy {
            RestartStrategy::None => RestartDecision::GiveUp,
            RestartStrategy::FixedDelay { attempts, delay_ms } => {
                // Flink: the n-th failure may restart when n <= attempts.
                if self.restarts < attempts {
                    RestartDecision::RestartAfterMs(delay_ms.max(0))
                } else {
                    RestartDecision::GiveUp
                }
            }
            RestartStrategy::ExponentialDelay { initial_ms, max_ms, multiplier, reset_after_ms, jitter, attempts } => {
                if attempts != UNLIMITED && self.restarts >= attempts {
                    return RestartDecision::GiveUp;
                }
                if let Some(scheduled) = self.scheduled_restart_ms
                    && now_ms.saturating_sub(scheduled) >= reset_after_ms
                {
                    self.backoff_step = 0;
                }
                let initial = initial_ms.max(0);
                let max = max_ms.max(initial);
                let multiplier = if multiplier >= 1.0 { multiplier } else { 1.0 };
                let jitter = if jitter >= 0.0 { jitter.min(1.0) } else { 0.0 };
                // Truncating casts, as Flink's `(long)`: NaN becomes 0, overflow saturates.
                let base = (initial as f64 * multiplier.powf(f64::from(self.backoff_step))).min(BASE_CAP) as i64;
                let jittered = if jitter > 0.0 {
                    let spread = (base as f64 * jitter) as i64;
                    base.saturating_add(self.rng.random_range(-spread..=spread))
                } else {
                    base
                };
                let delay = jittered.clamp(initial, max);
                self.backoff_step = self.backoff_step.saturating_add(1);
                self.scheduled_restart_ms = Some(now_ms.saturating_add(delay));
                RestartDecision::RestartAfterMs(delay)
            }
            RestartStrategy::FailureRate { max_failures, interval_ms, delay_ms } => {
                // Flink's queue: keep the last max_failures + 1 failures; with that many, the job
                // fails when the oldest lies within interval_ms of this one.
                let window = u64::from(max_failures) + 1;
                self.recent_failures.push_back(now_ms);
                if self.recent_failures.len() as u64 > window {
                    self.recent_failures.pop_front();
                }
                let full = self.recent_failures.len() as u64 == window;
                match self.recent_failures.front() {
                    Some(&oldest) if full && now_ms.saturating_sub(oldest) <= interval_ms => RestartDecision::GiveUp,
                    _ => RestartDecision::RestartAfterMs(delay_ms.max(0)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::RestartDecision::{GiveUp, RestartAfterMs};
    use super::*;

    fn decisions(strategy: RestartStrategy, seed: u64, times: &[i64]) -> Vec<RestartDecision> {
        let mut tracker = RestartTracker::new(strategy, seed);
        times.iter().map(|&t| tracker.on_failure(t)).collect()
    }

    fn exponential(initial_ms: i64, max_ms: i64, multiplier: f64, reset_after_ms: i64) -> RestartStrategy {
        RestartStrategy::ExponentialDelay {
            initial_ms,
            max_ms,
            multiplier,
            reset_after_ms,
            jitter: 0.0,
            attempts: UNLIMITED,
        }
    }

    #[test]
    fn none_gives_up_at_once() {
        assert_eq!(decisions(RestartStrategy::None, 0, &[5, 10]), [GiveUp, GiveUp]);
        let mut tracker = RestartTracker::new(RestartStrategy::None, 0);
        tracker.on_failure(5);
        assert_eq!(tracker.restarts(), 0);
        assert!(tracker.gave_up());
    }

    #[test]
    fn fixed_delay_restarts_attempts_times() {
        let strategy = RestartStrategy::FixedDelay { attempts: 2, delay_ms: 500 };
        assert_eq!(
            decisions(strategy, 0, &[0, 1_000, 1_000_000, 2_000_000]),
            [RestartAfterMs(500), RestartAfterMs(500), GiveUp, GiveUp]
        );
        let never = RestartStrategy::FixedDelay { attempts: 0, delay_ms: 500 };
        assert_eq!(decisions(never, 0, &[0]), [GiveUp]);
    }

    #[test]
    fn exponential_grows_caps_and_resets() {
        // initial 100, ×2, max 1000, reset after 10 s of running since the scheduled restart.
        let strategy = exponential(100, 1_000, 2.0, 10_000);
        let times = [0, 1_000, 2_000, 3_000, 4_000, 5_000, 6_000 + 10_000 - 1, 40_000, 41_000];
        // Scheduled restarts: 100, 1200, 2400, 3800, 5000, 6000; the failure at 15 999 is 9 999
        // after 6000 (no reset); 40 000 is ≥ 10 000 after 16 999 (reset).
        let expected = [100, 200, 400, 800, 1_000, 1_000, 1_000, 100, 200].map(RestartAfterMs);
        assert_eq!(decisions(strategy, 0, &times), expected);

        // The threshold is inclusive: exactly reset_after_ms after the scheduled restart resets.
        let strategy = exponential(100, 1_000, 2.0, 10_000);
        assert_eq!(decisions(strategy, 0, &[0, 10_100]), [RestartAfterMs(100), RestartAfterMs(100)]);
        assert_eq!(decisions(strategy, 0, &[0, 10_099]), [RestartAfterMs(100), RestartAfterMs(200)]);
    }

    #[test]
    fn exponential_truncates_like_flink() {
        let strategy = exponential(1_000, 60_000, 1.5, 3_600_000);
        let times: Vec<i64> = (0..6).map(|i| i * 100_000).collect();
        let expected = [1_000, 1_500, 2_250, 3_375, 5_062, 7_593].map(RestartAfterMs);
        assert_eq!(decisions(strategy, 0, &times), expected);
    }

    #[test]
    fn exponential_attempts_cap_the_whole_life() {
        let strategy = RestartStrategy::ExponentialDelay {
            initial_ms: 100,
            max_ms: 1_000,
            multiplier: 2.0,
            reset_after_ms: 1_000,
            jitter: 0.0,
            attempts: 3,
        };
        // Every gap resets the backoff, but not the attempt count (unlike Flink).
        let times = [0, 1_000_000, 2_000_000, 3_000_000, 4_000_000];
        let expected = [RestartAfterMs(100), RestartAfterMs(100), RestartAfterMs(100), GiveUp, GiveUp];
        assert_eq!(decisions(strategy, 0, &times), expected);
    }

    #[test]
    fn exponential_jitter_is_seeded_and_bounded() {
        let strategy = RestartStrategy::ExponentialDelay {
            initial_ms: 1_000,
            max_ms: 20_000,
            multiplier: 2.0,
            reset_after_ms: 3_600_000,
            jitter: 0.5,
            attempts: UNLIMITED,
        };
        let times: Vec<i64> = (0..20).map(|i| i * 1_000).collect();
        let first = decisions(strategy, 11, &times);
        assert_eq!(first, decisions(strategy, 11, &times));
        assert_ne!(first, decisions(strategy, 12, &times));
        for (k, decision) in first.iter().enumerate() {
            let RestartAfterMs(delay) = *decision else { panic!("gave up at {k}") };
            let base = 1_000.0 * 2f64.powi(k as i32);
            assert!((1_000..=20_000).contains(&delay), "delay {delay} out of bounds");
            assert!(delay as f64 >= (base * 0.5).min(20_000.0) && delay as f64 <= base * 1.5, "delay {delay}");
        }
    }

    #[test]
    fn failure_rate_follows_flink() {
        // Flink's own test: 3 failures at one instant restart, a 4th gives up.
        let strategy = RestartStrategy::FailureRate { max_failures: 3, interval_ms: 10_000, delay_ms: 0 };
        assert_eq!(
            decisions(strategy, 0, &[0, 0, 0, 0]),
            [RestartAfterMs(0), RestartAfterMs(0), RestartAfterMs(0), GiveUp]
        );

        let strategy = RestartStrategy::FailureRate { max_failures: 2, interval_ms: 1_000, delay_ms: 50 };
        // [0, 1000] holds 0, 400 and 1000: three failures, more than two.
        assert_eq!(decisions(strategy, 0, &[0, 400, 1_000]), [RestartAfterMs(50), RestartAfterMs(50), GiveUp]);
        // [1, 1001] holds 400 and 1001; [300, 1300] holds 400, 1001 and 1300. Then it stays failed.
        assert_eq!(
            decisions(strategy, 0, &[0, 400, 1_001, 1_300, 100_000]),
            [RestartAfterMs(50), RestartAfterMs(50), RestartAfterMs(50), GiveUp, GiveUp]
        );
        // Slow failures never exhaust it.
        let times: Vec<i64> = (0..100).map(|i| i * 501).collect();
        assert!(decisions(strategy, 0, &times).iter().all(|d| *d == RestartAfterMs(50)));
    }

    #[test]
    fn history_records_every_failure() {
        let mut tracker = RestartTracker::new(RestartStrategy::FixedDelay { attempts: 1, delay_ms: 10 }, 0);
        tracker.on_failure(3);
        tracker.on_failure(8);
        assert_eq!(
            tracker.history(),
            [
                RestartRecord { failure_ms: 3, decision: RestartAfterMs(10) },
                RestartRecord { failure_ms: 8, decision: GiveUp },
            ]
        );
        assert_eq!(tracker.restarts(), 1);
        assert_eq!(RestartAfterMs(1_000).to_string(), "restart after 1s");
        assert_eq!(GiveUp.to_string(), "give up");
    }

    #[test]
    fn out_of_range_values_are_clamped() {
        let strategy = RestartStrategy::ExponentialDelay {
            initial_ms: -5,
            max_ms: -10,
            multiplier: f64::NAN,
            reset_after_ms: 0,
            jitter: f64::NAN,
            attempts: UNLIMITED,
        };
        assert!(strategy.validate().is_err());
        assert_eq!(decisions(strategy, 0, &[0, 1]), [RestartAfterMs(0), RestartAfterMs(0)]);
        let strategy = RestartStrategy::FixedDelay { attempts: 1, delay_ms: -4 };
        assert_eq!(decisions(strategy, 0, &[0]), [RestartAfterMs(0)]);
    }

    #[test]
    fn parses_each_form() {
        let parse = |text: &str| RestartStrategy::parse(text).unwrap();
        assert_eq!(parse("none"), RestartStrategy::None);
        assert_eq!(parse(" OFF "), RestartStrategy::None);
        assert_eq!(parse("fixed-delay:3:1s"), RestartStrategy::FixedDelay { attempts: 3, delay_ms: 1_000 });
        assert_eq!(parse("fixeddelay:0:0ms"), RestartStrategy::FixedDelay { attempts: 0, delay_ms: 0 });
        assert_eq!(parse("exponential-delay:100ms:10s"), RestartStrategy::exponential(100, 10_000));
        assert_eq!(parse("exponential-delay"), RestartStrategy::default());
        assert_eq!(
            parse("exponential-delay:100ms:10s:2:5m:0.25:7"),
            RestartStrategy::ExponentialDelay {
                initial_ms: 100,
                max_ms: 10_000,
                multiplier: 2.0,
                reset_after_ms: 300_000,
                jitter: 0.25,
                attempts: 7,
            }
        );
        assert_eq!(parse("exponential-delay:1s:1m:1.5:1h:0:unlimited"), RestartStrategy::default());
        assert_eq!(
            parse("failure-rate:3:1min:1s"),
            RestartStrategy::FailureRate { max_failures: 3, interval_ms: 60_000, delay_ms: 1_000 }
        );
    }

    #[test]
    fn displays_the_syntax() {
        assert_eq!(RestartStrategy::default().to_string(), "exponential-delay:1s:1m");
        assert_eq!(
            RestartStrategy::parse("exponential-delay:100ms:10s:2").unwrap().to_string(),
            "exponential-delay:100ms:10s:2"
        );
        assert_eq!(
            RestartStrategy::parse("exponential-delay:100ms:10s:1.5:1h:0:4").unwrap().to_string(),
            "exponential-delay:100ms:10s:1.5:1h:0:4"
        );
        assert_eq!(RestartStrategy::parse("failure-rate:3:1min:1s").unwrap().to_string(), "failure-rate:3:1m:1s");
        assert_eq!(RestartStrategy::None.to_string(), "none");
    }

    #[test]
    fn rejects_bad_text_with_the_accepted_forms() {
        for text in [
            "",
            "sometimes",
            "none:1",
            "fixed-delay:3",
            "fixed-delay:three:1s",
            "fixed-delay:3:1",
            "fixed-delay:-1:1s",
            "exponential-delay:1s",
            "exponential-delay:0ms:1s",
            "exponential-delay:2s:1s",
            "exponential-delay:1s:2s:1",
            "exponential-delay:1s:2s:inf",
            "exponential-delay:1s:2s:2:0ms",
            "exponential-delay:1s:2s:2:1h:1.5",
            "exponential-delay:1s:2s:2:1h:0.1:0",
            "exponential-delay:1s:2s:2:1h:0.1:3:x",
            "failure-rate:0:1min:1s",
            "failure-rate:3:0ms:1s",
            "failure-rate:3:1min",
        ] {
            match RestartStrategy::parse(text) {
                Err(Error::Usage(message)) => {
                    assert!(message.contains("fixed-delay:<attempts>:<delay>"), "{text:?}: {message}");
                    assert!(message.contains(&format!("{text:?}")), "{text:?}: {message}");
                }
                other => panic!("{text:?} gave {other:?}"),
            }
        }
    }

    fn arb_duration() -> impl Strategy<Value = i64> {
        (0i64..100_000, prop::sample::select(vec![1i64, 1_000, 60_000, 3_600_000])).prop_map(|(n, unit)| n * unit)
    }

    fn arb_strategy() -> impl Strategy<Value = RestartStrategy> {
        prop_oneof![
            Just(RestartStrategy::None),
            (any::<u32>(), arb_duration())
                .prop_map(|(attempts, delay_ms)| RestartStrategy::FixedDelay { attempts, delay_ms }),
            (
                arb_duration(),
                arb_duration(),
                prop_oneof![Just(DEFAULT_MULTIPLIER), Just(2.0), 1.0f64..100.0],
                arb_duration(),
                prop_oneof![Just(0.0), Just(1.0), 0.0f64..=1.0],
                prop_oneof![Just(UNLIMITED), 1..UNLIMITED],
            )
                .prop_filter("multiplier > 1", |fields| fields.2 > 1.0)
                .prop_map(|(initial, extra, multiplier, reset, jitter, attempts)| {
                    RestartStrategy::ExponentialDelay {
                        initial_ms: initial + 1,
                        max_ms: initial + 1 + extra,
                        multiplier,
                        reset_after_ms: reset + 1,
                        jitter,
                        attempts,
                    }
                }),
            (1..=u32::MAX, arb_duration(), arb_duration()).prop_map(|(max_failures, interval, delay_ms)| {
                RestartStrategy::FailureRate { max_failures, interval_ms: interval + 1, delay_ms }
            }),
        ]
    }

    /// Non-decreasing failure times from gaps.
    fn times(gaps: &[i64]) -> Vec<i64> {
        gaps.iter()
            .scan(0i64, |now, gap| {
                *now += gap;
                Some(*now)
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn display_round_trips(strategy in arb_strategy()) {
            prop_assert_eq!(strategy.validate().ok(), Some(()));
            let text = strategy.to_string();
            prop_assert_eq!(RestartStrategy::parse(&text).ok(), Some(strategy), "{}", text);
        }

        #[test]
        fn fixed_delay_never_exceeds_its_attempts(
            attempts in 0u32..10,
            delay_ms in 0i64..5_000,
            gaps in prop::collection::vec(0i64..10_000, 0..30),
        ) {
            let strategy = RestartStrategy::FixedDelay { attempts, delay_ms };
            let times = times(&gaps);
            let decided = decisions(strategy, 0, &times);
            let granted = attempts.min(times.len() as u32) as usize;
            prop_assert!(decided[..granted].iter().all(|d| *d == RestartAfterMs(delay_ms)));
            prop_assert!(decided[granted..].iter().all(|d| *d == GiveUp));
        }

        #[test]
        fn failure_rate_matches_a_naive_window(
            max_failures in 1u32..5,
            interval_ms in 1i64..60,
            gaps in prop::collection::vec(0i64..25, 0..40),
        ) {
            let strategy = RestartStrategy::FailureRate { max_failures, interval_ms, delay_ms: 7 };
            let times = times(&gaps);
            // The job fails at the first failure whose window [t - interval, t] holds more than
            // max_failures failures, and stays failed.
            let first_overflow = (0..times.len()).find(|&i| {
                times[..=i].iter().filter(|&&t| times[i] - t <= interval_ms).count() > max_failures as usize
            });
            let expected: Vec<_> = (0..times.len())
                .map(|i| if first_overflow.is_some_and(|first| i >= first) { GiveUp } else { RestartAfterMs(7) })
                .collect();
            prop_assert_eq!(decisions(strategy, 0, &times), expected);
        }

        #[test]
        fn exponential_backoff_is_bounded_monotone_and_seeded(
            initial_ms in 1i64..2_000,
            extra_ms in 0i64..100_000,
            multiplier in 1.01f64..4.0,
            jitter in prop_oneof![Just(0.0), 0.0f64..=1.0],
            seed in any::<u64>(),
            gaps in prop::collection::vec(0i64..5_000, 0..40),
        ) {
            let max_ms = initial_ms + extra_ms;
            let strategy = RestartStrategy::ExponentialDelay {
                initial_ms, max_ms, multiplier, reset_after_ms: i64::MAX, jitter, attempts: UNLIMITED,
            };
            let times = times(&gaps);
            let decided = decisions(strategy, seed, &times);
            prop_assert_eq!(&decided, &decisions(strategy, seed, &times));
            let mut previous = 0;
            for decision in decided {
                let RestartAfterMs(delay) = decision else { return Err(TestCaseError::fail("gave up")) };
                prop_assert!((initial_ms..=max_ms).contains(&delay), "delay {} not in [{}, {}]", delay, initial_ms, max_ms);
                if jitter == 0.0 {
                    prop_assert!(delay >= previous, "delay {} after {}", delay, previous);
                }
                previous = delay;
            }
        }

        #[test]
        fn exponential_backoff_resets_after_a_quiet_spell(
            initial_ms in 1i64..20,
            reset_after_ms in 1i64..100,
            gaps in prop::collection::vec(0i64..400, 1..40),
        ) {
            let strategy = exponential(initial_ms, initial_ms * 1_000, 2.0, reset_after_ms);
            let mut tracker = RestartTracker::new(strategy, 0);
            let mut scheduled: Option<i64> = None;
            let mut step = 0u32;
            for now in times(&gaps) {
                if scheduled.is_some_and(|at| now - at >= reset_after_ms) {
                    step = 0;
                }
                let expected = (initial_ms << step.min(10)).min(initial_ms * 1_000);
                prop_assert_eq!(tracker.on_failure(now), RestartAfterMs(expected));
                scheduled = Some(now + expected);
                step += 1;
            }
        }
    }
}
