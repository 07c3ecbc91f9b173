//! The picture of a simulated run: coupons as they were committed, checkpoints and crashes, on
//! one time line of virtual processing time.

use flowlab_sim::TraceEvent;

use super::job::MarketingRun;
use crate::checkpoint::CheckpointStatus;
use crate::viz::{Timeline, timeline_svg};

/// The run's time line. Coupons become visible when the checkpoint of their epoch completes;
/// crash times need the run's trace (`MarketingCheck::keep_trace`), else none are drawn.
pub fn timeline(run: &MarketingRun) -> Timeline {
    let end_ms = run.simulation.end_ms;
    let completed_at = |epoch: u64| {
        run.checkpoints
            .iter()
            .find(|record| record.id == epoch && record.status == CheckpointStatus::Completed)
            .map_or(end_ms, |record| record.end_ms)
    };
    let mut committed = Vec::new();
    let mut total = 0;
    for (&epoch, &coupons) in &run.coupons_by_epoch {
        total += coupons as u64;
        committed.push((completed_at(epoch), total));
    }
    committed.sort();
    let mut crashes = Vec::new();
    let mut now_ms = 0;
    for event in run.simulation.trace.events().unwrap_or(&[]) {
        match event {
            TraceEvent::Step { now_ms: step_ms, .. } => now_ms = *step_ms,
            TraceEvent::Crash { .. } => crashes.push(now_ms),
            _ => {}
        }
    }
    Timeline {
        end_ms,
        committed,
        committed_label: "coupons committed".to_string(),
        checkpoints: run
            .checkpoints
            .iter()
            .map(|record| (record.trigger_ms, record.end_ms, record.status == CheckpointStatus::Completed))
            .collect(),
        crashes,
    }
}

/// The run's time line as an SVG document.
pub fn svg(title: &str, run: &MarketingRun) -> String {
    timeline_svg(title, &timeline(run))
}
