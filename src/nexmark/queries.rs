//! The Nexmark window queries on flowlab's stream API, one function each, named as in the
//! nexmark-flink repository, with the semantics of its SQL.
//!
//! Every query reads the one stream of [`Event`]s with the reference DDL's watermark
//! ([`nexmark_watermarks`]: event time − 4 s), and returns its results and the events too late
//! for every window they belong to (Flink SQL drops those silently; flowlab never does).

use serde::{Deserialize, Serialize};

use super::model::{Auction, Bid, Event, Person};
use crate::api::Stream;
use crate::time::WatermarkStrategy;
use crate::window::{AggregateFunction, SessionWindows, SlidingWindows, TimeDomain, TumblingWindows, WindowResult};

/// How far the watermark trails the largest event time seen, as in the reference DDL
/// (`WATERMARK FOR dateTime AS dateTime - INTERVAL '4' SECOND`).
pub const WATERMARK_DELAY_MS: i64 = 4_000;

/// The reference DDL's watermark: the largest event time seen minus exactly
/// [`WATERMARK_DELAY_MS`]. (Flink's DataStream `forBoundedOutOfOrderness(d)` subtracts one more
/// millisecond, hence `d = 3 999` here.)
pub fn nexmark_watermarks() -> WatermarkStrategy {
    WatermarkStrategy::bounded(WATERMARK_DELAY_MS - 1)
}

/// The queries flowlab runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Query {
    /// Pass-through: every bid, unchanged (the cost of reading and moving events).
    Q0,
    /// Hot items: the auctions with the most bids in each sliding window of 10 s every 2 s.
    Q5,
    /// Highest bid: the bids with the highest price in each tumbling window of 10 s.
    Q7,
    /// New users: people who opened an auction in the tumbling 10 s window they registered in.
    Q8,
    /// User sessions: bids per bidder in each session (gap 10 s).
    Q11,
    /// Bids per bidder in tumbling 10 s windows of processing time.
    Q12,
}

impl Query {
    /// Every query, in order.
    pub const ALL: [Query; 6] = [Query::Q0, Query::Q5, Query::Q7, Query::Q8, Query::Q11, Query::Q12];

    /// Parses `q0`, `q5`, `q7`, `q8`, `q11` or `q12`.
    pub fn parse(text: &str) -> crate::Result<Self> {
        Query::ALL.into_iter().find(|query| query.name() == text.to_ascii_lowercase()).ok_or_else(|| {
            crate::Error::Usage(format!("unknown nexmark query {text:?}: write one of q0, q5, q7, q8, q11, q12"))
        })
    }

    /// `q0` … `q12`.
    pub fn name(self) -> &'static str {
        match self {
            Query::Q0 => "q0",
            Query::Q5 => "q5",
            Query::Q7 => "q7",
            Query::Q8 => "q8",
            Query::Q11 => "q11",
            Query::Q12 => "q12",
        }
    }
}

/// Window size of q5 (sliding), q7, q8 and q12 (tumbling), and q11's session gap.
pub const WINDOW_MS: i64 = 10_000;
/// Slide of q5's windows.
pub const Q5_SLIDE_MS: i64 = 2_000;

/// A query's output: its results, and the events no window took.
pub struct QueryOutput<'scope, R> {
    /// The query's rows.
    pub results: Stream<'scope, R>,
    /// Events too late for every window they belong to.
    pub late: Stream<'scope, Event>,
}

/// The bids of a stream of events.
pub fn bids(events: Stream<'_, Event>) -> Stream<'_, Bid> {
    events.flat_map(Event::into_bid).name("bids")
}

/// The bids without `extra`, which no window query reads: projected before the key exchange, as
/// Flink SQL's planner does, so that workers do not ship padding to each other. (Late bids go
/// to the late output as projected.)
pub fn bid_columns(events: Stream<'_, Event>) -> Stream<'_, Bid> {
    events.flat_map(|event| event.into_bid().map(|bid| Bid { extra: String::new(), ..bid })).name("bids (projected)")
}

/// q0: every bid.
pub fn q0(events: Stream<'_, Event>) -> Stream<'_, Bid> {
    bids(events)
}

/// A row of q5: an auction with the most bids in a window (ties all appear).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HotItem {
    /// The auction.
    pub auction: u64,
    /// Its bids in the window: the window's maximum.
    pub count: u64,
    /// Window start.
    pub start_ms: i64,
    /// Window end.
    pub end_ms: i64,
}

/// q5: count bids per auction in sliding windows (10 s every 2 s), then keep per window the
/// auctions whose count is the window's maximum. The counts are aggregated local-global, as Flink
/// SQL does with the reference configuration's mini-batches: each worker counts its bids per
/// auction and slice before the exchange, which spreads the hot auction's bids over the workers.
/// The second stage groups the first's results by window: each result is stamped at its window's
/// last millisecond, so a tumbling window as long as the slide holds the results of exactly one
/// sliding window.
pub fn q5(events: Stream<'_, Event>) -> QueryOutput<'_, HotItem> {
    let counted = events
        .flat_map(|event| event.into_bid().map(CountedBid::from))
        .name("bids (q5 columns)")
        .key_by(|bid: &CountedBid| bid.auction)
        .window(SlidingWindows::new(WINDOW_MS, Q5_SLIDE_MS, 0, TimeDomain::EventTime).expect("valid constants"))
        .aggregate_local_global(Count);
    let hottest = counted
        .results
        .name("bids per auction")
        .key_by(|result: &WindowResult<u64, u64>| result.window.end)
        .window(TumblingWindows::event_time(Q5_SLIDE_MS).expect("valid constant"))
        .aggregate(MaxCount);
    QueryOutput {
        results: hottest.results.flat_map(|result| result.value).name("hot items"),
        late: counted.late.map(|bid| Event::Bid(bid.into())),
    }
}

/// The columns of a bid that q5 reads or gives back as late: every column but `extra`, in a
/// plain `Copy` record. Every bid crosses the key exchange, and this one is 32 bytes where a
/// [`Bid`] with an empty `extra` is 56 and has a string to drop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct CountedBid {
    auction: u64,
    bidder: u64,
    price: u64,
    date_time_ms: i64,
}

impl From<Bid> for CountedBid {
    fn from(bid: Bid) -> Self {
        CountedBid { auction: bid.auction, bidder: bid.bidder, price: bid.price, date_time_ms: bid.date_time_ms }
    }
}

impl From<CountedBid> for Bid {
    /// The bid as [`bid_columns`] projects it, so that late bids come out as in the other queries.
    fn from(bid: CountedBid) -> Self {
        Bid {
            auction: bid.auction,
            bidder: bid.bidder,
            price: bid.price,
            date_time_ms: bid.date_time_ms,
            extra: String::new(),
        }
    }
}

/// A row of q7: a bid with the highest price of its window (ties all appear).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HighestBid {
    /// The auction.
    pub auction: u64,
    /// The price: the window's highest.
    pub price: u64,
    /// The bidder.
    pub bidder: u64,
    /// When the bid was made.
    pub date_time_ms: i64,
    /// The window's end.
    pub window_end_ms: i64,
}

/// q7: the bids with the highest price in each tumbling 10 s window. One window holds all bids,
/// so one worker does the work, as Flink's global aggregate. (The reference SQL joins on
/// `dateTime BETWEEN end − 10 s AND end`, which would also take a bid at exactly `end` — in the
/// next window — whose price equals this window's maximum; flowlab keeps to the window.)
pub fn q7(events: Stream<'_, Event>) -> QueryOutput<'_, HighestBid> {
    let highest = bid_columns(events)
        .key_by(|_: &Bid| ())
        .window(TumblingWindows::event_time(WINDOW_MS).expect("valid constant"))
        .aggregate(MaxPrice);
    QueryOutput {
        results: highest
            .results
            .flat_map(|result| {
                let end_ms = result.window.end;
                result.value.into_iter().map(move |bid| HighestBid {
                    auction: bid.auction,
                    price: bid.price,
                    bidder: bid.bidder,
                    date_time_ms: bid.date_time_ms,
                    window_end_ms: end_ms,
                })
            })
            .name("highest bids"),
        late: highest.late.map(Event::Bid),
    }
}

/// A row of q8: a person who registered and opened an auction in the same window.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NewUser {
    /// The person.
    pub id: u64,
    /// Their name.
    pub name: String,
    /// Window start.
    pub start_ms: i64,
}

/// q8: the tumbling-window join of people and auctions on `person.id = auction.seller`, as
/// Flink's DataStream window join does it: one keyed, windowed stream of both sides, each window
/// emitting the person's row if both sides are in it. Only the columns the join reads cross the
/// exchange (people: id, name, time; auctions: id, seller, time).
pub fn q8(events: Stream<'_, Event>) -> QueryOutput<'_, NewUser> {
    let joined = events
        .flat_map(|event| match event {
            Event::Person(person) => Some(Event::Person(Person {
                id: person.id,
                name: person.name,
                date_time_ms: person.date_time_ms,
                ..Person::default()
            })),
            Event::Auction(auction) => Some(Event::Auction(Auction {
                id: auction.id,
                seller: auction.seller,
                date_time_ms: auction.date_time_ms,
                ..Auction::default()
            })),
            Event::Bid(_) => None,
        })
        .name("people and auctions (projected)")
        .key_by(|event: &Event| match event {
            Event::Person(person) => person.id,
            Event::Auction(auction) => auction.seller,
            Event::Bid(bid) => bid.bidder,
        })
        .window(TumblingWindows::event_time(WINDOW_MS).expect("valid constant"))
        .aggregate(PersonAndAuction);
    QueryOutput {
        results: joined
            .results
            .flat_map(|result| result.value.map(|name| NewUser { id: result.key, name, start_ms: result.window.start }))
            .name("new users"),
        late: joined.late,
    }
}

/// A row of q11 and q12: a bidder's bids in a window.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BidderCount {
    /// The bidder.
    pub bidder: u64,
    /// Their bids in the window.
    pub count: u64,
    /// Window start.
    pub start_ms: i64,
    /// Window end (a session's: its last bid + the gap).
    pub end_ms: i64,
}

fn bidder_counts(result: WindowResult<u64, u64>) -> BidderCount {
    BidderCount { bidder: result.key, count: result.value, start_ms: result.window.start, end_ms: result.window.end }
}

/// q11: bids per bidder per session (event time, gap 10 s).
pub fn q11(events: Stream<'_, Event>) -> QueryOutput<'_, BidderCount> {
    let sessions = bid_columns(events)
        .key_by(|bid: &Bid| bid.bidder)
        .window(SessionWindows::with_gap(WINDOW_MS, TimeDomain::EventTime).expect("valid constant"))
        .aggregate(Count);
    QueryOutput { results: sessions.results.map(bidder_counts).name("sessions"), late: sessions.late.map(Event::Bid) }
}

/// q12: bids per bidder in tumbling 10 s windows of processing time. Results depend on when
/// bids arrive, so no two runs need agree; windows still open at the end of input are dropped,
/// as in Flink's streaming mode.
pub fn q12(events: Stream<'_, Event>) -> Stream<'_, BidderCount> {
    bid_columns(events)
        .key_by(|bid: &Bid| bid.bidder)
        .window(TumblingWindows::new(WINDOW_MS, 0, TimeDomain::ProcessingTime).expect("valid constant"))
        .aggregate(Count)
        .results
        .map(bidder_counts)
        .name("bids per bidder")
}

/// `count(*)`.
#[derive(Clone, Copy, Debug)]
pub struct Count;

impl<D> AggregateFunction<D> for Count {
    type Accumulator = u64;
    type Output = u64;

    fn create_accumulator(&self) -> u64 {
        0
    }

    fn add(&self, accumulator: &mut u64, _value: &D) {
        *accumulator += 1;
    }

    fn merge(&self, accumulator: &mut u64, other: u64) {
        *accumulator += other;
    }

    fn result(&self, accumulator: &u64) -> u64 {
        *accumulator
    }
}

/// q5's second stage: the auctions with the largest count among one window's counts.
struct MaxCount;

impl AggregateFunction<WindowResult<u64, u64>> for MaxCount {
    /// The largest count, the auctions that have it, and the window.
    type Accumulator = (u64, Vec<u64>, crate::window::Window);
    type Output = Vec<HotItem>;

    fn create_accumulator(&self) -> Self::Accumulator {
        (0, Vec::new(), crate::window::Window { start: 0, end: 0 })
    }

    fn add(&self, accumulator: &mut Self::Accumulator, result: &WindowResult<u64, u64>) {
        if result.value > accumulator.0 || accumulator.1.is_empty() {
            *accumulator = (result.value, vec![result.key], result.window);
        } else if result.value == accumulator.0 {
            accumulator.1.push(result.key);
        }
    }

    fn merge(&self, accumulator: &mut Self::Accumulator, other: Self::Accumulator) {
        if other.1.is_empty() {
            return;
        }
        if other.0 > accumulator.0 || accumulator.1.is_empty() {
            *accumulator = other;
        } else if other.0 == accumulator.0 {
            accumulator.1.extend(other.1);
        }
    }

    fn result(&self, (count, auctions, window): &Self::Accumulator) -> Vec<HotItem> {
        // Arrival order depends on the parallelism upstream; the rows must not.
        let mut auctions = auctions.clone();
        auctions.sort_unstable();
        auctions.dedup();
        auctions
            .into_iter()
            .map(|auction| HotItem { auction, count: *count, start_ms: window.start, end_ms: window.end })
            .collect()
    }
}

/// q7's aggregate: the bids with the highest price.
struct MaxPrice;

impl AggregateFunction<Bid> for MaxPrice {
    type Accumulator = Vec<Bid>;
    type Output = Vec<Bid>;

    fn create_accumulator(&self) -> Vec<Bid> {
        Vec::new()
    }

    fn add(&self, accumulator: &mut Vec<Bid>, bid: &Bid) {
        match accumulator.first().map(|best| best.price) {
            Some(best) if bid.price < best => {}
            Some(best) if bid.price == best => accumulator.push(bid.clone()),
            _ => *accumulator = vec![bid.clone()],
        }
    }

    fn merge(&self, accumulator: &mut Vec<Bid>, other: Vec<Bid>) {
        for bid in &other {
            self.add(accumulator, bid);
        }
    }

    fn result(&self, accumulator: &Vec<Bid>) -> Vec<Bid> {
        let mut bids = accumulator.clone();
        bids.sort_unstable();
        bids
    }
}

/// q8's aggregate: the person's name, if they registered in the window, and whether they opened
/// an auction in it; the name is the result when both.
struct PersonAndAuction;

impl AggregateFunction<Event> for PersonAndAuction {
    type Accumulator = (Option<String>, bool);
    type Output = Option<String>;

    fn create_accumulator(&self) -> Self::Accumulator {
        (None, false)
    }

    fn add(&self, accumulator: &mut Self::Accumulator, event: &Event) {
        match event {
            Event::Person(person) => accumulator.0 = Some(person.name.clone()),
            Event::Auction(_) => accumulator.1 = true,
            Event::Bid(_) => {}
        }
    }

    fn merge(&self, accumulator: &mut Self::Accumulator, other: Self::Accumulator) {
        accumulator.0 = accumulator.0.take().or(other.0);
        accumulator.1 |= other.1;
    }

    fn result(&self, (name, sold): &Self::Accumulator) -> Option<String> {
        name.clone().filter(|_| *sold)
    }
}
