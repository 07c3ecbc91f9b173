//! # flowlab
//!
//! Apache Flink's four pillars — checkpoint, state, time and window — on timely-dataflow's progress
//! tracking, with a deterministic simulator that proves exactly-once recovery.
//!
//! Data flows one way through the modules: [`api`] (what the user writes) builds a
//! [`api::JobGraph`]; [`runtime`] turns it into a timely dataflow on a substrate; [`time`],
//! [`window`] and [`state`] are the operators; [`checkpoint`] makes their state durable and the
//! output exactly-once; [`connectors`] are where records enter and leave. The book (`book/`) explains each; its examples are compiled and run
//! as doctests of this crate.

#![warn(missing_docs)]

pub mod api;
pub mod checkpoint;
pub mod connectors;
pub mod error;
pub mod jobs;
pub mod marketing;
pub mod metrics;
pub mod nexmark;
pub mod runtime;
pub mod state;
pub mod time;
pub mod viz;
pub mod window;

pub use error::{Error, Result};

/// The book's chapters, compiled so that their examples run with `cargo test`.
#[cfg(doctest)]
pub mod book {
    #[doc = include_str!("../book/src/introduction.md")]
    pub struct Introduction;
    #[doc = include_str!("../book/src/architecture.md")]
    pub struct Architecture;
    #[doc = include_str!("../book/src/time.md")]
    pub struct Time;
    #[doc = include_str!("../book/src/windows.md")]
    pub struct Windows;
    #[doc = include_str!("../book/src/state.md")]
    pub struct State;
    #[doc = include_str!("../book/src/simulator.md")]
    pub struct Simulator;
    #[doc = include_str!("../book/src/checkpoints.md")]
    pub struct Checkpoints;
    #[doc = include_str!("../book/src/marketing.md")]
    pub struct Marketing;
    #[doc = include_str!("../book/src/benchmarks.md")]
    pub struct Benchmarks;
}
