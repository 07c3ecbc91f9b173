//! Evictors: which elements leave a window before or after its function runs (Flink's `Evictor`).
//!
//! Evictors need the elements themselves, so a window with an evictor keeps every element (in
//! arrival order) instead of an accumulator. Evicted elements are gone from the window for good.

use super::Window;

/// Removes elements from a window's buffer around each firing. A lab seam.
pub trait Evictor<D>: Send + Sync + 'static {
    /// Before the window function sees `elements` (arrival order, `(event_time_ms, value)`).
    fn evict_before(&self, elements: &mut Vec<(i64, D)>, window: &Window);
    /// After the window function has run.
    fn evict_after(&self, elements: &mut Vec<(i64, D)>, window: &Window);
}

/// Keeps the last `max_count` elements (Flink's `CountEvictor`): evicts from the front.
#[derive(Clone, Copy, Debug)]
pub struct CountEvictor {
    max_count: usize,
    after: bool,
}

impl CountEvictor {
    /// Evicts before the function runs.
    pub fn of(max_count: usize) -> Self {
        CountEvictor { max_count, after: false }
    }

    /// Evicts after the function runs instead (Flink's `doEvictAfter`).
    pub fn after(max_count: usize) -> Self {
        CountEvictor { max_count, after: true }
    }

    fn evict<D>(&self, elements: &mut Vec<(i64, D)>) {
        if elements.len() > self.max_count {
            elements.drain(..elements.len() - self.max_count);
        }
    }
}

impl<D> Evictor<D> for CountEvictor {
    fn evict_before(&self, elements: &mut Vec<(i64, D)>, _window: &Window) {
        if !self.after {
            self.evict(elements);
        }
    }

    fn evict_after(&self, elements: &mut Vec<(i64, D)>, _window: &Window) {
        if self.after {
            self.evict(elements);
        }
    }
}

/// Keeps the elements within `window_size_ms` of the newest one: evicts every element with
/// `time <= max_time - window_size_ms` (Flink's `TimeEvictor`).
#[derive(Clone, Copy, Debug)]
pub struct TimeEvictor {
    window_size_ms: i64,
    after: bool,
}

impl TimeEvictor {
    /// Evicts before the function runs.
    pub fn of(window_size_ms: i64) -> Self {
        TimeEvictor { window_size_ms, after: false }
    }

    /// Evicts after the function runs instead.
    pub fn after(window_size_ms: i64) -> Self {
        TimeEvictor { window_size_ms, after: true }
    }

    fn evict<D>(&self, elements: &mut Vec<(i64, D)>) {
        let Some(max_time) = elements.iter().map(|(time, _)| *time).max() else { return };
        let cutoff = max_time.saturating_sub(self.window_size_ms);
        elements.retain(|(time, _)| *time > cutoff);
    }
}

impl<D> Evictor<D> for TimeEvictor {
    fn evict_before(&self, elements: &mut Vec<(i64, D)>, _window: &Window) {
        if !self.after {
            self.evict(elements);
        }
    }

    fn evict_after(&self, elements: &mut Vec<(i64, D)>, _window: &Window) {
        if self.after {
            self.evict(elements);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_evictor_keeps_the_last_elements_and_time_evictor_the_newest_span() {
        let mut elements: Vec<(i64, u8)> = vec![(5, 0), (1, 1), (9, 2), (7, 3)];
        CountEvictor::of(2).evict_before(&mut elements, &Window::GLOBAL);
        assert_eq!(elements, vec![(9, 2), (7, 3)]);
        let mut elements: Vec<(i64, u8)> = vec![(5, 0), (1, 1), (9, 2), (7, 3)];
        CountEvictor::after(2).evict_before(&mut elements, &Window::GLOBAL);
        assert_eq!(elements.len(), 4);
        TimeEvictor::of(4).evict_before(&mut elements, &Window::GLOBAL);
        assert_eq!(elements, vec![(9, 2), (7, 3)], "5 <= 9 - 4 is evicted");
    }
}
