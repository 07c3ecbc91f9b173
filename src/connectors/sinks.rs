//! Sinks: collect in memory (tests), a CSV file, stdout.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{Sink, SinkWriter};
use crate::api::Partitioning;
use crate::error::{Error, Result};
use crate::time::Record;

/// Formats one record as one line of text.
pub type LineFormat<D> = Arc<dyn Fn(&Record<D>) -> String + Send + Sync>;

/// Collects every record in memory, from every worker; read it after the job with [`records`].
///
/// [`records`]: CollectSink::records
#[derive(Debug)]
pub struct CollectSink<D> {
    records: Arc<Mutex<Vec<Record<D>>>>,
}

impl<D> Clone for CollectSink<D> {
    fn clone(&self) -> Self {
        CollectSink { records: Arc::clone(&self.records) }
    }
}

impl<D> Default for CollectSink<D> {
    fn default() -> Self {
        CollectSink { records: Arc::new(Mutex::new(Vec::new())) }
    }
}

impl<D: Clone> CollectSink<D> {
    /// An empty collector. Clones share the same records.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything collected so far, in arrival order (which varies with parallelism: sort it).
    pub fn records(&self) -> Vec<Record<D>> {
        self.records.lock().expect("collect sink poisoned").clone()
    }

    /// The collected values, sorted: the result multiset, comparable across runs.
    pub fn sorted_values(&self) -> Vec<D>
    where
        D: Ord,
    {
        let mut values: Vec<D> = self.records().into_iter().map(|record| record.value).collect();
        values.sort();
        values
    }
}

impl<D: Clone + Send + 'static> Sink<D> for CollectSink<D> {
    fn name(&self) -> String {
        "collect".to_string()
    }

    fn open(&self, _instance: usize, _instances: usize) -> Result<Box<dyn SinkWriter<D>>> {
        Ok(Box::new(self.clone()))
    }
}

impl<D: Clone> SinkWriter<D> for CollectSink<D> {
    fn write(&mut self, records: &[Record<D>]) -> Result<()> {
        self.records.lock().expect("collect sink poisoned").extend_from_slice(records);
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Writes every record as one line of one CSV file; worker 0 writes, the others send to it.
pub struct CsvSink<D> {
    path: PathBuf,
    header: Option<String>,
    format: LineFormat<D>,
}

impl<D> CsvSink<D> {
    /// A sink writing `format(record)` lines to `path`, after an optional header line.
    pub fn new(
        path: impl AsRef<Path>,
        header: Option<&str>,
        format: impl Fn(&Record<D>) -> String + Send + Sync + 'static,
    ) -> Self {
        CsvSink { path: path.as_ref().to_path_buf(), header: header.map(str::to_string), format: Arc::new(format) }
    }
}

impl<D: 'static> Sink<D> for CsvSink<D> {
    fn name(&self) -> String {
        format!("csv {}", self.path.display())
    }

    fn partitioning(&self) -> Partitioning {
        Partitioning::Gather
    }

    fn open(&self, instance: usize, _instances: usize) -> Result<Box<dyn SinkWriter<D>>> {
        if instance != 0 {
            return Ok(Box::new(LineWriter { out: None, format: Arc::clone(&self.format), context: String::new() }));
        }
        let file = File::create(&self.path).map_err(|e| Error::io("cannot create output", &self.path, e))?;
        let mut out: Box<dyn Write> = Box::new(BufWriter::with_capacity(1 << 16, file));
        let context = format!("output {}", self.path.display());
        if let Some(header) = &self.header {
            writeln!(out, "{header}").map_err(|e| Error::io("cannot write", &context, e))?;
        }
        Ok(Box::new(LineWriter { out: Some(out), format: Arc::clone(&self.format), context }))
    }
}

/// Prints every record as one line on standard output; worker 0 prints.
pub struct StdoutSink<D> {
    format: LineFormat<D>,
}

impl<D> StdoutSink<D> {
    /// A sink printing `format(record)` lines.
    pub fn new(format: impl Fn(&Record<D>) -> String + Send + Sync + 'static) -> Self {
        StdoutSink { format: Arc::new(format) }
    }
}

impl<D: 'static> Sink<D> for StdoutSink<D> {
    fn name(&self) -> String {
        "stdout".to_string()
    }

    fn partitioning(&self) -> Partitioning {
        Partitioning::Gather
    }

    fn open(&self, instance: usize, _instances: usize) -> Result<Box<dyn SinkWriter<D>>> {
        let out: Option<Box<dyn Write>> = (instance == 0).then(|| Box::new(std::io::stdout()) as Box<dyn Write>);
        Ok(Box::new(LineWriter { out, format: Arc::clone(&self.format), context: "stdout".to_string() }))
    }
}

struct LineWriter<D> {
    out: Option<Box<dyn Write>>,
    format: LineFormat<D>,
    context: String,
}

impl<D> SinkWriter<D> for LineWriter<D> {
    fn write(&mut self, records: &[Record<D>]) -> Result<()> {
        let Some(out) = self.out.as_mut() else {
            assert!(records.is_empty(), "a gathering sink received records on a worker other than 0");
            return Ok(());
        };
        for record in records {
            writeln!(out, "{}", (self.format)(record)).map_err(|e| Error::io("cannot write", &self.context, e))?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        if let Some(out) = self.out.as_mut() {
            out.flush().map_err(|e| Error::io("cannot write", &self.context, e))?;
        }
        Ok(())
    }
}
