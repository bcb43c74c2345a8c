//! One bounded question to a cluster before a command starts: does it answer a metadata request
//! with these settings, and if not, what did the client run into on the way?
//!
//! A broker that refuses a handshake or the credentials does not fail the request: librdkafka
//! closes the connection, retries, and the request only times out. What went wrong is said once,
//! in the client's error and log events, which an admin client never reads (rust-rdkafka polls
//! only its own admin queue). A threaded producer polls the main queue, so its context sees
//! those events and keeps them for the answer.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryResult, Producer as _, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use super::config::client_config;
use crate::error::{BusError, BusResult};

/// What the probe heard from librdkafka: error events first, else error and warning logs.
#[derive(Default)]
struct Heard {
    errors: Mutex<Vec<String>>,
    logs: Mutex<Vec<String>>,
}

/// One metadata request waits at most this long before the probe looks at what it heard.
const SLICE: Duration = Duration::from_secs(1);

/// At most this many lines of each kind are kept (a retrying client repeats itself).
const KEEP: usize = 8;

fn keep(lines: &Mutex<Vec<String>>, line: String) {
    let mut lines = lines.lock();
    if lines.len() < KEEP && !lines.contains(&line) {
        lines.push(line);
    }
}

impl ClientContext for Heard {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
            keep(&self.logs, format!("{fac}: {message}"));
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let code = error
            .rdkafka_error_code()
            .map_or_else(|| "Unknown".to_string(), |c| format!("{c:?}"));
        keep(&self.errors, format!("{code}: {reason}"));
    }
}

impl ProducerContext for Heard {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &DeliveryResult<'_>, _: ()) {}
}

/// Error events that no retry cures: a refused handshake or refused credentials.
fn is_refusal(line: &str) -> bool {
    line.starts_with("Authentication:")
        || line.starts_with("SSL:")
        || line.contains("SSL handshake failed")
}

/// The cluster's topic names, or the error of the metadata request followed by what the client
/// heard while it waited (`the client said: ...`, error events then warning logs), so a caller
/// can name the cause. A refusal ends the wait at once, since retrying cannot cure it.
pub fn probe(config: &HashMap<String, String>, timeout: Duration) -> BusResult<Vec<String>> {
    let producer: ThreadedProducer<Heard> = client_config(&[], config)
        .create_with_context(Heard::default())
        .map_err(|e| BusError::Config(e.to_string()))?;
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match producer.client().fetch_metadata(None, left.min(SLICE)) {
            Ok(metadata) => return Ok(super::topic_names(&metadata)),
            Err(e) => {
                let context = producer.context();
                let refused = context.errors.lock().iter().any(|l| is_refusal(l));
                if !refused && Instant::now() < deadline {
                    continue;
                }
                let mut heard = context.errors.lock().clone();
                heard.extend(context.logs.lock().iter().cloned());
                let mut err = BusError::from(e);
                if let BusError::Kafka { message, .. } = &mut err {
                    if !heard.is_empty() {
                        message.push_str("; the client said: ");
                        message.push_str(&heard.join(" | "));
                    }
                }
                return Err(err);
            }
        }
    }
}
