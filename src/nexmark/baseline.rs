//! The Nexmark queries as plain single-threaded loops: no dataflow, no exchange, no
//! serialisation — what one core can do, and so the limit flowlab's numbers are a fraction of.
//!
//! A loop reads the same events in the same splits as flowlab's source instances (event `n` in
//! split `n mod splits`), stamps each with its split's watermark (largest event time of the split
//! so far − 4 s) and judges lateness by that stamp, as flowlab does; it fires a window once every
//! split's watermark has passed it. So, event times within the watermark's bound or not, each
//! loop emits the rows flowlab emits, which [`Rows`] receives: the bench folds them into a digest.
//! (One exception, shared with Flink: an event behind the watermark can extend a session that
//! has fired on one worker but not yet on another, so q11 with such events depends on timing.)

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::hash::BuildHasherDefault;

use super::generator::NexmarkConfig;
use super::model::{Bid, Event};
use super::queries::{BidderCount, HighestBid, HotItem, NewUser, Q5_SLIDE_MS, Query, WATERMARK_DELAY_MS, WINDOW_MS};
use crate::error::Result;
use crate::state::LookupHasher;
use crate::time::WATERMARK_MIN;

/// Where a loop puts what it computes.
pub trait Rows {
    /// A bid of q0.
    fn bid(&mut self, bid: &Bid);
    /// A row of q5.
    fn hot_item(&mut self, row: &HotItem);
    /// A row of q7.
    fn highest_bid(&mut self, row: &HighestBid);
    /// A row of q8.
    fn new_user(&mut self, row: &NewUser);
    /// A row of q11 or q12.
    fn bidder_count(&mut self, row: &BidderCount);
    /// An event too late for all its windows.
    fn late(&mut self, event: &Event);
}

/// Runs `query` over `config`'s events read as `splits` splits; `progress` hears the events read
/// so far every 65 536 events.
pub fn run(
    query: Query,
    config: &NexmarkConfig,
    splits: usize,
    rows: &mut dyn Rows,
    progress: &dyn Fn(u64),
) -> Result<()> {
    config.validate()?;
    let mut events = Arrivals::new(config, splits.max(1), progress);
    match query {
        Query::Q0 => events.for_each(|_, event| {
            if let Event::Bid(bid) = event {
                rows.bid(&bid);
            }
        }),
        Query::Q5 => q5(&mut events, rows),
        Query::Q7 => q7(&mut events, rows),
        Query::Q8 => q8(&mut events, rows),
        Query::Q11 => q11(&mut events, rows),
        Query::Q12 => q12(&mut events, rows),
    }
    Ok(())
}

/// A table the loops look up by id; its order never reaches a row (rows are sorted, or summed).
type Table<K, V> = HashMap<K, V, BuildHasherDefault<LookupHasher>>;

/// When an event arrives: its time, the watermark stamp of its split before it, and the
/// watermark every split has passed (what fires windows).
#[derive(Clone, Copy, Debug)]
struct Arrival {
    time_ms: i64,
    stamp_ms: i64,
    watermark_ms: i64,
}

impl Arrival {
    /// Whether the window ending at `end_ms` no longer takes this event.
    fn misses(&self, end_ms: i64) -> bool {
        end_ms - 1 <= self.stamp_ms
    }
}

/// The events in arrival order with their watermarks.
struct Arrivals<'a> {
    config: &'a NexmarkConfig,
    /// Per split: the largest event time so far.
    max_time_ms: Vec<Option<i64>>,
    progress: &'a dyn Fn(u64),
}

impl<'a> Arrivals<'a> {
    fn new(config: &'a NexmarkConfig, splits: usize, progress: &'a dyn Fn(u64)) -> Self {
        Arrivals { config, max_time_ms: vec![None; splits], progress }
    }

    fn watermark(max_time_ms: Option<i64>) -> i64 {
        max_time_ms.map_or(WATERMARK_MIN, |max| max - WATERMARK_DELAY_MS)
    }

    fn for_each(&mut self, mut on_event: impl FnMut(Arrival, Event)) {
        let splits = self.max_time_ms.len();
        let mut watermark_ms = WATERMARK_MIN;
        for number in 0..self.config.events {
            let (time_ms, event) = self.config.event(number);
            let split = (number % splits as u64) as usize;
            let stamp_ms = Self::watermark(self.max_time_ms[split]);
            let max = self.max_time_ms[split].map_or(time_ms, |max| max.max(time_ms));
            self.max_time_ms[split] = Some(max);
            if splits == 1 {
                watermark_ms = stamp_ms;
            } else if number.is_multiple_of(splits as u64) {
                // Every split has moved once since the last look: a cheap, still exact bound
                // (firing later than possible never changes a row).
                watermark_ms = self.max_time_ms.iter().map(|max| Self::watermark(*max)).min().unwrap_or(WATERMARK_MIN);
            }
            on_event(Arrival { time_ms, stamp_ms, watermark_ms }, event);
            if (number + 1).is_multiple_of(65_536) {
                (self.progress)(number + 1);
            }
        }
        (self.progress)(self.config.events);
    }
}

/// Open tumbling or sliding windows by end: the state of one window, fired in end order.
struct Windows<S> {
    open: BTreeMap<i64, S>,
}

impl<S: Default> Windows<S> {
    fn new() -> Self {
        Windows { open: BTreeMap::new() }
    }

    /// Fires (removes and hands to `fire`) every window whose end − 1 the watermark has reached.
    fn fire_until(&mut self, watermark_ms: i64, mut fire: impl FnMut(i64, S)) {
        while let Some(entry) = self.open.first_entry() {
            if entry.key() - 1 > watermark_ms {
                return;
            }
            let (end, state) = entry.remove_entry();
            fire(end, state);
        }
    }

    /// Folds the event into each window of `size_ms` every `slide_ms` that still takes it;
    /// false if none does.
    fn add(&mut self, arrival: Arrival, size_ms: i64, slide_ms: i64, mut fold: impl FnMut(&mut S)) -> bool {
        let mut start = arrival.time_ms - arrival.time_ms.rem_euclid(slide_ms);
        let mut taken = false;
        while start > arrival.time_ms - size_ms {
            let end = start + size_ms;
            if !arrival.misses(end) {
                fold(self.open.entry(end).or_default());
                taken = true;
            }
            start -= slide_ms;
        }
        taken
    }

    fn fire_all(&mut self, fire: impl FnMut(i64, S)) {
        self.fire_until(i64::MAX, fire);
    }
}

fn q5(events: &mut Arrivals<'_>, rows: &mut dyn Rows) {
    let mut windows: Windows<Table<u64, u64>> = Windows::new();
    let fire = |rows: &mut dyn Rows, end_ms: i64, counts: Table<u64, u64>| {
        let Some(&max) = counts.values().max() else { return };
        let mut hottest: Vec<u64> =
            counts.iter().filter(|(_, count)| **count == max).map(|(auction, _)| *auction).collect();
        hottest.sort_unstable();
        for auction in hottest {
            rows.hot_item(&HotItem { auction, count: max, start_ms: end_ms - WINDOW_MS, end_ms });
        }
    };
    events.for_each(|arrival, event| {
        windows.fire_until(arrival.watermark_ms, |end_ms, state| fire(rows, end_ms, state));
        let Event::Bid(bid) = event else { return };
        if !windows.add(arrival, WINDOW_MS, Q5_SLIDE_MS, |counts| *counts.entry(bid.auction).or_insert(0) += 1) {
            rows.late(&Event::Bid(bid));
        }
    });
    windows.fire_all(|end_ms, state| fire(rows, end_ms, state));
}

fn q7(events: &mut Arrivals<'_>, rows: &mut dyn Rows) {
    let mut windows: Windows<Vec<Bid>> = Windows::new();
    let fire = |rows: &mut dyn Rows, end_ms: i64, mut best: Vec<Bid>| {
        best.sort_unstable();
        for bid in best {
            rows.highest_bid(&HighestBid {
                auction: bid.auction,
                price: bid.price,
                bidder: bid.bidder,
                date_time_ms: bid.date_time_ms,
                window_end_ms: end_ms,
            });
        }
    };
    events.for_each(|arrival, event| {
        windows.fire_until(arrival.watermark_ms, |end_ms, state| fire(rows, end_ms, state));
        let Event::Bid(bid) = event else { return };
        let taken = windows.add(arrival, WINDOW_MS, WINDOW_MS, |best| match best.first().map(|top| top.price) {
            Some(top) if bid.price < top => {}
            Some(top) if bid.price == top => best.push(bid.clone()),
            _ => *best = vec![bid.clone()],
        });
        if !taken {
            rows.late(&Event::Bid(bid));
        }
    });
    windows.fire_all(|end_ms, state| fire(rows, end_ms, state));
}

fn q8(events: &mut Arrivals<'_>, rows: &mut dyn Rows) {
    /// Per person id: the name if they registered in the window, and whether they sold.
    type Joined = Table<u64, (Option<String>, bool)>;
    let mut windows: Windows<Joined> = Windows::new();
    let fire = |rows: &mut dyn Rows, end_ms: i64, people: Joined| {
        for (id, (name, sold)) in people {
            if let (Some(name), true) = (name, sold) {
                rows.new_user(&NewUser { id, name, start_ms: end_ms - WINDOW_MS });
            }
        }
    };
    events.for_each(|arrival, event| {
        windows.fire_until(arrival.watermark_ms, |end_ms, state| fire(rows, end_ms, state));
        let taken = match &event {
            Event::Person(person) => windows.add(arrival, WINDOW_MS, WINDOW_MS, |people| {
                people.entry(person.id).or_default().0 = Some(person.name.clone())
            }),
            Event::Auction(auction) => {
                windows.add(arrival, WINDOW_MS, WINDOW_MS, |people| people.entry(auction.seller).or_default().1 = true)
            }
            Event::Bid(_) => true,
        };
        if !taken {
            rows.late(&event);
        }
    });
    windows.fire_all(|end_ms, state| fire(rows, end_ms, state));
}

/// Sessions per bidder: each bidder's open sessions `[start, end)` with their counts (an event
/// opens `[t, t + gap)` and merges every session it touches, ends included, as Flink's
/// `TimeWindow.intersects`) unless that session is past the event's stamp, fired when the
/// watermark reaches `end − 1`; an event whose own session is already past its stamp is late. A heap of `(end, bidder, start)` finds what to
/// fire; entries of merged sessions go stale.
fn q11(events: &mut Arrivals<'_>, rows: &mut dyn Rows) {
    type Session = (i64, i64, u64);
    let mut sessions: Table<u64, Vec<Session>> = Table::default();
    let mut due: BinaryHeap<Reverse<(i64, u64, i64)>> = BinaryHeap::new();
    let emit = |rows: &mut dyn Rows, bidder: u64, (start_ms, end_ms, count): Session| {
        rows.bidder_count(&BidderCount { bidder, count, start_ms, end_ms })
    };
    events.for_each(|arrival, event| {
        while let Some(Reverse((end, _, _))) = due.peek() {
            if end - 1 > arrival.watermark_ms {
                break;
            }
            let Reverse((end, bidder, start)) = due.pop().expect("peeked");
            let Entry::Occupied(mut open) = sessions.entry(bidder) else { continue };
            if let Some(index) = open.get().iter().position(|session| (session.0, session.1) == (start, end)) {
                let session = open.get_mut().swap_remove(index);
                emit(rows, bidder, session);
                if open.get().is_empty() {
                    open.remove();
                }
            }
        }
        let Event::Bid(bid) = event else { return };
        let (mut start, mut end) = (arrival.time_ms, arrival.time_ms + WINDOW_MS);
        if arrival.misses(end) {
            rows.late(&Event::Bid(bid));
            return;
        }
        let open = sessions.entry(bid.bidder).or_default();
        let mut count = 1;
        open.retain(|&(other_start, other_end, other_count)| {
            // A session past the event's stamp takes no part (it would have fired by then).
            let touches = start <= other_end && end >= other_start && !arrival.misses(other_end);
            if touches {
                (start, end) = (start.min(other_start), end.max(other_end));
                count += other_count;
            }
            !touches
        });
        open.push((start, end, count));
        due.push(Reverse((end, bid.bidder, start)));
    });
    for (bidder, open) in sessions {
        for session in open {
            emit(rows, bidder, session);
        }
    }
}

/// Processing time: the wall clock, read once per 1 024 events (flowlab's source batch), in
/// milliseconds since the Unix epoch; windows open at the end are dropped, as flowlab does.
fn q12(events: &mut Arrivals<'_>, rows: &mut dyn Rows) {
    let now_ms = || {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_millis() as i64)
    };
    let mut counts: Table<u64, u64> = Table::default();
    let mut window_end_ms = i64::MIN;
    let mut seen = 0u64;
    let mut now = now_ms();
    events.for_each(|_, event| {
        let Event::Bid(bid) = event else { return };
        seen += 1;
        if seen.is_multiple_of(1024) {
            now = now_ms();
        }
        if now >= window_end_ms {
            for (bidder, count) in counts.drain() {
                let start_ms = window_end_ms - WINDOW_MS;
                rows.bidder_count(&BidderCount { bidder, count, start_ms, end_ms: window_end_ms });
            }
            window_end_ms = now - now.rem_euclid(WINDOW_MS) + WINDOW_MS;
        }
        *counts.entry(bid.bidder).or_insert(0) += 1;
    });
}
