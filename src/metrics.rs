//! One registry of counters per operator instance, read by the CLI (and later a dashboard).
//!
//! Each operator instance (operator × worker) owns an [`OperatorMetrics`] of atomics, updated once
//! per batch rather than per record, so counting costs nothing measurable. The registry is shared
//! by every worker of a process and is iterated in `(operator, worker)` order: printing it is
//! deterministic.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::time::WATERMARK_MIN;

/// Counters of one operator instance.
#[derive(Debug)]
pub struct OperatorMetrics {
    /// Records received.
    pub records_in: AtomicU64,
    /// Records emitted on the main output.
    pub records_out: AtomicU64,
    /// Records judged late (and sent to a late side output, never dropped silently).
    pub records_late: AtomicU64,
    /// Input lines that did not parse and went to a dead-letter file (skip mode).
    pub records_bad: AtomicU64,
    /// The operator's current watermark (milliseconds).
    pub watermark_ms: AtomicI64,
}

impl Default for OperatorMetrics {
    fn default() -> Self {
        OperatorMetrics {
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            records_late: AtomicU64::new(0),
            records_bad: AtomicU64::new(0),
            watermark_ms: AtomicI64::new(WATERMARK_MIN),
        }
    }
}

impl OperatorMetrics {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Records a new watermark.
    pub fn set_watermark(&self, watermark_ms: i64) {
        self.watermark_ms.store(watermark_ms, Ordering::Relaxed);
    }

    /// A plain copy of the counters.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            records_in: self.records_in.load(Ordering::Relaxed),
            records_out: self.records_out.load(Ordering::Relaxed),
            records_late: self.records_late.load(Ordering::Relaxed),
            records_bad: self.records_bad.load(Ordering::Relaxed),
            watermark_ms: self.watermark_ms.load(Ordering::Relaxed),
        }
    }
}

/// The counters of one operator instance at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Records received.
    pub records_in: u64,
    /// Records emitted on the main output.
    pub records_out: u64,
    /// Records judged late.
    pub records_late: u64,
    /// Bad input lines sent to a dead-letter file.
    pub records_bad: u64,
    /// The operator's watermark.
    pub watermark_ms: i64,
}

/// Identifies an operator instance: the job-graph node and the worker it runs on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct InstanceId {
    /// Index of the node in the job graph.
    pub node: usize,
    /// The node's name.
    pub name: String,
    /// Worker index.
    pub worker: usize,
}

/// The registry every operator instance of a job reports to.
#[derive(Clone, Debug, Default)]
pub struct MetricsRegistry {
    instances: Arc<Mutex<BTreeMap<InstanceId, Arc<OperatorMetrics>>>>,
}

impl MetricsRegistry {
    /// Registers (or finds) the counters of one operator instance.
    pub fn register(&self, node: usize, name: &str, worker: usize) -> Arc<OperatorMetrics> {
        let id = InstanceId { node, name: name.to_string(), worker };
        let mut instances = self.instances.lock().expect("metrics registry poisoned");
        Arc::clone(instances.entry(id).or_default())
    }

    /// Renames every instance of `node` (after Flink-style `.name(…)`).
    pub fn rename(&self, node: usize, name: &str) {
        let mut instances = self.instances.lock().expect("metrics registry poisoned");
        let renamed: Vec<InstanceId> = instances.keys().filter(|id| id.node == node).cloned().collect();
        for id in renamed {
            let metrics = instances.remove(&id).expect("listed above");
            instances.insert(InstanceId { name: name.to_string(), ..id }, metrics);
        }
    }

    /// Every instance's counters, in `(node, worker)` order.
    pub fn snapshot(&self) -> Vec<(InstanceId, MetricsSnapshot)> {
        let instances = self.instances.lock().expect("metrics registry poisoned");
        instances.iter().map(|(id, metrics)| (id.clone(), metrics.snapshot())).collect()
    }

    /// Sums one counter over every instance whose node name starts with `prefix`.
    pub fn total(&self, prefix: &str, counter: impl Fn(&MetricsSnapshot) -> u64) -> u64 {
        self.snapshot().iter().filter(|(id, _)| id.name.starts_with(prefix)).map(|(_, m)| counter(m)).sum()
    }

    /// A table for people: one line per operator instance.
    pub fn render(&self) -> String {
        let rows = self.snapshot();
        let labels: Vec<String> = rows.iter().map(|(id, _)| format!("{}#{}", id.name, id.node)).collect();
        let width = labels.iter().map(String::len).max().unwrap_or(0).max("operator".len());
        let mut out = format!(
            "{:<width$} {:>6} {:>12} {:>12} {:>8} {:>6}  watermark\n",
            "operator", "worker", "records_in", "records_out", "late", "bad"
        );
        for ((id, m), label) in rows.iter().zip(labels) {
            let _ = writeln!(
                out,
                "{label:<width$} {:>6} {:>12} {:>12} {:>8} {:>6}  {}",
                id.worker,
                m.records_in,
                m.records_out,
                m.records_late,
                m.records_bad,
                crate::time::format_watermark(m.watermark_ms)
            );
        }
        out
    }
}
