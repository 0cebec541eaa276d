#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod broker;
pub mod certs;
pub mod check;
pub mod journal;
pub mod log;
mod net;
pub mod peers;
pub mod raw;
pub mod rng;
pub mod sim;
pub mod world;
