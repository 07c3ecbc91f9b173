//! An in-memory source: a fixed list of `(event_time_ms, value)` pairs, for tests and examples.

use std::sync::Arc;

use super::{FinishedReader, ReadStatus, Source, SourceReader};
use crate::error::Result;

/// Emits a list of `(event_time_ms, value)` pairs in order (Flink's `fromCollection`, parallelism 1).
#[derive(Clone, Debug)]
pub struct CollectionSource<D> {
    records: Arc<Vec<(i64, D)>>,
}

impl<D> CollectionSource<D> {
    /// A source of `records`, in this order.
    pub fn new(records: Vec<(i64, D)>) -> Self {
        CollectionSource { records: Arc::new(records) }
    }

    /// A source of `records`, shared rather than copied: every worker and every restart of a job
    /// reads the same list.
    pub fn shared(records: Arc<Vec<(i64, D)>>) -> Self {
        CollectionSource { records }
    }
}

impl<D: Clone + Send + Sync + 'static> Source<D> for CollectionSource<D> {
    fn is_single_stream(&self) -> bool {
        true
    }

    fn name(&self) -> String {
        format!("collection of {}", self.records.len())
    }

    fn open(&self, instance: usize, _instances: usize) -> Result<Box<dyn SourceReader<D>>> {
        if instance != 0 {
            return Ok(Box::new(FinishedReader));
        }
        Ok(Box::new(CollectionReader { records: Arc::clone(&self.records), next: 0 }))
    }

    fn reopen(&self, instance: usize, instances: usize, offset: u64) -> Result<Box<dyn SourceReader<D>>> {
        if instance != 0 {
            return self.open(instance, instances);
        }
        let next = usize::try_from(offset).unwrap_or(usize::MAX).min(self.records.len());
        Ok(Box::new(CollectionReader { records: Arc::clone(&self.records), next }))
    }
}

struct CollectionReader<D> {
    records: Arc<Vec<(i64, D)>>,
    next: usize,
}

impl<D: Clone> SourceReader<D> for CollectionReader<D> {
    fn read(&mut self, out: &mut Vec<(i64, D)>, max_records: usize) -> Result<ReadStatus> {
        let end = self.records.len().min(self.next + max_records);
        out.extend_from_slice(&self.records[self.next..end]);
        self.next = end;
        Ok(if self.next == self.records.len() { ReadStatus::Finished } else { ReadStatus::More })
    }

    fn offset(&self) -> u64 {
        self.next as u64
    }
}
