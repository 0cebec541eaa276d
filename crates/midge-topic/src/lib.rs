#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    warn(
        clippy::std_instead_of_core,
        clippy::unwrap_used,
        clippy::indexing_slicing
    )
)]

extern crate alloc;
#[cfg(test)]
extern crate std;

mod arena;
mod error;
mod retained;
mod subscriptions;
mod topic;

pub use error::TopicError;
pub use retained::RetainedIndex;
pub use subscriptions::{FilterId, Match, SubscriptionIndex};
pub use topic::{Limits, TopicFilter, TopicName};

#[cfg(test)]
mod tests;
