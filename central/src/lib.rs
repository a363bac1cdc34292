//! `strata-central`: the store of one availability zone.
//!
//! Remote-write goes through the [`wal`] into the [`head`] (compressed [`chunk`]s and the
//! postings [`index`]); the head is cut into Parquet [`block`]s on a time boundary; [`db`]
//! merges head and blocks for queries and remote-read.

pub mod api;
pub mod backfill;
pub mod block;
pub mod chunk;
pub mod db;
pub mod error;
pub mod head;
pub mod index;
pub mod promql;
pub mod rules;
pub mod server;
mod sync;
pub mod wal;

pub use error::{Error, Result};
