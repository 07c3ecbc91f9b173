//! # Case study: the real-time rule-based marketing system
//!
//! The course flowlab grew out of builds Flink's classic *dynamic rules* application: users'
//! behaviour events stream in (views, carts, purchases, logins); marketing rules, which change while
//! the job runs, decide which users get a coupon; and every coupon must reach its user exactly
//! once — never twice after a crash, never lost.
//!
//! The pieces, one module each:
//! - [`events`]: the event model, a seeded generator with skewed users and bounded disorder, and
//!   the CSV / JSON-lines file format.
//! - [`rules`]: the rule format (JSON lines of `upsert` / `remove` updates with an event time) and
//!   its validation; refused lines go to a side output with their reason.
//! - [`coupons`]: the rule engine, a keyed broadcast process function: rules live in broadcast
//!   state, each user's recent events and pending decisions in keyed state, and decisions are taken
//!   by event-time timers.
//! - [`job`]: the wiring, and the runs: on threads, and under the simulator with crashes, checked
//!   against the fault-free run.
//! - [`report`]: an SVG time line of a simulated run: coupons committed, checkpoints and crashes.
//!
//! Exactly-once comes from the engine, not from the application: the coupon sink is a
//! two-phase-commit sink, the rules and every user's state are in the checkpoints, and sources
//! replay from their offsets. `flowlab demo` shows it: the run with crashes commits exactly the
//! coupons of the run without.

pub mod coupons;
pub mod events;
pub mod job;
pub mod report;
pub mod rules;

pub use coupons::{Coupon, CouponEngine};
pub use events::{EventKind, EventsConfig, UserEvent};
pub use job::{MarketingCheck, MarketingInput, MarketingOutput, MarketingRun, build, run_threads};
pub use rules::{DEMO_RULES, RejectedRule, Rule, RuleUpdate};
