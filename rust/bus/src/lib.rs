//! The kstrade message bus: Kafka semantics (topics, partitions, keys, headers, consumer groups,
//! committed offsets) behind one set of traits, with two transports.
//!
//! - [`kafka`]: a real Kafka cluster through librdkafka (compiled from the bundled source).
//!   This is how the pipeline scales past one process or machine.
//! - [`memory`]: an in-process log with the same semantics, so the whole pipeline runs on a
//!   fresh machine with no broker and backtests replay through exactly the live code path.
//!
//! Stages are written against [`Producer`], [`Consumer`] and [`Admin`] and never know which
//! transport they run on. The contract test suite (`tests/test_bus_contract.py`) runs the same
//! assertions on both.

pub mod error;
pub mod kafka;
pub mod memory;
pub mod partitioner;
pub mod record;
mod traits;

pub use error::{BusError, BusResult};
pub use record::{
    Header, OutRecord, RebalanceEvent, Record, RecordRef, TopicDescription, TopicPartition,
    TopicSpec,
};
pub use traits::{Admin, Consumer, Producer, Subscription};
