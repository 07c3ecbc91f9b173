//! Nexmark: the standard benchmark of streaming window queries, on flowlab.
//!
//! Nexmark models an online auction site: people register, open auctions, and bid. Its queries
//! are small continuous SQL programs over those three streams — pass-through, sliding-window
//! top-k, tumbling-window maximum, window join, sessions, processing-time windows — and its
//! generator makes the same kind of input everywhere, so numbers from different systems can be
//! set side by side. flowlab runs the window queries of the nexmark-flink repository on its own
//! stream API:
//!
//! - [`generator`]: the reference generator's model, event by event, seeded
//!   ([`NexmarkConfig`], [`NexmarkSource`]);
//! - [`queries`]: q0, q5, q7, q8, q11 and q12 ([`Query`]), with the reference DDL's watermark;
//! - [`baseline`]: the same queries as plain single-threaded loops over the same events, which
//!   mark what one core can do without a dataflow, and compute the same rows.
//!
//! `flowlab bench nexmark --query q5 --events 10000000` runs a query on both and compares them
//! (see the book's chapter "Benchmarking windows").
//!
//! ```
//! use flowlab::api::Env;
//! use flowlab::connectors::CollectSink;
//! use flowlab::nexmark::{NexmarkConfig, NexmarkSource, nexmark_watermarks, queries};
//! use flowlab::runtime::{execute, JobConfig};
//!
//! let config = NexmarkConfig { events: 20_000, ..NexmarkConfig::default() };
//! let sessions = CollectSink::new();
//! let sink = sessions.clone();
//! execute(&JobConfig::threads("q11", 2), move |env: &Env| {
//!     let events = env.source(NexmarkSource::new(config.clone()), nexmark_watermarks());
//!     queries::q11(events).results.sink(sink.clone());
//! })
//! .unwrap();
//! // 20 000 events at 10 000 per second: two seconds of bids, so every bidder has one session,
//! // and the sessions hold every bid (46 of every 50 events).
//! let rows = sessions.sorted_values();
//! assert_eq!(rows.iter().map(|row| row.count).sum::<u64>(), 20_000 / 50 * 46);
//! assert!(rows.windows(2).all(|pair| pair[0].bidder < pair[1].bidder));
//! ```

pub mod baseline;
pub mod generator;
pub mod model;
pub mod queries;

pub use generator::{FIRST_AUCTION_ID, FIRST_CATEGORY_ID, FIRST_PERSON_ID, NexmarkConfig, NexmarkSource, SplitMix64};
pub use model::{Auction, Bid, Event, Person};
pub use queries::{Query, WATERMARK_DELAY_MS, nexmark_watermarks};
