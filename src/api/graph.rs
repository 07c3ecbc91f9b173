//! The logical job graph: what the user asked for, before timely runs it.
//!
//! Every call on the stream API adds a node (an operator) or an edge (how records travel between
//! two operators) to a [`JobGraph`], a petgraph `DiGraph`. The graph is what `flowlab graph` draws,
//! what the metrics registry names its operators after, and (later) what the checkpoint store names
//! its snapshot files after: node indices are stable because every worker builds the same graph in
//! the same order.

use std::fmt::Write as _;

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;

/// What an operator does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperatorKind {
    /// Reads records and assigns watermarks.
    Source,
    /// One record in, one record out.
    Map,
    /// One record in, zero or one out.
    Filter,
    /// One record in, any number out.
    FlatMap,
    /// A keyed operator that keeps state per key.
    Keyed,
    /// Assigns windows and fires them.
    Window,
    /// Splits late records onto a side output.
    LateSplit,
    /// Merges several streams.
    Union,
    /// Observes without changing the stream.
    Inspect,
    /// Writes records out of the job.
    Sink,
}

/// How records travel along an edge (Flink's partitioners).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Partitioning {
    /// Stay on the worker that produced them (Flink's `forward`).
    Forward,
    /// To the worker that owns the record's key group (Flink's `keyBy`).
    Hash,
    /// Everything to worker 0 (Flink's `global`), as a single-file sink needs.
    Gather,
    /// Every record to every worker (Flink's `broadcast`).
    Broadcast,
    /// Which output of a multi-output operator (`late` for the late side output).
    SideOutput(&'static str),
}

/// One operator of the job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operator {
    /// A name for people, unique within the job together with the node index.
    pub name: String,
    /// What the operator does.
    pub kind: OperatorKind,
}

/// The logical dataflow of a job.
#[derive(Clone, Debug, Default)]
pub struct JobGraph {
    /// The job's name.
    pub name: String,
    /// Operators and the edges between them.
    pub graph: DiGraph<Operator, Partitioning>,
    /// How many workers run every operator.
    pub parallelism: usize,
}

impl JobGraph {
    /// An empty graph for a job named `name`.
    pub fn new(name: &str, parallelism: usize) -> Self {
        JobGraph { name: name.to_string(), graph: DiGraph::new(), parallelism }
    }

    /// Adds an operator fed by `inputs`.
    pub fn add(&mut self, name: &str, kind: OperatorKind, inputs: &[(NodeIndex, Partitioning)]) -> NodeIndex {
        let node = self.graph.add_node(Operator { name: name.to_string(), kind });
        for &(input, partitioning) in inputs {
            self.graph.add_edge(input, node, partitioning);
        }
        node
    }

    /// Renames an operator (Flink's `.name(…)`).
    pub fn rename(&mut self, node: NodeIndex, name: &str) {
        self.graph[node].name = name.to_string();
    }

    /// The operator at `node`.
    pub fn operator(&self, node: NodeIndex) -> &Operator {
        &self.graph[node]
    }

    /// Graphviz DOT, nodes in creation order, so the text is the same on every run.
    pub fn to_dot(&self) -> String {
        let mut dot = String::new();
        let _ = writeln!(dot, "digraph {:?} {{", self.name);
        let _ = writeln!(dot, "  rankdir=LR;");
        let _ = writeln!(dot, "  label={:?};", format!("{} (parallelism {})", self.name, self.parallelism));
        let _ = writeln!(dot, "  node [shape=box, style=rounded, fontname=\"Helvetica\"];");
        for node in self.graph.node_indices() {
            let operator = &self.graph[node];
            let shape = match operator.kind {
                OperatorKind::Source => ", shape=invhouse",
                OperatorKind::Sink => ", shape=house",
                _ => "",
            };
            let _ = writeln!(
                dot,
                "  n{} [label={:?}{shape}];",
                node.index(),
                format!("{}\n{:?}", operator.name, operator.kind)
            );
        }
        for edge in self.graph.edge_references() {
            let (label, style) = match edge.weight() {
                Partitioning::Forward => ("forward".to_string(), ""),
                Partitioning::Hash => ("hash(key)".to_string(), ", style=bold"),
                Partitioning::Gather => ("gather".to_string(), ", style=dashed"),
                Partitioning::Broadcast => ("broadcast".to_string(), ", style=dotted"),
                Partitioning::SideOutput(name) => (format!("side: {name}"), ", color=red, fontcolor=red"),
            };
            let _ =
                writeln!(dot, "  n{} -> n{} [label={label:?}{style}];", edge.source().index(), edge.target().index());
        }
        dot.push_str("}\n");
        dot
    }
}
