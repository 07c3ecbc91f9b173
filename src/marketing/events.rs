//! User-behaviour events: the model, a seeded generator with skew and bounded disorder, and the
//! file format (CSV or JSON lines) the same events are read from.

use std::io::Write;
use std::path::Path;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What a user did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Looked at an item.
    View,
    /// Put an item in the cart.
    AddToCart,
    /// Bought an item.
    Purchase,
    /// Logged in.
    Login,
}

impl EventKind {
    /// Every kind, in the order of the file format's names.
    pub const ALL: [EventKind; 4] = [EventKind::View, EventKind::AddToCart, EventKind::Purchase, EventKind::Login];

    /// The name in files and rules: `view`, `add_to_cart`, `purchase`, `login`.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::View => "view",
            EventKind::AddToCart => "add_to_cart",
            EventKind::Purchase => "purchase",
            EventKind::Login => "login",
        }
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// One user-behaviour event. Its event time travels beside it, in the record.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UserEvent {
    /// Who, e.g. `u42`.
    pub user: String,
    /// What.
    pub kind: EventKind,
    /// The item's category, e.g. `shoes`; empty for logins.
    pub category: String,
    /// The item; 0 for logins.
    pub item: u32,
    /// The price in cents (purchases and carts), else 0.
    pub price_cents: u32,
}

/// The categories the generator draws from, most popular first.
pub const CATEGORIES: [&str; 8] = ["shoes", "books", "phones", "toys", "games", "garden", "music", "tools"];

/// How the generator makes events. Defaults (`EventsConfig::default()`): 20 000 events from 500
/// users at 50 events per second of event time, up to 2 000 ms of disorder, 0.5 % stragglers up to
/// 10 000 ms further behind, seed 0, starting at event time 0.
#[derive(Clone, Debug, PartialEq)]
pub struct EventsConfig {
    /// Number of events.
    pub events: u64,
    /// Number of users, `u0` … `u<users-1>`; low numbers are the most active (skewed).
    pub users: u64,
    /// Events per second of event time.
    pub events_per_second: u64,
    /// An ordinary event is at most this far behind its due time.
    pub disorder_ms: i64,
    /// Fraction of events, in `[0, 1]`, that are stragglers, later than the bound.
    pub late_fraction: f64,
    /// How much further behind than the bound a straggler can be.
    pub straggler_ms_max: i64,
    /// The RNG seed (ChaCha8).
    pub seed: u64,
    /// The due time of the first event.
    pub start_ms: i64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            events: 20_000,
            users: 500,
            events_per_second: 50,
            disorder_ms: 2_000,
            late_fraction: 0.005,
            straggler_ms_max: 10_000,
            seed: 0,
            start_ms: 0,
        }
    }
}

impl EventsConfig {
    /// Checks that the configuration makes sense.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: &str| Err(Error::Usage(format!("marketing events: {why}")));
        if self.users == 0 || self.events_per_second == 0 {
            return bad("users and the event rate must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.late_fraction) {
            return bad("the late fraction must be between 0 and 1");
        }
        if self.disorder_ms < 0 || self.straggler_ms_max < 1 {
            return bad("disorder must be >= 0 and the straggler bound >= 1 ms");
        }
        Ok(())
    }
}

/// The generated events in arrival order, as `(event_time_ms, event)`.
///
/// Users are skewed (user `⌊users · r³⌋` for uniform `r`, so a few users are very active);
/// each user keeps a favourite category most of the time; kinds are 60 % views, 17 % carts,
/// 8 % purchases and 15 % logins.
pub fn generate(config: &EventsConfig) -> Vec<(i64, UserEvent)> {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut events = Vec::with_capacity(config.events as usize);
    for index in 0..config.events {
        let due_ms = config.start_ms + (index as i128 * 1_000 / config.events_per_second as i128) as i64;
        let r: f64 = rng.random();
        let user = ((config.users as f64) * r * r * r) as u64;
        let kind = match rng.random_range(0..100u32) {
            0..60 => EventKind::View,
            60..77 => EventKind::AddToCart,
            77..85 => EventKind::Purchase,
            _ => EventKind::Login,
        };
        // A user's favourite category, three times out of four.
        let category_index = if rng.random_bool(0.75) {
            (user % CATEGORIES.len() as u64) as usize
        } else {
            rng.random_range(0..CATEGORIES.len())
        };
        let (category, item, price_cents) = match kind {
            EventKind::Login => (String::new(), 0, 0),
            _ => {
                let item = category_index as u32 * 1_000 + rng.random_range(0..50u32);
                let price = if kind == EventKind::View { 0 } else { rng.random_range(100..20_000u32) };
                (CATEGORIES[category_index].to_string(), item, price)
            }
        };
        let mut time_ms = due_ms - rng.random_range(0..=config.disorder_ms);
        if config.late_fraction > 0.0 && rng.random_bool(config.late_fraction) {
            time_ms -= rng.random_range(1..=config.straggler_ms_max);
        }
        events.push((time_ms, UserEvent { user: format!("u{user}"), kind, category, item, price_cents }));
    }
    events
}

/// The CSV header of the events file format.
pub const CSV_HEADER: &str = "user,kind,category,item,price_cents,time_ms";

/// One event as a CSV line of the format (no newline).
pub fn csv_line(time_ms: i64, event: &UserEvent) -> String {
    format!("{},{},{},{},{},{time_ms}", event.user, event.kind.name(), event.category, event.item, event.price_cents)
}

/// Writes events as CSV with [`CSV_HEADER`].
pub fn write_csv(events: &[(i64, UserEvent)], out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "{CSV_HEADER}")?;
    for (time_ms, event) in events {
        writeln!(out, "{}", csv_line(*time_ms, event))?;
    }
    out.flush()
}

/// Parses CSV text of the format (header optional); the error names the line.
pub fn parse_csv(text: &str) -> std::result::Result<Vec<(i64, UserEvent)>, String> {
    let mut events = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || (index == 0 && line == CSV_HEADER) {
            continue;
        }
        events.push(parse_csv_line(line).map_err(|why| format!("line {}: {why}: {line:?}", index + 1))?);
    }
    Ok(events)
}

/// One line of the JSON-lines format: the event with its time.
#[derive(Serialize, Deserialize)]
struct JsonEvent {
    #[serde(flatten)]
    event: UserEvent,
    time_ms: i64,
}

/// Reads an events file: JSON lines if its name ends in `.jsonl` or `.json`, else CSV (header
/// optional). Every bad line is an error naming the file, the line and what is wrong. The whole
/// file is read at once: the job then replays it by index after a restore.
pub fn read_file(path: &Path) -> Result<Vec<(i64, UserEvent)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("cannot read", path, e))?;
    let json = path.extension().is_some_and(|ext| ext == "jsonl" || ext == "json");
    let mut events = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || (index == 0 && line == CSV_HEADER) {
            continue;
        }
        let parsed = if json { parse_json_line(line) } else { parse_csv_line(line) };
        let event = parsed.map_err(|why| Error::Usage(format!("{}:{}: {why}: {line:?}", path.display(), index + 1)))?;
        events.push(event);
    }
    Ok(events)
}

fn parse_json_line(line: &str) -> std::result::Result<(i64, UserEvent), String> {
    let parsed: JsonEvent = serde_json::from_str(line).map_err(|e| e.to_string())?;
    Ok((parsed.time_ms, parsed.event))
}

fn parse_csv_line(line: &str) -> std::result::Result<(i64, UserEvent), String> {
    let fields: Vec<&str> = line.split(',').collect();
    let [user, kind, category, item, price, time] = fields[..] else {
        return Err(format!("expected 6 fields ({CSV_HEADER}), found {}", fields.len()));
    };
    let kind = EventKind::parse(kind).ok_or_else(|| format!("unknown event kind {kind:?}"))?;
    let number =
        |name: &str, text: &str| text.trim().parse::<i64>().map_err(|_| format!("{name} {text:?} is not a number"));
    if user.is_empty() {
        return Err("the user is empty".to_string());
    }
    let item = u32::try_from(number("item", item)?).map_err(|_| "the item is out of range".to_string())?;
    let price_cents = u32::try_from(number("price", price)?).map_err(|_| "the price is out of range".to_string())?;
    Ok((
        number("time", time)?,
        UserEvent { user: user.to_string(), kind, category: category.to_string(), item, price_cents },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_json_lines_read_back_what_was_generated() {
        let events = generate(&EventsConfig { events: 300, ..EventsConfig::default() });
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("events.csv");
        write_csv(&events, &mut std::fs::File::create(&csv).unwrap()).unwrap();
        assert_eq!(read_file(&csv).unwrap(), events);
        let jsonl = dir.path().join("events.jsonl");
        let lines: Vec<String> = events
            .iter()
            .map(|(time_ms, event)| {
                serde_json::to_string(&JsonEvent { event: event.clone(), time_ms: *time_ms }).unwrap()
            })
            .collect();
        std::fs::write(&jsonl, lines.join("\n")).unwrap();
        assert_eq!(read_file(&jsonl).unwrap(), events);
    }

    #[test]
    fn a_bad_line_names_its_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("events.csv");
        std::fs::write(&csv, format!("{CSV_HEADER}\nu1,view,shoes,3,0,100\nu2,jump,shoes,3,0,200\n")).unwrap();
        let error = read_file(&csv).unwrap_err().to_string();
        assert!(error.contains("events.csv:3: unknown event kind \"jump\""), "{error}");
    }
}
