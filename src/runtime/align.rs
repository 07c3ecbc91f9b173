//! Barrier alignment for stateful operators: Flink's aligned checkpoints, on epochs.
//!
//! An operator instance has an *open epoch* `e`. Records whose timestamp's epoch is at most `e` are
//! applied at once; records of a later epoch arrived early, from an input that has already passed
//! the barrier, and wait in a buffer. When the input frontier has passed every `(e, _)` — every
//! record of epoch `e` from every input has been applied — the operator writes its part of
//! checkpoint `e`, opens epoch `e + 1`, and applies what waited for it. That is Flink's barrier
//! alignment, with timely's progress tracking in the role of the barriers.
//!
//! Two rules keep the snapshot and the output consistent:
//! - Until its snapshot of epoch `e` is written, the operator holds a capability at epoch `e`, and
//!   emits at it: whatever it emitted before the snapshot belongs to epoch `e`'s output (and to the
//!   sink's transaction of `e`), never to a later one.
//! - The watermark the operator fires windows and timers with is the least over the frontier *and*
//!   the buffered records, so no window fires before a buffered record that belongs to it is
//!   applied.

use std::sync::Arc;

use timely::dataflow::operators::Capability;
use timely::dataflow::operators::CapabilitySet;
use timely::order::Product;
use timely::progress::Antichain;
use timely::progress::frontier::AntichainRef;

use crate::checkpoint::{AlignmentStats, Coordinator, part_name};
use crate::time::{Record, Time};

/// The alignment state of one operator instance: its open epoch and what waits for the next.
pub(crate) struct Aligner<D> {
    checkpoints: Option<Arc<Coordinator>>,
    part: String,
    epoch: u64,
    skip_alignment: bool,
    buffered: Vec<(Vec<Time>, Vec<Record<D>>)>,
    buffered_since_ms: Option<i64>,
    buffered_records: u64,
    now_ms: i64,
}

impl<D> Aligner<D> {
    /// The aligner of worker `context.index`'s instance of graph node `node`; registers the
    /// instance with the checkpoint coordinator, if the job has one.
    pub(crate) fn new(context: &super::WorkerContext, node: usize) -> Self {
        let checkpoints = context.checkpoints.clone();
        let part = part_name(node, context.index);
        if let Some(coordinator) = &checkpoints {
            coordinator.register(&part);
        }
        Aligner {
            epoch: checkpoints.as_ref().map_or(0, |coordinator| coordinator.start_epoch()),
            skip_alignment: checkpoints.as_ref().is_some_and(|coordinator| coordinator.config().bugs.skip_alignment),
            checkpoints,
            part,
            buffered: Vec::new(),
            buffered_since_ms: None,
            buffered_records: 0,
            now_ms: 0,
        }
    }

    /// The coordinator, if the job checkpoints.
    pub(crate) fn coordinator(&self) -> Option<&Arc<Coordinator>> {
        self.checkpoints.as_ref()
    }

    /// The open epoch.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Keeps `data` for later if its stamp is beyond the open epoch (and returns `true`), or
    /// leaves it to be applied now (`false`).
    pub(crate) fn hold<'a>(
        &mut self,
        stamp: impl Iterator<Item = &'a Time>,
        data: &mut Vec<Record<D>>,
        now_ms: i64,
    ) -> bool {
        self.now_ms = now_ms;
        if self.checkpoints.is_none() || self.skip_alignment {
            return false;
        }
        let stamp: Vec<Time> = stamp.cloned().collect();
        match stamp.iter().map(|time| time.outer).min() {
            Some(epoch) if epoch > self.epoch => {
                self.buffered_since_ms.get_or_insert(now_ms);
                self.buffered_records += data.len() as u64;
                self.buffered.push((stamp, std::mem::take(data)));
                true
            }
            _ => false,
        }
    }

    /// The input frontier, or — once it is empty but checkpoints may still need this instance's
    /// parts — a stand-in one epoch past the last triggered checkpoint, so that every triggered
    /// epoch is closed in order before the instance finishes.
    pub(crate) fn frontier(&self, frontier: AntichainRef<'_, Time>, finished: bool) -> Antichain<Time> {
        match &self.checkpoints {
            Some(coordinator) if frontier.is_empty() && !finished => {
                Antichain::from_elem(Product::new(self.epoch.max(coordinator.triggered() + 1), i64::MAX))
            }
            _ => frontier.to_owned(),
        }
    }

    /// The times at which the instance must keep capabilities: the frontier and the buffered
    /// stamps, with epochs lowered to the open epoch (the standing capability of the rule above).
    pub(crate) fn hold_frontier(&self, frontier: AntichainRef<'_, Time>) -> Antichain<Time> {
        let mut hold = Antichain::new();
        let buffered = self.buffered.iter().flat_map(|(stamp, _)| stamp.iter());
        for time in frontier.iter().chain(buffered) {
            let outer = if self.checkpoints.is_some() { time.outer.min(self.epoch) } else { time.outer };
            hold.insert(Product::new(outer, time.inner));
        }
        hold
    }

    /// The capability to emit at: the earliest held one, which is in the open epoch.
    pub(crate) fn emitting<'c>(&self, capabilities: &'c CapabilitySet<Time>) -> &'c Capability<Time> {
        let capability = capabilities
            .iter()
            .min_by_key(|capability| (capability.time().outer, capability.time().inner))
            .expect("an operator emits only while it holds a capability");
        assert!(
            self.checkpoints.is_none() || self.skip_alignment || capability.time().outer <= self.epoch,
            "{} emits in epoch {} while epoch {} is open",
            self.part,
            capability.time().outer,
            self.epoch
        );
        capability
    }

    /// Whether the input has passed the open epoch: time to snapshot it.
    pub(crate) fn epoch_passed(&self, frontier: AntichainRef<'_, Time>) -> bool {
        // An empty frontier passes no epoch: before the instance finishes, `frontier` stands in
        // for it with the epochs still to close; after, there are none.
        self.checkpoints.is_some() && !frontier.is_empty() && frontier.iter().all(|time| time.outer > self.epoch)
    }

    /// Writes this instance's part of checkpoint `epoch` (the bytes `snapshot` makes) and opens
    /// the next epoch.
    pub(crate) fn snapshot(&mut self, snapshot: impl FnOnce() -> Vec<u8>) {
        let Some(coordinator) = &self.checkpoints else {
            return;
        };
        let stats = AlignmentStats {
            alignment_ms: self.buffered_since_ms.map_or(0, |since| self.now_ms - since),
            buffered_records: self.buffered_records,
            buffered_bytes: self.buffered_records * std::mem::size_of::<Record<D>>() as u64,
        };
        coordinator.acknowledge(self.epoch, &self.part, &snapshot(), stats);
        self.epoch += 1;
        self.buffered_since_ms = None;
        self.buffered_records = 0;
    }

    /// Takes the buffered records that belong to the (newly) open epoch, in arrival order.
    pub(crate) fn release(&mut self) -> Vec<Record<D>> {
        let epoch = self.epoch;
        let mut released = Vec::new();
        let mut kept = Vec::new();
        for (stamp, data) in self.buffered.drain(..) {
            if stamp.iter().map(|time| time.outer).min().is_some_and(|outer| outer <= epoch) {
                released.extend(data);
            } else {
                self.buffered_records += data.len() as u64;
                kept.push((stamp, data));
            }
        }
        if !kept.is_empty() {
            self.buffered_since_ms = Some(self.now_ms);
        }
        self.buffered = kept;
        released
    }

    /// The instance's input is finished: its last part stands for every later checkpoint.
    pub(crate) fn finish(&mut self, snapshot: impl FnOnce() -> Vec<u8>) {
        if let Some(coordinator) = &self.checkpoints {
            assert!(self.buffered.is_empty(), "{} finished with records still buffered", self.part);
            coordinator.finish(&self.part, &snapshot());
        }
    }
}
