//! The rule engine: a keyed broadcast process function that turns users' events and the current
//! rules into coupons.
//!
//! Per user it keeps, in keyed state, the events as far back as the active rules look (at most
//! [`HORIZON_MS_MAX`](super::rules::HORIZON_MS_MAX) of event time), the decisions it is waiting
//! for, and when each rule last sent a coupon. An event that matches a
//! rule's `when` registers an event-time timer at `t + for`; when the watermark passes it, the rule
//! as it is *then* decides with everything that happened in its window — so the result depends on
//! event times and rule stamps only, never on arrival order, batching, parallelism or crashes.

use serde::{Deserialize, Serialize};

use super::events::{EventKind, UserEvent};
use super::rules::{Rule, RuleUpdate, category_hash};
use crate::api::{BroadcastContext, BroadcastState, KeyedBroadcastProcessFunction, ProcessContext};
use crate::state::{KeyedStateBackend, MapStateDescriptor, ValueStateDescriptor};
use crate::window::TimeDomain;

/// A coupon sent to a user.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Coupon {
    /// The user.
    pub user: String,
    /// The rule that sent it.
    pub rule: String,
    /// The coupon code.
    pub coupon: String,
    /// The event time of the triggering event.
    pub trigger_ms: i64,
}

/// One remembered event: `(event time, kind, hash of its category)`. Plain data, so that a
/// busy user's history is copied without an allocation per event.
type Seen = (i64, EventKind, u64);

/// The rule engine. Build it with [`CouponEngine::new`].
pub struct CouponEngine {
    rules: MapStateDescriptor<String, Rule>,
    history: ValueStateDescriptor<Vec<Seen>>,
    /// `(decision time, rule id, trigger time)`: decisions waiting for the watermark.
    waiting: MapStateDescriptor<(i64, String, i64), ()>,
    /// Rule id → trigger time of its last coupon.
    last_sent: MapStateDescriptor<String, i64>,
}

impl Default for CouponEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl CouponEngine {
    /// The engine, its state declared under fixed names.
    pub fn new() -> Self {
        CouponEngine {
            rules: MapStateDescriptor::new("rules"),
            history: ValueStateDescriptor::new("history"),
            waiting: MapStateDescriptor::new("waiting"),
            last_sent: MapStateDescriptor::new("last-sent"),
        }
    }

    /// Whether `rule`, triggered at `trigger_ms`, sends a coupon given the user's history.
    fn decide(&self, rule: &Rule, trigger_ms: i64, history: &[Seen], last_sent: Option<i64>) -> bool {
        let from_ms = trigger_ms - rule.within_ms;
        let when = rule.when.hashed();
        let matching = history
            .iter()
            .filter(|(time_ms, kind, category)| *time_ms > from_ms && *time_ms <= trigger_ms && when(*kind, *category))
            .count();
        let spoiled = rule.unless.as_ref().is_some_and(|(unless, for_ms)| {
            let unless = unless.hashed();
            history.iter().any(|(time_ms, kind, category)| {
                *time_ms > from_ms && *time_ms <= trigger_ms + for_ms && unless(*kind, *category)
            })
        });
        let allowed = match (last_sent, rule.limit_ms) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(last_ms), Some(limit_ms)) => trigger_ms >= last_ms + limit_ms,
        };
        matching >= rule.at_least as usize && !spoiled && allowed
    }
}

impl KeyedBroadcastProcessFunction<String, UserEvent, RuleUpdate> for CouponEngine {
    type Output = Coupon;

    fn open(&mut self, state: &mut KeyedStateBackend<String>) {
        state.register_value(&self.history);
        state.register_map(&self.waiting);
        state.register_map(&self.last_sent);
    }

    fn process_element(
        &mut self,
        event: UserEvent,
        rules: &BroadcastState,
        ctx: &mut ProcessContext<'_, String, Coupon>,
    ) {
        let time_ms = ctx.timestamp_ms();
        // Forget what no active rule looks at; the watermark here is the event's stamp, so this
        // is the same on every run.
        let active = rules.entries(&self.rules);
        let horizon_ms = active.iter().map(|(_, rule)| rule.horizon_ms()).max().unwrap_or(0);
        let keep_from_ms = ctx.current_watermark_ms().saturating_sub(horizon_ms);
        let mut history = ctx.state.value(&self.history).unwrap_or_default();
        history.retain(|(seen_ms, ..)| *seen_ms >= keep_from_ms);
        history.push((time_ms, event.kind, category_hash(&event.category)));
        ctx.state.update(&self.history, history);
        for (id, rule) in active {
            if rule.when.matches(&event) {
                let decide_ms = time_ms + rule.wait_ms();
                ctx.state.map_put(&self.waiting, (decide_ms, id, time_ms), ());
                ctx.register_event_time_timer(decide_ms);
            }
        }
    }

    fn process_broadcast_element(&mut self, update: RuleUpdate, ctx: &mut BroadcastContext<'_, String, Coupon>) {
        match update {
            RuleUpdate::Upsert(rule) => ctx.broadcast.put(&self.rules, rule.id.clone(), rule),
            RuleUpdate::Remove(id) => ctx.broadcast.remove(&self.rules, &id),
        }
    }

    fn on_timer(
        &mut self,
        time_ms: i64,
        domain: TimeDomain,
        rules: &BroadcastState,
        ctx: &mut ProcessContext<'_, String, Coupon>,
    ) {
        if domain != TimeDomain::EventTime {
            return;
        }
        let history = ctx.state.value(&self.history).unwrap_or_default();
        let due: Vec<(i64, String, i64)> = ctx
            .state
            .map_entries(&self.waiting)
            .into_iter()
            .map(|(waiting, ())| waiting)
            .filter(|(decide_ms, ..)| *decide_ms == time_ms)
            .collect();
        for (decide_ms, id, trigger_ms) in due {
            ctx.state.map_remove(&self.waiting, &(decide_ms, id.clone(), trigger_ms));
            // The rule as it is now: changed or removed since the trigger, the change counts.
            let Some(rule) = rules.get(&self.rules, &id) else { continue };
            let last_sent = ctx.state.map_get(&self.last_sent, &id);
            if self.decide(rule, trigger_ms, &history, last_sent) {
                ctx.state.map_put(&self.last_sent, id.clone(), trigger_ms);
                let user = ctx.key().clone();
                ctx.collect(Coupon { user, rule: id, coupon: rule.coupon.clone(), trigger_ms });
            }
        }
    }
}
