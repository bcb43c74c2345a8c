//! Bus errors with stable codes: callers branch on the code, people read the message.

use thiserror::Error;

pub type BusResult<T> = Result<T, BusError>;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum BusError {
    #[error("invalid bus configuration: {0}")]
    Config(String),
    #[error("unknown topic or partition: {0}")]
    UnknownTopic(String),
    #[error("message of {size} bytes to '{topic}' exceeds the limit of {max} bytes")]
    MessageTooLarge {
        topic: String,
        size: usize,
        max: usize,
    },
    #[error("invalid partition {partition} for topic '{topic}' with {count} partitions")]
    InvalidPartition {
        topic: String,
        partition: i32,
        count: i32,
    },
    #[error("delivery failed for {failed} message(s); first: {first}")]
    Delivery { failed: usize, first: String },
    #[error("commit failed: {0}")]
    Commit(String),
    #[error("partition {topic}[{partition}] is not assigned to this consumer")]
    NotAssigned { topic: String, partition: i32 },
    #[error("timed out after {0} ms")]
    Timeout(u64),
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("invalid subscription pattern: {0}")]
    Pattern(String),
    #[error("the consumer is closed")]
    Closed,
    #[error("kafka error {code}: {message}")]
    Kafka { code: String, message: String },
}

impl BusError {
    /// A stable, machine-readable code (never reworded; tests and DLQ headers use it).
    pub fn code(&self) -> &'static str {
        match self {
            BusError::Config(_) => "BUS_CONFIG",
            BusError::UnknownTopic(_) => "UNKNOWN_TOPIC",
            BusError::MessageTooLarge { .. } => "MESSAGE_TOO_LARGE",
            BusError::InvalidPartition { .. } => "INVALID_PARTITION",
            BusError::Delivery { .. } => "DELIVERY_FAILED",
            BusError::Commit(_) => "COMMIT_FAILED",
            BusError::NotAssigned { .. } => "NOT_ASSIGNED",
            BusError::Timeout(_) => "TIMEOUT",
            BusError::TopicExists(_) => "TOPIC_EXISTS",
            BusError::Pattern(_) => "BAD_PATTERN",
            BusError::Closed => "CLOSED",
            BusError::Kafka { .. } => "KAFKA",
        }
    }
}
