//! The trace of a simulated run: what happened, in order, and a stable hash of it.
//!
//! Two runs with the same seed must produce the same trace, event for event; the hash is the short
//! way to compare them (`--check-determinism`). The hash is FNV-1a (64 bit) over a fixed
//! little-endian encoding of every event, so it is the same on every platform, build and run —
//! no `RandomState`, no addresses.

use std::sync::{Arc, Mutex};

/// One thing that happened in a simulated run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceEvent {
    /// Worker `worker` built its dataflows (in worker order, before the first step).
    Built {
        /// The worker.
        worker: usize,
        /// Whether it has dataflows to run.
        has_dataflows: bool,
    },
    /// Step `step` ran worker `worker` once (`timely::worker::Worker::step`) at virtual time
    /// `now_ms`.
    Step {
        /// The global step index, from 0.
        step: u64,
        /// The worker that stepped.
        worker: usize,
        /// Virtual time during the step.
        now_ms: i64,
        /// Whether the worker still has dataflows after the step (`false`: it is done).
        has_dataflows: bool,
    },
    /// Worker `worker` is stalled: it will not be chosen before step `until_step`.
    Stall {
        /// The step at which the stall begins.
        step: u64,
        /// The stalled worker.
        worker: usize,
        /// The first step at which it may run again.
        until_step: u64,
    },
    /// Every worker that still had work was stalled, so the stall of `worker` ended early.
    Unstall {
        /// The step.
        step: u64,
        /// The worker released.
        worker: usize,
    },
    /// A data message was taken into the simulated network (see [`crate::Network`]).
    Send {
        /// The timely channel identifier.
        channel: usize,
        /// Sending worker.
        from: usize,
        /// Receiving worker.
        to: usize,
        /// The message's sequence number on its link (timely's `Message::seq`).
        seq: usize,
        /// Records in the message.
        records: i64,
        /// Virtual time at which the receiver may see it.
        deliver_at_ms: i64,
    },
    /// A held data message was handed to the receiving operator.
    Deliver {
        /// The timely channel identifier.
        channel: usize,
        /// Sending worker.
        from: usize,
        /// Receiving worker.
        to: usize,
        /// The message's sequence number on its link.
        seq: usize,
    },
    /// A value the job itself recorded with [`TraceRecorder::note`] during a step.
    Note {
        /// The worker whose step recorded it.
        worker: usize,
        /// The value.
        value: u64,
    },
    /// The run's halt condition became true after step `step`, and the run stopped there.
    Halt {
        /// The step after which the run stopped.
        step: u64,
    },
    /// Every worker crashed after step `step`: their dataflows, threads and in-flight messages
    /// were dropped. `incarnation` is the incarnation that crashed (the first is 0).
    Crash {
        /// The step after which the crash happened.
        step: u64,
        /// The incarnation that crashed.
        incarnation: u64,
    },
    /// Incarnation `incarnation` was started (every worker rebuilt) at virtual time `now_ms`.
    Restart {
        /// The new incarnation.
        incarnation: u64,
        /// Virtual time of the restart.
        now_ms: i64,
    },
}

impl TraceEvent {
    /// The event as one JSON object, fields in a fixed order, e.g.
    /// `{"event":"step","step":3,"worker":1,"now_ms":3,"has_dataflows":true}`.
    pub fn to_json(&self) -> String {
        match *self {
            TraceEvent::Built { worker, has_dataflows } => {
                format!(r#"{{"event":"built","worker":{worker},"has_dataflows":{has_dataflows}}}"#)
            }
            TraceEvent::Step { step, worker, now_ms, has_dataflows } => format!(
                r#"{{"event":"step","step":{step},"worker":{worker},"now_ms":{now_ms},"has_dataflows":{has_dataflows}}}"#
            ),
            TraceEvent::Stall { step, worker, until_step } => {
                format!(r#"{{"event":"stall","step":{step},"worker":{worker},"until_step":{until_step}}}"#)
            }
            TraceEvent::Unstall { step, worker } => format!(r#"{{"event":"unstall","step":{step},"worker":{worker}}}"#),
            TraceEvent::Send { channel, from, to, seq, records, deliver_at_ms } => format!(
                r#"{{"event":"send","channel":{channel},"from":{from},"to":{to},"seq":{seq},"records":{records},"deliver_at_ms":{deliver_at_ms}}}"#
            ),
            TraceEvent::Deliver { channel, from, to, seq } => {
                format!(r#"{{"event":"deliver","channel":{channel},"from":{from},"to":{to},"seq":{seq}}}"#)
            }
            TraceEvent::Note { worker, value } => format!(r#"{{"event":"note","worker":{worker},"value":{value}}}"#),
            TraceEvent::Halt { step } => format!(r#"{{"event":"halt","step":{step}}}"#),
            TraceEvent::Crash { step, incarnation } => {
                format!(r#"{{"event":"crash","step":{step},"incarnation":{incarnation}}}"#)
            }
            TraceEvent::Restart { incarnation, now_ms } => {
                format!(r#"{{"event":"restart","incarnation":{incarnation},"now_ms":{now_ms}}}"#)
            }
        }
    }

    /// Feeds a fixed encoding of the event to `hash`.
    fn hash_into(&self, hash: &mut Fnv64) {
        let word = |hash: &mut Fnv64, value: u64| hash.write(&value.to_le_bytes());
        match *self {
            TraceEvent::Built { worker, has_dataflows } => {
                hash.write(&[1]);
                word(hash, worker as u64);
                word(hash, has_dataflows as u64);
            }
            TraceEvent::Step { step, worker, now_ms, has_dataflows } => {
                hash.write(&[2]);
                word(hash, step);
                word(hash, worker as u64);
                word(hash, now_ms as u64);
                word(hash, has_dataflows as u64);
            }
            TraceEvent::Stall { step, worker, until_step } => {
                hash.write(&[3]);
                word(hash, step);
                word(hash, worker as u64);
                word(hash, until_step);
            }
            TraceEvent::Unstall { step, worker } => {
                hash.write(&[4]);
                word(hash, step);
                word(hash, worker as u64);
            }
            TraceEvent::Send { channel, from, to, seq, records, deliver_at_ms } => {
                hash.write(&[5]);
                for value in [channel as u64, from as u64, to as u64, seq as u64, records as u64, deliver_at_ms as u64]
                {
                    word(hash, value);
                }
            }
            TraceEvent::Deliver { channel, from, to, seq } => {
                hash.write(&[6]);
                for value in [channel as u64, from as u64, to as u64, seq as u64] {
                    word(hash, value);
                }
            }
            TraceEvent::Note { worker, value } => {
                hash.write(&[7]);
                word(hash, worker as u64);
                word(hash, value);
            }
            TraceEvent::Halt { step } => {
                hash.write(&[8]);
                word(hash, step);
            }
            TraceEvent::Crash { step, incarnation } => {
                hash.write(&[9]);
                word(hash, step);
                word(hash, incarnation);
            }
            TraceEvent::Restart { incarnation, now_ms } => {
                hash.write(&[10]);
                word(hash, incarnation);
                word(hash, now_ms as u64);
            }
        }
    }
}

/// FNV-1a, 64 bit: tiny, stable across platforms and releases, good enough to tell traces apart.
#[derive(Clone, Copy, Debug)]
struct Fnv64(u64);

impl Fnv64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn new() -> Self {
        Fnv64(Self::OFFSET)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }
}

/// The stable 64-bit hash (FNV-1a) of `bytes`: use it to fold outputs into a trace note or a
/// result digest that is the same on every run and platform.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut hash = Fnv64::new();
    hash.write(bytes);
    hash.0
}

/// The trace of a run: a running hash of every event and, if asked for, the events themselves.
#[derive(Clone, Debug)]
pub struct Trace {
    hash: Fnv64,
    len: u64,
    events: Option<Vec<TraceEvent>>,
}

impl Trace {
    /// An empty trace that keeps its events (`keep_events`) or only their hash.
    pub fn new(keep_events: bool) -> Self {
        Trace { hash: Fnv64::new(), len: 0, events: keep_events.then(Vec::new) }
    }

    /// Appends `event`.
    pub fn push(&mut self, event: TraceEvent) {
        event.hash_into(&mut self.hash);
        self.len += 1;
        if let Some(events) = self.events.as_mut() {
            events.push(event);
        }
    }

    /// The hash of every event so far: equal traces have equal hashes.
    pub fn hash(&self) -> u64 {
        self.hash.0
    }

    /// How many events the trace has.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the trace has no events.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes the trace as JSON lines: one object per kept event (see [`TraceEvent::to_json`]),
    /// then a summary line `{"event":"summary","events":N,"hash":"0x…"}`. A trace that kept only
    /// its hash writes only the summary.
    pub fn write_jsonl(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        for event in self.events.iter().flatten() {
            writeln!(out, "{}", event.to_json())?;
        }
        writeln!(out, "{{\"event\":\"summary\",\"events\":{},\"hash\":\"{:#018x}\"}}", self.len, self.hash.0)
    }

    /// The events, if the trace was asked to keep them ([`SimConfig::keep_trace`](crate::SimConfig::keep_trace)).
    pub fn events(&self) -> Option<&[TraceEvent]> {
        self.events.as_deref()
    }
}

/// A handle through which code running *inside* a step (operators, the simulated network) adds
/// events to the trace. The simulator moves them into the [`Trace`] after each step; since only
/// one worker runs at a time, their order is a function of the seed. Clones share one buffer.
#[derive(Clone, Debug, Default)]
pub struct TraceRecorder {
    pending: Arc<Mutex<Vec<TraceEvent>>>,
}

impl TraceRecorder {
    /// Records `value` as a [`TraceEvent::Note`] of worker `worker`: for example a hash of an
    /// operator's output, so that the trace hash also covers what the job produced.
    pub fn note(&self, worker: usize, value: u64) {
        self.record(TraceEvent::Note { worker, value });
    }

    /// Records any event.
    pub fn record(&self, event: TraceEvent) {
        self.pending.lock().expect("trace recorder poisoned").push(event);
    }

    /// Moves every pending event into `trace`, in the order they were recorded.
    pub(crate) fn drain_into(&self, trace: &mut Trace) {
        let mut pending = self.pending.lock().expect("trace recorder poisoned");
        for event in pending.drain(..) {
            trace.push(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_the_published_test_vectors() {
        assert_eq!(stable_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(stable_hash(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn equal_events_give_equal_hashes_and_order_matters() {
        let a = TraceEvent::Step { step: 0, worker: 1, now_ms: 0, has_dataflows: true };
        let b = TraceEvent::Step { step: 1, worker: 0, now_ms: 1, has_dataflows: false };
        let trace = |events: &[TraceEvent]| {
            let mut trace = Trace::new(true);
            events.iter().for_each(|event| trace.push(*event));
            trace
        };
        assert_eq!(trace(&[a, b]).hash(), trace(&[a, b]).hash());
        assert_ne!(trace(&[a, b]).hash(), trace(&[b, a]).hash());
        assert_eq!(trace(&[a, b]).events().unwrap(), &[a, b]);
        assert_eq!(trace(&[a]).len(), 1);
    }

    #[test]
    fn json_lines_name_every_field_and_end_with_the_hash() {
        let mut trace = Trace::new(true);
        trace.push(TraceEvent::Step { step: 3, worker: 1, now_ms: 3, has_dataflows: true });
        trace.push(TraceEvent::Crash { step: 3, incarnation: 0 });
        let mut out = Vec::new();
        trace.write_jsonl(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], r#"{"event":"step","step":3,"worker":1,"now_ms":3,"has_dataflows":true}"#);
        assert_eq!(lines[1], r#"{"event":"crash","step":3,"incarnation":0}"#);
        assert_eq!(lines[2], format!(r#"{{"event":"summary","events":2,"hash":"{:#018x}"}}"#, trace.hash()));
    }
}
