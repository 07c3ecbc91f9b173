//! Window assigners: which windows an element belongs to (Flink's `WindowAssigner`).

use std::sync::Arc;

use super::Window;
use super::trigger::{EventTimeTrigger, NeverTrigger, ProcessingTimeTrigger, Trigger};
use crate::error::{Error, Result};

/// Whether windows are measured in event time or processing time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeDomain {
    /// The element's timestamp; windows fire on watermarks.
    EventTime,
    /// The clock when the element arrives; windows fire on processing-time timers.
    ProcessingTime,
}

/// Assigns windows to elements. A lab seam: implement it to define a new kind of window.
pub trait WindowAssigner<D>: Send + Sync + 'static {
    /// Appends the windows of an element with value `value` and event time `time_ms`, arriving at
    /// processing time `now_ms`. Errors (e.g. a dynamic session gap that is not positive) fail the job.
    fn assign(&self, value: &D, time_ms: i64, now_ms: i64, out: &mut Vec<Window>) -> Result<()>;
    /// Whether windows are in event time (then lateness applies).
    fn is_event_time(&self) -> bool;
    /// Whether windows of one key merge when they intersect (sessions).
    fn is_merging(&self) -> bool {
        false
    }
    /// The trigger used when the job names none.
    fn default_trigger(&self) -> Arc<dyn Trigger<D>>;
    /// For event-time windows of fixed size and slide: their shape, so that the operator can
    /// share slices between windows. `None` (the default) uses the general operator.
    fn slicing(&self) -> Option<super::SliceSpec> {
        None
    }
    /// A name for the job graph.
    fn name(&self) -> String;
}

/// Flink's `TimeWindow.getWindowStartWithOffset`, with Java's wrapping `long` arithmetic.
pub fn window_start_with_offset(time_ms: i64, offset_ms: i64, size_ms: i64) -> i64 {
    let remainder = time_ms.wrapping_sub(offset_ms) % size_ms;
    if remainder < 0 { time_ms.wrapping_sub(remainder.wrapping_add(size_ms)) } else { time_ms.wrapping_sub(remainder) }
}

fn no_timestamp(name: &str) -> Error {
    Error::Usage(format!(
        "{name}: a record has timestamp i64::MIN (Flink's \"no timestamp\" marker); time windows need a real timestamp"
    ))
}

fn domain_time(domain: TimeDomain, time_ms: i64, now_ms: i64) -> i64 {
    match domain {
        TimeDomain::EventTime => time_ms,
        TimeDomain::ProcessingTime => now_ms,
    }
}

fn default_time_trigger<D>(domain: TimeDomain) -> Arc<dyn Trigger<D>> {
    match domain {
        TimeDomain::EventTime => Arc::new(EventTimeTrigger),
        TimeDomain::ProcessingTime => Arc::new(ProcessingTimeTrigger),
    }
}

/// Fixed-size, non-overlapping windows (Flink's `TumblingEventTimeWindows` /
/// `TumblingProcessingTimeWindows`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TumblingWindows {
    size_ms: i64,
    offset_ms: i64,
    domain: TimeDomain,
}

impl TumblingWindows {
    /// Windows of `size_ms` shifted by `offset_ms`; Flink requires `|offset| < size` and `size > 0`.
    pub fn new(size_ms: i64, offset_ms: i64, domain: TimeDomain) -> Result<Self> {
        if size_ms <= 0 || offset_ms.unsigned_abs() >= size_ms.unsigned_abs() {
            return Err(Error::Usage(format!(
                "tumbling windows must satisfy abs(offset) < size and size > 0 (size {size_ms}ms, offset {offset_ms}ms)"
            )));
        }
        Ok(TumblingWindows { size_ms, offset_ms, domain })
    }

    /// Event-time tumbling windows of `size_ms`, offset 0.
    pub fn event_time(size_ms: i64) -> Result<Self> {
        Self::new(size_ms, 0, TimeDomain::EventTime)
    }
}

impl<D> WindowAssigner<D> for TumblingWindows {
    fn assign(&self, _value: &D, time_ms: i64, now_ms: i64, out: &mut Vec<Window>) -> Result<()> {
        let time_ms = domain_time(self.domain, time_ms, now_ms);
        if time_ms == i64::MIN {
            return Err(no_timestamp("tumbling window"));
        }
        let start = window_start_with_offset(time_ms, self.offset_ms, self.size_ms);
        out.push(Window { start, end: start.wrapping_add(self.size_ms) });
        Ok(())
    }

    fn is_event_time(&self) -> bool {
        self.domain == TimeDomain::EventTime
    }

    fn default_trigger(&self) -> Arc<dyn Trigger<D>> {
        default_time_trigger(self.domain)
    }

    fn name(&self) -> String {
        format!("tumbling {}ms offset {}ms ({:?})", self.size_ms, self.offset_ms, self.domain)
    }

    fn slicing(&self) -> Option<super::SliceSpec> {
        (self.domain == TimeDomain::EventTime).then_some(super::SliceSpec {
            size_ms: self.size_ms,
            slide_ms: self.size_ms,
            offset_ms: self.offset_ms,
        })
    }
}

/// Fixed-size windows starting every `slide` (Flink's `SlidingEventTimeWindows` /
/// `SlidingProcessingTimeWindows`). An element belongs to about `size / slide` windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlidingWindows {
    size_ms: i64,
    slide_ms: i64,
    offset_ms: i64,
    domain: TimeDomain,
}

impl SlidingWindows {
    /// Windows of `size_ms` every `slide_ms`, shifted by `offset_ms`; Flink requires
    /// `|offset| < slide`, `size > 0` and `slide > 0`.
    pub fn new(size_ms: i64, slide_ms: i64, offset_ms: i64, domain: TimeDomain) -> Result<Self> {
        if size_ms <= 0 || slide_ms <= 0 || offset_ms.unsigned_abs() >= slide_ms.unsigned_abs() {
            return Err(Error::Usage(format!(
                "sliding windows must satisfy abs(offset) < slide and size > 0 (size {size_ms}ms, slide {slide_ms}ms, offset {offset_ms}ms)"
            )));
        }
        Ok(SlidingWindows { size_ms, slide_ms, offset_ms, domain })
    }

    /// The window size.
    pub fn size_ms(&self) -> i64 {
        self.size_ms
    }

    /// The slide.
    pub fn slide_ms(&self) -> i64 {
        self.slide_ms
    }
}

impl<D> WindowAssigner<D> for SlidingWindows {
    fn assign(&self, _value: &D, time_ms: i64, now_ms: i64, out: &mut Vec<Window>) -> Result<()> {
        let time_ms = domain_time(self.domain, time_ms, now_ms);
        if time_ms == i64::MIN {
            return Err(no_timestamp("sliding window"));
        }
        // Flink's order: the latest window first.
        let last_start = window_start_with_offset(time_ms, self.offset_ms, self.slide_ms);
        let mut start = last_start;
        while start > time_ms.wrapping_sub(self.size_ms) {
            out.push(Window { start, end: start.wrapping_add(self.size_ms) });
            start = start.wrapping_sub(self.slide_ms);
        }
        Ok(())
    }

    fn is_event_time(&self) -> bool {
        self.domain == TimeDomain::EventTime
    }

    fn default_trigger(&self) -> Arc<dyn Trigger<D>> {
        default_time_trigger(self.domain)
    }

    fn name(&self) -> String {
        format!("sliding {}ms every {}ms offset {}ms ({:?})", self.size_ms, self.slide_ms, self.offset_ms, self.domain)
    }

    fn slicing(&self) -> Option<super::SliceSpec> {
        (self.domain == TimeDomain::EventTime).then_some(super::SliceSpec {
            size_ms: self.size_ms,
            slide_ms: self.slide_ms,
            offset_ms: self.offset_ms,
        })
    }
}

/// The gap of a session, fixed or computed from each element.
pub type GapFunction<D> = Arc<dyn Fn(&D) -> i64 + Send + Sync>;

/// Session windows: `[t, t + gap)` per element, merged per key while they intersect
/// (Flink's `EventTimeSessionWindows`, `DynamicEventTimeSessionWindows` and processing-time twins).
#[derive(Clone)]
pub struct SessionWindows<D> {
    gap: GapFunction<D>,
    description: String,
    domain: TimeDomain,
}

impl<D> SessionWindows<D> {
    /// Sessions that close after `gap_ms` without elements; the gap must be positive.
    pub fn with_gap(gap_ms: i64, domain: TimeDomain) -> Result<Self> {
        if gap_ms <= 0 {
            return Err(Error::Usage(format!("a session gap must be > 0, not {gap_ms}ms")));
        }
        Ok(SessionWindows { gap: Arc::new(move |_| gap_ms), description: format!("{gap_ms}ms"), domain })
    }

    /// Sessions whose gap is computed from each element (Flink's `withDynamicGap`).
    pub fn with_dynamic_gap(gap: impl Fn(&D) -> i64 + Send + Sync + 'static, domain: TimeDomain) -> Self {
        SessionWindows { gap: Arc::new(gap), description: "dynamic".to_string(), domain }
    }
}

impl<D: 'static> WindowAssigner<D> for SessionWindows<D> {
    fn assign(&self, value: &D, time_ms: i64, now_ms: i64, out: &mut Vec<Window>) -> Result<()> {
        let time_ms = domain_time(self.domain, time_ms, now_ms);
        let gap_ms = (self.gap)(value);
        if gap_ms <= 0 {
            return Err(Error::Usage(format!("a dynamic session gap must satisfy 0 < gap, got {gap_ms}ms")));
        }
        out.push(Window { start: time_ms, end: time_ms.wrapping_add(gap_ms) });
        Ok(())
    }

    fn is_event_time(&self) -> bool {
        self.domain == TimeDomain::EventTime
    }

    fn is_merging(&self) -> bool {
        true
    }

    fn default_trigger(&self) -> Arc<dyn Trigger<D>> {
        default_time_trigger(self.domain)
    }

    fn name(&self) -> String {
        format!("session gap {} ({:?})", self.description, self.domain)
    }
}

/// One window per key holding everything (Flink's `GlobalWindows`); it never fires on its own:
/// give it a trigger (count windows use a count trigger).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GlobalWindows;

impl<D> WindowAssigner<D> for GlobalWindows {
    fn assign(&self, _value: &D, _time_ms: i64, _now_ms: i64, out: &mut Vec<Window>) -> Result<()> {
        out.push(Window::GLOBAL);
        Ok(())
    }

    fn is_event_time(&self) -> bool {
        false
    }

    fn default_trigger(&self) -> Arc<dyn Trigger<D>> {
        Arc::new(NeverTrigger)
    }

    fn name(&self) -> String {
        "global".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(assigner: &dyn WindowAssigner<()>, time_ms: i64) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        assigner.assign(&(), time_ms, 0, &mut out).unwrap();
        out.into_iter().map(|w| (w.start, w.end)).collect()
    }

    #[test]
    fn tumbling_windows_are_epoch_aligned_also_below_zero() {
        let tumbling = TumblingWindows::event_time(10_000).unwrap();
        assert_eq!(windows(&tumbling, 0), vec![(0, 10_000)]);
        assert_eq!(windows(&tumbling, 9_999), vec![(0, 10_000)]);
        assert_eq!(windows(&tumbling, -1), vec![(-10_000, 0)]);
        assert_eq!(windows(&tumbling, -10_000), vec![(-10_000, 0)]);
        let offset = TumblingWindows::new(10_000, 3_000, TimeDomain::EventTime).unwrap();
        assert_eq!(windows(&offset, 2_999), vec![(-7_000, 3_000)]);
        assert_eq!(windows(&offset, 3_000), vec![(3_000, 13_000)]);
        assert!(TumblingWindows::new(10, 10, TimeDomain::EventTime).is_err());
        assert!(TumblingWindows::new(0, 0, TimeDomain::EventTime).is_err());
    }

    #[test]
    fn sliding_windows_come_latest_first() {
        let sliding = SlidingWindows::new(10_000, 5_000, 0, TimeDomain::EventTime).unwrap();
        assert_eq!(windows(&sliding, 7_000), vec![(5_000, 15_000), (0, 10_000)]);
        assert_eq!(windows(&sliding, -1), vec![(-5_000, 5_000), (-10_000, 0)]);
        let uneven = SlidingWindows::new(10_000, 3_000, 0, TimeDomain::EventTime).unwrap();
        assert_eq!(windows(&uneven, 0), vec![(0, 10_000), (-3_000, 7_000), (-6_000, 4_000), (-9_000, 1_000)]);
    }
}
