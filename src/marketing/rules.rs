//! Marketing rules: a small JSON format, read one update per line, and its validation.
//!
//! A rules file has one JSON object per line: an update that takes effect at event time `at`
//! (milliseconds). `upsert` adds a rule or replaces the rule with the same id; `remove` deletes one.
//!
//! ```json
//! {"at": 0, "upsert": {"id": "shoe-browser", "coupon": "SHOES10",
//!   "when": {"event": "view", "category": "shoes", "at_least": 3, "within": "10m"},
//!   "unless": {"event": "purchase", "category": "shoes", "for": "0ms"}, "limit": "1d"}}
//! {"at": 0, "upsert": {"id": "cart-reminder", "coupon": "REMIND",
//!   "when": {"event": "add_to_cart", "at_least": 1, "within": "1ms"},
//!   "unless": {"event": "purchase", "for": "30m"}, "limit": "once"}}
//! {"at": 3600000, "remove": "cart-reminder"}
//! ```
//!
//! A rule *triggers* for a user at the event time `t` of an event matching `when` if at least
//! `at_least` matching events fall in `(t − within, t]`. If `unless` is given, the coupon is only
//! sent if no event matching it falls in `(t − within, t + for]` — "did not buy in that time".
//! The decision is taken once the watermark passes `t + for` (an event-time timer), so it never
//! depends on the order events arrive in. `limit` is `once` (once per user, ever) or a duration:
//! at most one coupon of this rule per user in that span of event time.
//!
//! Validation rejects, with a reason, a line that is not JSON of this shape (unknown fields
//! included), an unknown event kind, an empty id or coupon, `at_least` of 0, non-positive
//! `within`, negative `for`, a horizon (`within + for`) above [`HORIZON_MS_MAX`], and
//! contradictory rules: an `unless` that every triggering event itself matches, so that the rule
//! could never send anything.

use serde::{Deserialize, Serialize};

use super::events::{EventKind, UserEvent};
use crate::time::{format_duration_ms, parse_duration_ms};

/// The longest span of event time a rule may look at (`within + for`): one day. Users' event
/// histories are kept this long, which bounds their state.
pub const HORIZON_MS_MAX: i64 = 86_400_000;

/// The 64-bit FNV-1a hash users' histories keep instead of a category's name.
pub fn category_hash(category: &str) -> u64 {
    flowlab_sim::stable_hash(category.as_bytes())
}

/// A validated rule, as it lives in broadcast state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// Unique name; an upsert with the same id replaces the rule.
    pub id: String,
    /// What the user gets.
    pub coupon: String,
    /// What triggers it.
    pub when: Pattern,
    /// How many matching events, at least.
    pub at_least: u32,
    /// Over how much event time, ending at the triggering event.
    pub within_ms: i64,
    /// What must not have happened, and for how long after the trigger.
    pub unless: Option<(Pattern, i64)>,
    /// At most one coupon per user in this span (`None`: once ever).
    pub limit_ms: Option<i64>,
}

/// Which events a rule looks at: a kind, and optionally a category.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pattern {
    /// The event kind.
    pub kind: EventKind,
    /// The category, if the rule cares.
    pub category: Option<String>,
}

impl Pattern {
    /// Whether `event` matches.
    pub fn matches(&self, event: &UserEvent) -> bool {
        self.matches_parts(event.kind, &event.category)
    }

    /// Whether an event of `kind` in `category` matches.
    pub fn matches_parts(&self, kind: EventKind, category: &str) -> bool {
        kind == self.kind && self.category.as_deref().is_none_or(|wanted| wanted == category)
    }

    /// A test for events given as their kind and [`category_hash`], hashing this pattern's
    /// category once.
    pub fn hashed(&self) -> impl Fn(EventKind, u64) -> bool + use<> {
        let (wanted_kind, wanted_hash) = (self.kind, self.category.as_deref().map(category_hash));
        move |kind, hash| kind == wanted_kind && wanted_hash.is_none_or(|wanted| wanted == hash)
    }

    /// Whether every event this pattern matches also matches `other`.
    fn implies(&self, other: &Pattern) -> bool {
        self.kind == other.kind
            && match (&self.category, &other.category) {
                (_, None) => true,
                (Some(mine), Some(theirs)) => mine == theirs,
                (None, Some(_)) => false,
            }
    }
}

impl Rule {
    /// How far back from a trigger, and forward, the rule looks: `within + for`.
    pub fn horizon_ms(&self) -> i64 {
        self.within_ms + self.unless.as_ref().map_or(0, |(_, for_ms)| *for_ms)
    }

    /// How long after the trigger the decision waits: `for`, or 0.
    pub fn wait_ms(&self) -> i64 {
        self.unless.as_ref().map_or(0, |(_, for_ms)| *for_ms)
    }

    /// The rule in one line, for people.
    pub fn describe(&self) -> String {
        let pattern = |pattern: &Pattern| match &pattern.category {
            Some(category) => format!("{} of {category}", pattern.kind.name()),
            None => pattern.kind.name().to_string(),
        };
        let mut text = format!(
            "{}: {} x{} within {}",
            self.id,
            pattern(&self.when),
            self.at_least,
            format_duration_ms(self.within_ms)
        );
        if let Some((unless, for_ms)) = &self.unless {
            text.push_str(&format!(", unless {} for {}", pattern(unless), format_duration_ms(*for_ms)));
        }
        text.push_str(&format!(
            " -> {} ({})",
            self.coupon,
            self.limit_ms.map_or("once".to_string(), |ms| format!("at most once per {}", format_duration_ms(ms)))
        ));
        text
    }
}

/// A change to the rules, effective from event time `at`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RuleUpdate {
    /// Add or replace a rule.
    Upsert(Rule),
    /// Delete the rule with this id (nothing if there is none).
    Remove(String),
}

/// One line of a rules file, before validation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleLine {
    /// The 1-based line number.
    pub line: u64,
    /// The text.
    pub text: String,
}

/// A rule update that validation refused, on the job's side output.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RejectedRule {
    /// The line of the rules file.
    pub line: u64,
    /// Why.
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateSpec {
    at: i64,
    #[serde(default)]
    upsert: Option<RuleSpec>,
    #[serde(default)]
    remove: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    id: String,
    coupon: String,
    when: WhenSpec,
    #[serde(default)]
    unless: Option<UnlessSpec>,
    #[serde(default = "once")]
    limit: String,
}

fn once() -> String {
    "once".to_string()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WhenSpec {
    event: String,
    #[serde(default)]
    category: Option<String>,
    at_least: u32,
    within: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnlessSpec {
    event: String,
    #[serde(default)]
    category: Option<String>,
    #[serde(rename = "for")]
    for_: String,
}

/// The event time a rules-file line takes effect at: its `at`, read leniently so that even a line
/// validation will reject has a place in time (`None`: not even `at` could be read).
pub fn effective_at(text: &str) -> Option<i64> {
    serde_json::from_str::<serde_json::Value>(text).ok()?.get("at")?.as_i64()
}

/// Reads a rules file into `(at, line)` pairs for the rules source; lines without a readable
/// `at` take the previous line's (0 for the first), and validation rejects them in the job.
pub fn rule_lines(text: &str) -> Vec<(i64, RuleLine)> {
    let mut at_ms = 0;
    let mut lines = Vec::new();
    for (index, text) in text.lines().enumerate() {
        if text.trim().is_empty() || text.trim_start().starts_with("//") {
            continue;
        }
        at_ms = effective_at(text).unwrap_or(at_ms);
        lines.push((at_ms, RuleLine { line: index as u64 + 1, text: text.to_string() }));
    }
    lines
}

/// Validates one line: the update, or why it is refused.
pub fn validate(line: &RuleLine) -> Result<RuleUpdate, RejectedRule> {
    let reject = |reason: String| RejectedRule { line: line.line, reason };
    let spec: UpdateSpec = serde_json::from_str(&line.text).map_err(|e| reject(format!("malformed: {e}")))?;
    let _ = spec.at;
    match (spec.upsert, spec.remove) {
        (Some(rule), None) => compile(rule).map(RuleUpdate::Upsert).map_err(reject),
        (None, Some(id)) if !id.is_empty() => Ok(RuleUpdate::Remove(id)),
        (None, Some(_)) => Err(reject("malformed: remove needs a rule id".to_string())),
        _ => Err(reject("malformed: a line needs exactly one of upsert and remove".to_string())),
    }
}

fn pattern(event: &str, category: Option<String>) -> Result<Pattern, String> {
    let kind = EventKind::parse(event).ok_or_else(|| {
        let known: Vec<&str> = EventKind::ALL.iter().map(|kind| kind.name()).collect();
        format!("malformed: unknown event {event:?} (known: {})", known.join(", "))
    })?;
    Ok(Pattern { kind, category: category.filter(|category| !category.is_empty()) })
}

fn duration(field: &str, text: &str) -> Result<i64, String> {
    parse_duration_ms(text).map_err(|e| format!("malformed: {field}: {e}"))
}

fn compile(spec: RuleSpec) -> Result<Rule, String> {
    if spec.id.trim().is_empty() || spec.coupon.trim().is_empty() {
        return Err("malformed: id and coupon must not be empty".to_string());
    }
    let when = pattern(&spec.when.event, spec.when.category)?;
    if spec.when.at_least == 0 {
        return Err("malformed: at_least must be at least 1".to_string());
    }
    let within_ms = duration("within", &spec.when.within)?;
    if within_ms <= 0 {
        return Err("malformed: within must be positive".to_string());
    }
    let unless = match spec.unless {
        Some(unless) => Some((pattern(&unless.event, unless.category)?, duration("for", &unless.for_)?)),
        None => None,
    };
    let limit_ms = match spec.limit.as_str() {
        "once" => None,
        text => {
            let ms = duration("limit", text)?;
            if ms <= 0 {
                return Err("malformed: limit must be `once` or a positive duration".to_string());
            }
            Some(ms)
        }
    };
    let rule =
        Rule { id: spec.id, coupon: spec.coupon, when, at_least: spec.when.at_least, within_ms, unless, limit_ms };
    if rule.horizon_ms() > HORIZON_MS_MAX {
        return Err(format!(
            "malformed: within + for is {}, more than the {} a rule may look at",
            format_duration_ms(rule.horizon_ms()),
            format_duration_ms(HORIZON_MS_MAX)
        ));
    }
    if let Some((unless, _)) = &rule.unless
        && rule.when.implies(unless)
    {
        return Err(format!(
            "contradictory: every {} that triggers rule {:?} also matches its `unless`, so it could never send a coupon",
            rule.when.kind.name(),
            rule.id
        ));
    }
    Ok(rule)
}

/// The rules the demo starts with, and changes while it runs (event times in ms): a browsing
/// rule, a cart reminder, a login rule, one rule changed and one removed mid-run, one malformed
/// line and one contradictory rule (both rejected).
pub const DEMO_RULES: &str = r#"{"at": 0, "upsert": {"id": "shoe-browser", "coupon": "SHOES10", "when": {"event": "view", "category": "shoes", "at_least": 3, "within": "10m"}, "unless": {"event": "purchase", "category": "shoes", "for": "0ms"}, "limit": "1d"}}
{"at": 0, "upsert": {"id": "cart-reminder", "coupon": "REMIND", "when": {"event": "add_to_cart", "at_least": 1, "within": "1ms"}, "unless": {"event": "purchase", "for": "2m"}, "limit": "once"}}
{"at": 0, "upsert": {"id": "frequent-visitor", "coupon": "WELCOME5", "when": {"event": "login", "at_least": 4, "within": "1h"}, "limit": "1d"}}
{"at": 60000, "upsert": {"id": "bookworm", "coupon": "READ15", "when": {"event": "view", "category": "books", "at_least": 5, "within": "30m"}, "unless": {"event": "purchase", "category": "books", "for": "10m"}}}
{"at": 120000, "upsert": {"id": "typo", "coupon": "OOPS", "when": {"event": "veiw", "at_least": 2, "within": "5m"}}}
{"at": 150000, "upsert": {"id": "never", "coupon": "NEVER", "when": {"event": "purchase", "at_least": 1, "within": "1m"}, "unless": {"event": "purchase", "for": "1m"}}}
{"at": 200000, "upsert": {"id": "shoe-browser", "coupon": "SHOES20", "when": {"event": "view", "category": "shoes", "at_least": 4, "within": "10m"}, "unless": {"event": "purchase", "category": "shoes", "for": "0ms"}, "limit": "1d"}}
{"at": 300000, "remove": "cart-reminder"}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn validated(text: &str) -> Result<RuleUpdate, RejectedRule> {
        validate(&RuleLine { line: 7, text: text.to_string() })
    }

    #[test]
    fn the_demo_rules_have_two_rejections_with_their_reasons() {
        let results: Vec<_> = rule_lines(DEMO_RULES).iter().map(|(_, line)| validate(line)).collect();
        let rejected: Vec<&RejectedRule> = results.iter().filter_map(|result| result.as_ref().err()).collect();
        assert_eq!(rejected.len(), 2, "{rejected:?}");
        assert_eq!(rejected[0].line, 5);
        assert!(rejected[0].reason.contains("unknown event \"veiw\""), "{}", rejected[0].reason);
        assert_eq!(rejected[1].line, 6);
        assert!(rejected[1].reason.starts_with("contradictory"), "{}", rejected[1].reason);
        assert_eq!(results.iter().filter(|result| result.is_ok()).count(), 6);
    }

    #[test]
    fn every_malformed_shape_is_refused_with_a_reason() {
        let cases = [
            ("not json", "malformed"),
            (r#"{"at": 0}"#, "exactly one of upsert and remove"),
            (r#"{"at": 0, "remove": ""}"#, "needs a rule id"),
            (r#"{"at": 0, "remove": "x", "colour": 1}"#, "unknown field"),
            (
                r#"{"at": 0, "upsert": {"id": "a", "coupon": "C", "when": {"event": "view", "at_least": 0, "within": "1m"}}}"#,
                "at_least",
            ),
            (
                r#"{"at": 0, "upsert": {"id": "a", "coupon": "C", "when": {"event": "view", "at_least": 1, "within": "0ms"}}}"#,
                "within must be positive",
            ),
            (
                r#"{"at": 0, "upsert": {"id": "a", "coupon": "C", "when": {"event": "view", "at_least": 1, "within": "2d"}}}"#,
                "more than",
            ),
            (
                r#"{"at": 0, "upsert": {"id": "a", "coupon": "C", "when": {"event": "view", "at_least": 1, "within": "1m"}, "limit": "sometimes"}}"#,
                "limit",
            ),
            (
                r#"{"at": 0, "upsert": {"id": "", "coupon": "C", "when": {"event": "view", "at_least": 1, "within": "1m"}}}"#,
                "must not be empty",
            ),
            (
                r#"{"at": 0, "upsert": {"id": "a", "coupon": "C", "when": {"event": "view", "category": "toys", "at_least": 1, "within": "1m"}, "unless": {"event": "view", "for": "1m"}}}"#,
                "contradictory",
            ),
        ];
        for (text, reason) in cases {
            let rejected = validated(text).expect_err(text);
            assert_eq!(rejected.line, 7);
            assert!(rejected.reason.contains(reason), "{text}: {}", rejected.reason);
        }
    }

    #[test]
    fn an_unless_on_another_category_is_not_a_contradiction() {
        let text = r#"{"at": 5, "upsert": {"id": "a", "coupon": "C", "when": {"event": "view", "at_least": 2, "within": "1m"}, "unless": {"event": "view", "category": "toys", "for": "1m"}, "limit": "1h"}}"#;
        let Ok(RuleUpdate::Upsert(rule)) = validated(text) else { panic!("refused") };
        assert_eq!(rule.limit_ms, Some(3_600_000));
        assert_eq!(rule.horizon_ms(), 120_000);
        assert_eq!(effective_at(text), Some(5));
    }

    #[test]
    fn lines_without_a_readable_time_take_the_previous_one() {
        let lines =
            rule_lines("{\"at\": 10, \"remove\": \"a\"}\n\nbroken\n// a comment\n{\"at\": 30, \"remove\": \"b\"}\n");
        let at: Vec<(i64, u64)> = lines.iter().map(|(at, line)| (*at, line.line)).collect();
        assert_eq!(at, vec![(10, 1), (10, 3), (30, 5)]);
    }
}
