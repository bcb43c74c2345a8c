//! The Kafka transport: librdkafka (compiled from rdkafka-sys's bundled source) behind the bus
//! traits. Every librdkafka property passes through; [`config`] holds the defaults we change
//! and why.

mod admin;
pub mod config;
mod consumer;
mod probe;
mod producer;

pub use admin::KafkaAdmin;
pub use consumer::KafkaConsumer;
pub use probe::probe;
pub use producer::KafkaProducer;

use rdkafka::error::KafkaError;
use rdkafka::metadata::Metadata;

use crate::error::BusError;

impl From<KafkaError> for BusError {
    fn from(e: KafkaError) -> Self {
        let code = e
            .rdkafka_error_code()
            .map_or_else(|| "Unknown".to_string(), |c| format!("{c:?}"));
        BusError::Kafka {
            code,
            message: e.to_string(),
        }
    }
}

/// The librdkafka version linked into this build, e.g. "2.12.1".
pub fn librdkafka_version() -> String {
    rdkafka::util::get_rdkafka_version().1
}

/// The topic names a metadata answer lists, sorted.
fn topic_names(metadata: &Metadata) -> Vec<String> {
    let mut names: Vec<String> = metadata
        .topics()
        .iter()
        .map(|t| t.name().to_string())
        .collect();
    names.sort();
    names
}
