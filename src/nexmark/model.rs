//! The three kinds of Nexmark event: people register, open auctions, and bid.

use serde::{Deserialize, Serialize};

/// A person registered with the auction site.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Person {
    /// Unique id, from [`FIRST_PERSON_ID`](super::FIRST_PERSON_ID) up.
    pub id: u64,
    /// "First Last".
    pub name: String,
    /// A made-up address.
    pub email: String,
    /// Four groups of four digits.
    pub credit_card: String,
    /// One of ten cities.
    pub city: String,
    /// One of six states.
    pub state: String,
    /// Event time.
    pub date_time_ms: i64,
    /// Padding to the reference's average size.
    pub extra: String,
}

/// An auction a person opened.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Auction {
    /// Unique id, from [`FIRST_AUCTION_ID`](super::FIRST_AUCTION_ID) up.
    pub id: u64,
    /// Item name.
    pub item_name: String,
    /// Item description.
    pub description: String,
    /// Opening price, in cents.
    pub initial_bid: u64,
    /// Reserve price, in cents: above the opening price.
    pub reserve: u64,
    /// Event time.
    pub date_time_ms: i64,
    /// When the auction closes (event time).
    pub expires_ms: i64,
    /// The person selling.
    pub seller: u64,
    /// One of five categories, from [`FIRST_CATEGORY_ID`](super::FIRST_CATEGORY_ID).
    pub category: u64,
    /// Padding to the reference's average size.
    pub extra: String,
}

/// A bid on an auction.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Bid {
    /// The auction bid on.
    pub auction: u64,
    /// The person bidding.
    pub bidder: u64,
    /// The price offered, in cents.
    pub price: u64,
    /// Event time.
    pub date_time_ms: i64,
    /// Padding to the reference's average size.
    pub extra: String,
}

/// One Nexmark event: the union of the three streams, as the reference's `Event` row.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Event {
    /// A new person.
    Person(Person),
    /// A new auction.
    Auction(Auction),
    /// A bid.
    Bid(Bid),
}

impl Event {
    /// The event time.
    pub fn date_time_ms(&self) -> i64 {
        match self {
            Event::Person(person) => person.date_time_ms,
            Event::Auction(auction) => auction.date_time_ms,
            Event::Bid(bid) => bid.date_time_ms,
        }
    }

    /// The bid, if this is one.
    pub fn into_bid(self) -> Option<Bid> {
        match self {
            Event::Bid(bid) => Some(bid),
            _ => None,
        }
    }
}
