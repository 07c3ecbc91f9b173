//! The Nexmark event generator: the reference generator's model, event by event.
//!
//! Event number `n` (0, 1, 2, …) is a pure function of the configuration: its kind, ids, prices
//! and strings come from a [`SplitMix64`] seeded with `(seed, event id)`, its time from a fixed
//! rate. So any event can be made without the ones before it: a source instance makes every
//! `instances`-th event, a restored one starts again at its offset, and the loop baseline and the
//! tests make the very same events.
//!
//! The model (the reference's `NexmarkGenerator`, `GeneratorConfig` and the `…Generator` classes
//! of nexmark-flink):
//! - **Kinds**: of every 50 event ids, 1 is a person, 3 are auctions, 46 are bids.
//! - **Ids**: a person's id is the number of people before it (from 1000), likewise auctions.
//! - **Hot items**: a bid goes to the newest "hot" auction (a multiple of 100) with probability
//!   `1 − 1/hot_auction_ratio`, else to one of the last `in_flight_auctions` auctions (or up to 10
//!   ahead: ids not yet opened, as in a real feed). Sellers and bidders alike, from the last
//!   `active_people` people.
//! - **Time**: event `n` happens at `base_time + n · 1000 / rate` ms. With
//!   `out_of_order_group_size = g`, events within each group of `g` are permuted (their event
//!   times with them); with `delayed_fraction = p`, an event is moved back in event time by
//!   1..=`delay_ms_max` with probability `p`, as if it had arrived late.
//! - **Prices**: `round(100 · 10^(6u))` cents for uniform `u`; reserve above the opening bid.
//!   Auctions expire after a random length averaging the time to open the next
//!   `in_flight_auctions` auctions.
//! - **Strings**: names, cities, states from the reference's lists; random lowercase text with
//!   spaces elsewhere; `extra` pads each event to the reference's average size (200 bytes a
//!   person, 500 an auction, 100 a bid).
//!
//! The reference draws from `java.util.Random` (not seeded in nexmark-flink), so its exact values
//! are not reproduced; the distributions are.

use super::model::{Auction, Bid, Event, Person};
use crate::connectors::{ReadStatus, Source, SourceReader};
use crate::error::{Error, Result};

/// Of every [`TOTAL_PROPORTION`] event ids, this many are people…
pub const PERSON_PROPORTION: u64 = 1;
/// …this many auctions…
pub const AUCTION_PROPORTION: u64 = 3;
/// …and this many bids.
pub const BID_PROPORTION: u64 = 46;
/// The length of the person/auction/bid cycle of event ids.
pub const TOTAL_PROPORTION: u64 = PERSON_PROPORTION + AUCTION_PROPORTION + BID_PROPORTION;

/// The first person id (the reference starts ids high so that small runs still join).
pub const FIRST_PERSON_ID: u64 = 1000;
/// The first auction id.
pub const FIRST_AUCTION_ID: u64 = 1000;
/// The first category id.
pub const FIRST_CATEGORY_ID: u64 = 10;

const NUM_CATEGORIES: u64 = 5;
const PERSON_ID_LEAD: u64 = 10;
const AUCTION_ID_LEAD: u64 = 10;
const HOT_SELLER_RATIO: u64 = 100;
const HOT_AUCTION_RATIO: u64 = 100;
const HOT_BIDDER_RATIO: u64 = 100;
const PERSON_BYTES_AVERAGE: usize = 200;
const AUCTION_BYTES_AVERAGE: usize = 500;
const BID_BYTES_AVERAGE: usize = 100;

const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const US_CITIES: [&str; 10] =
    ["Phoenix", "Los Angeles", "San Francisco", "Boise", "Portland", "Bend", "Redmond", "Seattle", "Kent", "Cheyenne"];
const FIRST_NAMES: [&str; 11] =
    ["Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter"];
const LAST_NAMES: [&str; 9] = ["Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris"];

/// What to generate. Defaults are the reference's: 10 000 events per second of event time,
/// 1 000 active people, 100 auctions in flight, hot ratios 2 (auctions), 4 (sellers), 4
/// (bidders), events in order (`out_of_order_group_size` 1, nothing delayed); 1 000 000 events,
/// seed 0, base time 0.
#[derive(Clone, Debug, PartialEq)]
pub struct NexmarkConfig {
    /// How many events.
    pub events: u64,
    /// Events per second of event time.
    pub rate_per_second: u64,
    /// Event time of event 0, in ms.
    pub base_time_ms: i64,
    /// Seed of every random draw.
    pub seed: u64,
    /// People a seller or bidder is drawn from (the newest ones).
    pub active_people: u64,
    /// Auctions a bid is drawn from (the newest ones).
    pub in_flight_auctions: u64,
    /// A bid is on a hot auction with probability `1 − 1/ratio`.
    pub hot_auction_ratio: u64,
    /// An auction's seller is a hot seller with probability `1 − 1/ratio`.
    pub hot_sellers_ratio: u64,
    /// A bidder is a hot bidder with probability `1 − 1/ratio`.
    pub hot_bidders_ratio: u64,
    /// Events are permuted (event times included) within groups of this many.
    pub out_of_order_group_size: u64,
    /// The fraction of events moved back in event time, as if they arrived late.
    pub delayed_fraction: f64,
    /// How far back a delayed event moves at most, in ms.
    pub delay_ms_max: i64,
}

impl Default for NexmarkConfig {
    fn default() -> Self {
        NexmarkConfig {
            events: 1_000_000,
            rate_per_second: 10_000,
            base_time_ms: 0,
            seed: 0,
            active_people: 1000,
            in_flight_auctions: 100,
            hot_auction_ratio: 2,
            hot_sellers_ratio: 4,
            hot_bidders_ratio: 4,
            out_of_order_group_size: 1,
            delayed_fraction: 0.0,
            delay_ms_max: 0,
        }
    }
}

impl NexmarkConfig {
    /// Says what is wrong with the configuration, if anything.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("rate", self.rate_per_second),
            ("active people", self.active_people),
            ("in-flight auctions", self.in_flight_auctions),
            ("hot auction ratio", self.hot_auction_ratio),
            ("hot sellers ratio", self.hot_sellers_ratio),
            ("hot bidders ratio", self.hot_bidders_ratio),
            ("out-of-order group size", self.out_of_order_group_size),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(Error::Usage(format!("nexmark: the {name} must be at least 1")));
        }
        if !(0.0..=1.0).contains(&self.delayed_fraction) {
            return Err(Error::Usage(format!(
                "nexmark: the delayed fraction must be within [0, 1], not {}",
                self.delayed_fraction
            )));
        }
        if self.delay_ms_max < 0 || (self.delayed_fraction > 0.0 && self.delay_ms_max == 0) {
            return Err(Error::Usage(format!(
                "nexmark: delayed events need a positive maximum delay, not {} ms",
                self.delay_ms_max
            )));
        }
        if self.events > i64::MAX as u64 / 1000 {
            return Err(Error::Usage(format!("nexmark: at most {} events", i64::MAX as u64 / 1000)));
        }
        Ok(())
    }

    /// The event time at which event number `number` is due (before permutation and delay).
    pub fn timestamp_ms(&self, number: u64) -> i64 {
        let offset_ms = u128::from(number) * 1000 / u128::from(self.rate_per_second);
        self.base_time_ms.saturating_add(i64::try_from(offset_ms).unwrap_or(i64::MAX))
    }

    /// The event id (and so the kind, ids and time) that event number `number` carries: the
    /// reference's `nextAdjustedEventNumber`, which permutes each out-of-order group.
    pub fn event_id(&self, number: u64) -> u64 {
        let group = self.out_of_order_group_size;
        (number / group) * group + number.wrapping_mul(953) % group
    }

    /// Event number `number`: its event time and the event.
    pub fn event(&self, number: u64) -> (i64, Event) {
        let id = self.event_id(number);
        let mut time_ms = self.timestamp_ms(id);
        if self.delayed_fraction > 0.0 {
            // A stream of its own, so that delays do not change what the event is.
            let mut delays = SplitMix64::for_event(self.seed ^ 0x6465_6c61_7965_6421, id);
            if delays.unit() < self.delayed_fraction {
                time_ms -= 1 + delays.below(self.delay_ms_max as u64) as i64;
            }
        }
        let mut random = SplitMix64::for_event(self.seed, id);
        let event = match id % TOTAL_PROPORTION {
            rem if rem < PERSON_PROPORTION => Event::Person(self.person(id, &mut random, time_ms)),
            rem if rem < PERSON_PROPORTION + AUCTION_PROPORTION => {
                Event::Auction(self.auction(id, &mut random, time_ms))
            }
            _ => Event::Bid(self.bid(id, &mut random, time_ms)),
        };
        (time_ms, event)
    }

    /// The events in arrival order, as `(event_time_ms, event)`.
    pub fn events(&self) -> impl Iterator<Item = (i64, Event)> + '_ {
        (0..self.events).map(|number| self.event(number))
    }

    fn person(&self, id: u64, random: &mut SplitMix64, time_ms: i64) -> Person {
        let name = format!("{} {}", pick(random, &FIRST_NAMES), pick(random, &LAST_NAMES));
        let email = format!("{}@{}.com", random.text(7), random.text(5));
        let credit_card = (0..4).map(|_| format!("{:04}", random.below(10_000))).collect::<Vec<_>>().join(" ");
        let city = pick(random, &US_CITIES).to_string();
        let state = pick(random, &US_STATES).to_string();
        let size = 8 + name.len() + email.len() + credit_card.len() + city.len() + state.len();
        let extra = random.extra(size, PERSON_BYTES_AVERAGE);
        let id = last_base0_person_id(id) + FIRST_PERSON_ID;
        Person { id, name, email, credit_card, city, state, date_time_ms: time_ms, extra }
    }

    fn auction(&self, id: u64, random: &mut SplitMix64, time_ms: i64) -> Auction {
        let seller = if random.below(self.hot_sellers_ratio) > 0 {
            (last_base0_person_id(id) / HOT_SELLER_RATIO) * HOT_SELLER_RATIO
        } else {
            self.next_base0_person_id(id, random)
        } + FIRST_PERSON_ID;
        let category = FIRST_CATEGORY_ID + random.below(NUM_CATEGORIES);
        let initial_bid = random.price();
        let expires_ms = time_ms.saturating_add(self.auction_length_ms(id, random, time_ms));
        let item_name = random.text(20);
        let description = random.text(100);
        let reserve = initial_bid + random.price();
        let size = 8 + item_name.len() + description.len() + 8 + 8 + 8 + 8 + 8;
        let extra = random.extra(size, AUCTION_BYTES_AVERAGE);
        let id = last_base0_auction_id(id) + FIRST_AUCTION_ID;
        Auction {
            id,
            item_name,
            description,
            initial_bid,
            reserve,
            date_time_ms: time_ms,
            expires_ms,
            seller,
            category,
            extra,
        }
    }

    fn bid(&self, id: u64, random: &mut SplitMix64, time_ms: i64) -> Bid {
        let auction = if random.below(self.hot_auction_ratio) > 0 {
            (last_base0_auction_id(id) / HOT_AUCTION_RATIO) * HOT_AUCTION_RATIO
        } else {
            self.next_base0_auction_id(id, random)
        } + FIRST_AUCTION_ID;
        let bidder = if random.below(self.hot_bidders_ratio) > 0 {
            // The second person of the batch, so that hot bidders are not the hot sellers.
            (last_base0_person_id(id) / HOT_BIDDER_RATIO) * HOT_BIDDER_RATIO + 1
        } else {
            self.next_base0_person_id(id, random)
        } + FIRST_PERSON_ID;
        let price = random.price();
        let extra = random.extra(8 + 8 + 8 + 8, BID_BYTES_AVERAGE);
        Bid { auction, bidder, price, date_time_ms: time_ms, extra }
    }

    /// One of the active people, or up to `PERSON_ID_LEAD` not registered yet.
    fn next_base0_person_id(&self, id: u64, random: &mut SplitMix64) -> u64 {
        let people = last_base0_person_id(id) + 1;
        let active = people.min(self.active_people);
        people - active + random.below(active + PERSON_ID_LEAD)
    }

    /// One of the auctions in flight, or up to `AUCTION_ID_LEAD` not opened yet.
    fn next_base0_auction_id(&self, id: u64, random: &mut SplitMix64) -> u64 {
        let newest = last_base0_auction_id(id);
        let oldest = newest.saturating_sub(self.in_flight_auctions);
        oldest + random.below(newest - oldest + 1 + AUCTION_ID_LEAD)
    }

    /// Twice (on average once) the event time it takes to open `in_flight_auctions` more.
    fn auction_length_ms(&self, id: u64, random: &mut SplitMix64, time_ms: i64) -> i64 {
        let events_for_auctions = self.in_flight_auctions * TOTAL_PROPORTION / AUCTION_PROPORTION;
        let horizon_ms = self.timestamp_ms(id + events_for_auctions) - time_ms;
        1 + random.below(horizon_ms.saturating_mul(2).max(1) as u64) as i64
    }
}

/// The newest person id (base 0) at event id `id`: the current one if `id` makes a person.
pub fn last_base0_person_id(id: u64) -> u64 {
    let (epoch, offset) = (id / TOTAL_PROPORTION, id % TOTAL_PROPORTION);
    // An auction or a bid: the last person of this cycle.
    let offset = if offset >= PERSON_PROPORTION { PERSON_PROPORTION - 1 } else { offset };
    epoch * PERSON_PROPORTION + offset
}

/// The newest auction id (base 0) at event id `id`: the current one if `id` makes an auction.
/// (Before the first auction this wraps below zero, as the reference's does; no event uses it.)
pub fn last_base0_auction_id(id: u64) -> u64 {
    let (epoch, offset) = (id / TOTAL_PROPORTION, id % TOTAL_PROPORTION);
    if offset < PERSON_PROPORTION {
        // A person: the last auction of the previous cycle.
        (epoch * AUCTION_PROPORTION).wrapping_sub(1)
    } else if offset >= PERSON_PROPORTION + AUCTION_PROPORTION {
        epoch * AUCTION_PROPORTION + AUCTION_PROPORTION - 1
    } else {
        epoch * AUCTION_PROPORTION + offset - PERSON_PROPORTION
    }
}

fn pick<'a>(random: &mut SplitMix64, choices: &[&'a str]) -> &'a str {
    choices[random.below(choices.len() as u64) as usize]
}

/// SplitMix64 (Steele, Lea and Flood, 2014): a 64-bit counter through a fixed mixing function.
/// Tiny, fast and seekable, so every event gets its own stream at no cost.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

    /// The stream of event `id` under `seed`.
    pub fn for_event(seed: u64, id: u64) -> Self {
        SplitMix64 { state: mix64(mix64(seed) ^ id) }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(Self::GAMMA);
        mix64(self.state)
    }

    /// Uniform in `0..bound` (`bound > 0`), by Lemire's multiply-shift: bias below 2⁻³² for
    /// the bounds used here.
    pub fn below(&mut self, bound: u64) -> u64 {
        debug_assert!(bound > 0, "an empty range");
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A price in cents: `round(100 · 10^(6u))`, from $1 to $1 000 000, log-uniform.
    fn price(&mut self) -> u64 {
        (10f64.powf(self.unit() * 6.0) * 100.0).round() as u64
    }

    /// Random text of 3 up to `length_max − 1` characters.
    fn text(&mut self, length_max: u64) -> String {
        let length = 3 + self.below(length_max - 3);
        self.exact_text(length as usize)
    }

    /// `length` lowercase letters, each a space with probability 1/13.
    fn exact_text(&mut self, length: usize) -> String {
        // Padding is most of the generator's work (a bid carries ~70 characters), so each 64-bit
        // draw makes four characters, 16 bits each through a table (see `TEXT_TABLE`).
        let mut bytes = Vec::with_capacity(length + 3);
        while bytes.len() < length {
            let word = self.next_u64();
            for shift in [0, 16, 32, 48] {
                bytes.push(TEXT_TABLE[((word >> shift) & 0xffff) as usize]);
            }
        }
        bytes.truncate(length);
        String::from_utf8(bytes).expect("ASCII letters and spaces")
    }

    /// Padding that brings an event of `size` bytes to `average` on average (±20 %).
    fn extra(&mut self, size: usize, average: usize) -> String {
        if size > average {
            return String::new();
        }
        let wanted = average - size;
        let delta = (wanted as f64 * 0.2).round() as usize;
        let length = wanted - delta + if delta == 0 { 0 } else { self.below(2 * delta as u64) as usize };
        self.exact_text(length)
    }
}

/// 16 random bits → a character: the reference draws one of 13 · 26 outcomes, 26 of them a
/// space; `bits · 338 >> 16` maps the 65 536 values onto those outcomes 193 or 194 times each,
/// within 0.6 % of uniform.
static TEXT_TABLE: [u8; 1 << 16] = text_table();

const fn text_table() -> [u8; 1 << 16] {
    let mut table = [0u8; 1 << 16];
    let mut bits = 0;
    while bits < table.len() {
        let outcome = (bits * 338) >> 16;
        table[bits] = if outcome < 26 { b' ' } else { b'a' + (outcome % 26) as u8 };
        bits += 1;
    }
    table
}

/// SplitMix64's finaliser.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The generator as a parallel source: instance `i` of `n` makes event numbers `i, i + n, …`,
/// each instance a split in arrival order with its own watermark (as the reference's source
/// subtasks). Its offset is the count of events it has made, so a restore regenerates from there.
#[derive(Clone, Debug)]
pub struct NexmarkSource {
    config: NexmarkConfig,
}

impl NexmarkSource {
    /// A source of `config`'s events.
    pub fn new(config: NexmarkConfig) -> Self {
        NexmarkSource { config }
    }
}

impl Source<Event> for NexmarkSource {
    fn name(&self) -> String {
        format!("nexmark seed={} events={}", self.config.seed, self.config.events)
    }

    fn open(&self, instance: usize, instances: usize) -> Result<Box<dyn SourceReader<Event>>> {
        self.reopen(instance, instances, 0)
    }

    fn reopen(&self, instance: usize, instances: usize, offset: u64) -> Result<Box<dyn SourceReader<Event>>> {
        self.config.validate()?;
        assert!(instance < instances, "instance {instance} of {instances}");
        Ok(Box::new(NexmarkReader {
            config: self.config.clone(),
            first: instance as u64,
            stride: instances as u64,
            read: offset,
        }))
    }
}

struct NexmarkReader {
    config: NexmarkConfig,
    first: u64,
    stride: u64,
    /// Events made so far: the next is number `first + read · stride`.
    read: u64,
}

impl SourceReader<Event> for NexmarkReader {
    fn read(&mut self, out: &mut Vec<(i64, Event)>, max_records: usize) -> Result<ReadStatus> {
        for _ in 0..max_records {
            let number = self.first + self.read * self.stride;
            if number >= self.config.events {
                return Ok(ReadStatus::Finished);
            }
            out.push(self.config.event(number));
            self.read += 1;
        }
        Ok(if self.first + self.read * self.stride >= self.config.events {
            ReadStatus::Finished
        } else {
            ReadStatus::More
        })
    }

    fn offset(&self) -> u64 {
        self.read
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_reference_cycle() {
        // Event ids 0..50: one person (id 0), three auctions (0, 1, 2), then 46 bids.
        assert_eq!(last_base0_person_id(0), 0);
        assert_eq!(last_base0_person_id(49), 0);
        assert_eq!(last_base0_person_id(50), 1);
        assert_eq!((1..4).map(last_base0_auction_id).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(last_base0_auction_id(10), 2);
        assert_eq!(last_base0_auction_id(50), 2);
        assert_eq!(last_base0_auction_id(51), 3);
    }

    #[test]
    fn text_and_prices_have_the_reference_shape() {
        let mut random = SplitMix64::for_event(1, 2);
        let padding = random.exact_text(130_000);
        let spaces = padding.bytes().filter(|b| *b == b' ').count() as f64 / padding.len() as f64;
        assert!((spaces - 1.0 / 13.0).abs() < 0.003, "space share {spaces}");
        let a_share = padding.bytes().filter(|b| *b == b'a').count() as f64 / padding.len() as f64;
        assert!((a_share - 12.0 / 13.0 / 26.0).abs() < 0.003, "letter share {a_share}");
        for _ in 0..1000 {
            let text = random.text(7);
            assert!((3..7).contains(&text.len()), "{text:?}");
            assert!(text.bytes().all(|b| b == b' ' || b.is_ascii_lowercase()));
            let price = random.price();
            assert!((100..=100_000_000).contains(&price), "{price}");
        }
    }
}
