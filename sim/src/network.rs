//! The simulated network for exchanged data.
//!
//! Timely's allocator trait is crate-private, so the simulator cannot sit between workers for
//! *every* message. It can for data: a parallelization contract decides how an operator's input
//! channel is connected, and [`Delayed`] wraps any contract so that the receiving side holds each
//! message until its delivery time.
//!
//! When a receiver first sees a message from worker `from` on channel `c` (in the process
//! allocator that is the receiver's next step after the send), the link `(c, from → receiver)`
//! gives it a delivery time: now, plus a seeded delay `0..=delay_ms_max`, plus — with probability
//! `clog_probability` — a clog of `1..=clog_ms_max` milliseconds; and never earlier than the link's
//! previous message, so every link stays FIFO (messages held by a clog are released in order).
//! Each link draws from its own seeded stream, so the delays do not depend on how links interleave.
//!
//! Progress tracking stays correct: timely counts a message as consumed only when the operator
//! pulls it, so a held message is "in flight" and holds back the receiver's frontier, exactly as a
//! slow network would. While it holds messages, the puller re-activates its operator, so the
//! operator looks again on a later step.
//!
//! What is not simulated: progress messages travel through timely's own channels, undelayed
//! (a seeded step order still varies when they are seen); messages a worker sends itself are not
//! delayed unless [`NetworkConfig::delay_local`] is set.

use std::collections::VecDeque;
use std::rc::Rc;

use timely::Accountable;
use timely::communication::Pull;
use timely::dataflow::channels::Message;
use timely::dataflow::channels::pact::ParallelizationContract;
use timely::logging::TimelyLogger;
use timely::scheduling::Activator;
use timely::worker::Worker;

use crate::clock::VirtualClock;
use crate::substrate::{Incarnation, STREAM_NETWORK};
use crate::trace::{TraceEvent, TraceRecorder};
use crate::{SimRng, derive_seed};

/// How the simulated network treats data messages. Defaults: no delay (`delay_ms_max: 0`), no
/// clogs (`clog_probability: 0.0`, a clog lasting 1..=100 ms when enabled), local messages never
/// delayed (`delay_local: false`).
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkConfig {
    /// Each message waits a seeded `0..=delay_ms_max` virtual milliseconds.
    pub delay_ms_max: i64,
    /// The probability that a message clogs its link: it (and, FIFO, everything behind it on the
    /// link) waits a further `1..=clog_ms_max` milliseconds.
    pub clog_probability: f64,
    /// The longest clog, in virtual milliseconds.
    pub clog_ms_max: i64,
    /// Whether messages a worker sends itself are delayed too.
    pub delay_local: bool,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig { delay_ms_max: 0, clog_probability: 0.0, clog_ms_max: 100, delay_local: false }
    }
}

impl NetworkConfig {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.delay_ms_max < 0 || self.clog_ms_max < 1 {
            return Err("network delays must be >= 0 and the longest clog >= 1 ms".to_string());
        }
        if !(0.0..=1.0).contains(&self.clog_probability) {
            return Err("the clog probability must be between 0 and 1".to_string());
        }
        Ok(())
    }
}

/// A handle on the simulated network of one [`Simulation`](crate::Simulation); clones share it.
#[derive(Clone, Debug)]
pub struct Network {
    config: NetworkConfig,
    seed: u64,
    clock: VirtualClock,
    recorder: TraceRecorder,
    incarnation: Incarnation,
}

impl Network {
    pub(crate) fn new(
        config: NetworkConfig,
        seed: u64,
        clock: VirtualClock,
        recorder: TraceRecorder,
        incarnation: Incarnation,
    ) -> Self {
        Network { config, seed, clock, recorder, incarnation }
    }

    /// The network's configuration.
    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    /// Wraps `pact` (for example timely's `Exchange`) so that its messages go through this network.
    pub fn delayed<P>(&self, pact: P) -> Delayed<P> {
        Delayed { pact, network: self.clone() }
    }
}

/// A parallelization contract whose messages are delayed by the simulated [`Network`].
#[derive(Debug)]
pub struct Delayed<P> {
    pact: P,
    network: Network,
}

impl<T, C, P> ParallelizationContract<T, C> for Delayed<P>
where
    T: 'static,
    C: Accountable + 'static,
    P: ParallelizationContract<T, C>,
{
    type Pusher = P::Pusher;
    type Puller = DelayedPuller<T, C, P::Puller>;

    fn connect(
        self,
        worker: &Worker,
        identifier: usize,
        address: Rc<[usize]>,
        logging: Option<TimelyLogger>,
    ) -> (Self::Pusher, Self::Puller) {
        let activator = worker.activator_for(Rc::clone(&address));
        let (pusher, puller) = self.pact.connect(worker, identifier, address, logging);
        let links = (0..worker.peers())
            .map(|from| Link {
                rng: SimRng::new(derive_seed(
                    self.network.seed,
                    &[
                        STREAM_NETWORK,
                        self.network.incarnation.get(),
                        identifier as u64,
                        from as u64,
                        worker.index() as u64,
                    ],
                )),
                last_at_ms: i64::MIN,
                held: VecDeque::new(),
            })
            .collect();
        let puller = DelayedPuller {
            inner: puller,
            network: self.network,
            channel: identifier,
            index: worker.index(),
            links,
            held: 0,
            current: None,
            activator,
        };
        (pusher, puller)
    }
}

/// One `(channel, from → to)` link as the receiver sees it.
struct Link<T, C> {
    rng: SimRng,
    last_at_ms: i64,
    held: VecDeque<(i64, Message<T, C>)>,
}

/// The receiving end of a [`Delayed`] channel: hands out messages once their delivery time has come.
pub struct DelayedPuller<T, C, P> {
    inner: P,
    network: Network,
    channel: usize,
    index: usize,
    links: Vec<Link<T, C>>,
    held: usize,
    current: Option<Message<T, C>>,
    activator: Activator,
}

impl<T, C: Accountable, P: Pull<Message<T, C>>> DelayedPuller<T, C, P> {
    /// Takes every message that has arrived into its link's queue, with a delivery time.
    fn admit(&mut self, now_ms: i64) {
        while let Some(message) = self.inner.pull().take() {
            let from = message.from;
            let config = &self.network.config;
            let link = &mut self.links[from];
            let mut at_ms = now_ms;
            if from != self.index || config.delay_local {
                if config.delay_ms_max > 0 {
                    at_ms = at_ms.saturating_add(link.rng.below(config.delay_ms_max as u64 + 1) as i64);
                }
                if config.clog_probability > 0.0 && link.rng.chance(config.clog_probability) {
                    at_ms = at_ms.saturating_add(1 + link.rng.below(config.clog_ms_max as u64) as i64);
                }
            }
            at_ms = at_ms.max(link.last_at_ms);
            link.last_at_ms = at_ms;
            self.network.recorder.record(TraceEvent::Send {
                channel: self.channel,
                from,
                to: self.index,
                seq: message.seq,
                records: message.data.record_count(),
                deliver_at_ms: at_ms,
            });
            link.held.push_back((at_ms, message));
            self.held += 1;
        }
    }
}

impl<T, C: Accountable, P: Pull<Message<T, C>>> Pull<Message<T, C>> for DelayedPuller<T, C, P> {
    fn pull(&mut self) -> &mut Option<Message<T, C>> {
        let now_ms = self.network.clock.now_ms();
        self.admit(now_ms);
        // The due message with the earliest delivery time, the lowest sender first on a tie.
        let due = self
            .links
            .iter()
            .enumerate()
            .filter_map(|(from, link)| link.held.front().map(|(at_ms, _)| (*at_ms, from)))
            .filter(|(at_ms, _)| *at_ms <= now_ms)
            .min();
        self.current = match due {
            Some((_, from)) => {
                let (_, message) = self.links[from].held.pop_front().expect("a front was seen");
                self.held -= 1;
                self.network.recorder.record(TraceEvent::Deliver {
                    channel: self.channel,
                    from,
                    to: self.index,
                    seq: message.seq,
                });
                Some(message)
            }
            None => {
                if self.held > 0 {
                    // Look again on a later step, when virtual time has moved on.
                    self.activator.activate();
                }
                None
            }
        };
        &mut self.current
    }
}

impl<T, C, P: std::fmt::Debug> std::fmt::Debug for DelayedPuller<T, C, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelayedPuller")
            .field("channel", &self.channel)
            .field("index", &self.index)
            .field("held", &self.held)
            .finish()
    }
}
