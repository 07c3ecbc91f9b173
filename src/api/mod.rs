//! The stream API: flowlab's DataStream.
//!
//! A job is a function from an [`Env`] to nothing: it reads sources, transforms streams, and ends
//! in sinks. As in timely, that function runs once on every worker, and every worker builds the
//! same dataflow; unlike plain timely, every call also records an operator in the [`JobGraph`], the
//! logical plan that `flowlab graph` draws and the metrics are named after.
//!
//! ```
//! use flowlab::api::Env;
//! use flowlab::connectors::{CollectSink, CollectionSource};
//! use flowlab::runtime::{execute, JobConfig};
//! use flowlab::time::WatermarkStrategy;
//!
//! let out = CollectSink::new();
//! let sink = out.clone();
//! execute(&JobConfig::threads("doubles", 2), move |env: &Env| {
//!     env.source(CollectionSource::new(vec![(1, 10i64), (2, 20), (3, 30)]), WatermarkStrategy::monotonous())
//!         .map(|value| value * 2)
//!         .filter(|value| *value > 20)
//!         .sink(sink.clone());
//! })
//! .unwrap();
//! assert_eq!(out.sorted_values(), vec![40, 60]);
//! ```

mod broadcast;
mod compact_key;
mod graph;
mod keyed;
mod process;
mod stream;
mod windowed;

pub use broadcast::{
    BroadcastContext, BroadcastState, BroadcastStream, ConnectedStreams, KeyedBroadcastProcessFunction,
};
pub use compact_key::CompactKey;
pub use graph::{JobGraph, Operator, OperatorKind, Partitioning};
pub use keyed::KeyedStream;
pub use process::{KeyedProcessCore, KeyedProcessFunction, ProcessContext};
pub use stream::Stream;
pub use windowed::{WindowOutput, WindowedStream};

use std::cell::RefCell;
use std::hash::Hash;
use std::rc::Rc;
use std::sync::Arc;

use petgraph::graph::NodeIndex;
use timely::dataflow::Scope;

use crate::connectors::Source;
use crate::metrics::OperatorMetrics;
use crate::runtime::WorkerContext;
use crate::time::{Time, WatermarkStrategy};

/// What a stream may carry: cloneable, and serialisable so that timely can exchange it between
/// workers and processes.
pub trait Data: timely::ExchangeData + Clone {}
impl<T: timely::ExchangeData + Clone> Data for T {}

/// What a stream may be keyed by: data with a stable hash and a total order (keyed state is kept in
/// key order, so nothing ever depends on hash-map iteration order).
pub trait Key: Data + Hash + Ord {}
impl<T: Data + Hash + Ord> Key for T {}

/// One worker's handle on the job being built: where sources come from.
#[derive(Clone)]
pub struct Env<'scope> {
    scope: Scope<'scope, Time>,
    shared: Rc<Shared>,
}

struct Shared {
    graph: RefCell<JobGraph>,
    context: WorkerContext,
}

impl<'scope> Env<'scope> {
    /// Wraps a timely scope; the runtime calls this once per worker.
    pub(crate) fn new(scope: Scope<'scope, Time>, job_name: &str, context: WorkerContext) -> Self {
        let graph = RefCell::new(JobGraph::new(job_name, context.peers));
        Env { scope, shared: Rc::new(Shared { graph, context }) }
    }

    /// This worker's index, in `0..peers()`.
    pub fn index(&self) -> usize {
        self.shared.context.index
    }

    /// The number of workers (the job's parallelism).
    pub fn peers(&self) -> usize {
        self.shared.context.peers
    }

    /// The worker's context: clock, metrics, failure flag.
    pub fn context(&self) -> &WorkerContext {
        &self.shared.context
    }

    /// The job graph built so far.
    pub fn graph(&self) -> JobGraph {
        self.shared.graph.borrow().clone()
    }

    /// Reads `source`, assigning watermarks with `strategy` (Flink's `fromSource`).
    pub fn source<D: Data>(&self, source: impl Source<D>, strategy: WatermarkStrategy) -> Stream<'scope, D> {
        let name = format!("source: {} [{strategy}]", source.name());
        let in_source_order = source.is_single_stream();
        let node = self.add_node(&name, OperatorKind::Source, &[]);
        let metrics = self.metrics(node, &name);
        let stream = crate::time::source::watermarked_source(
            self.scope,
            node.index(),
            &name,
            Arc::new(source),
            strategy,
            self.shared.context.clone(),
            metrics,
        );
        Stream::new(self.clone(), stream, node, in_source_order)
    }

    pub(crate) fn scope(&self) -> Scope<'scope, Time> {
        self.scope
    }

    pub(crate) fn add_node(&self, name: &str, kind: OperatorKind, inputs: &[(NodeIndex, Partitioning)]) -> NodeIndex {
        self.shared.graph.borrow_mut().add(name, kind, inputs)
    }

    pub(crate) fn rename_node(&self, node: NodeIndex, name: &str) {
        self.shared.graph.borrow_mut().rename(node, name);
        self.shared.context.metrics.rename(node.index(), name);
    }

    pub(crate) fn metrics(&self, node: NodeIndex, name: &str) -> Arc<OperatorMetrics> {
        self.shared.context.metrics.register(node.index(), name, self.index())
    }
}
