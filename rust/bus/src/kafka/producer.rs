//! Kafka producer with delivery reports that are never dropped: each failure is kept until the
//! next flush, which returns it as an error.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header as RdHeader, Headers as _, Message, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};
use rdkafka::ClientContext;

use super::config::{client_config, PRODUCER_DEFAULTS};
use crate::error::{BusError, BusResult};
use crate::record::{OutRecord, SizeLimit};
use crate::traits::Producer;

/// How long `send` keeps retrying while librdkafka's local queue is full.
const QUEUE_FULL_PATIENCE: Duration = Duration::from_secs(30);

#[derive(Default)]
struct DeliveryTracker {
    in_flight: AtomicUsize,
    failures: Mutex<Vec<String>>,
    /// The records behind `failures`, as sent, until the caller takes them (`take_failed`).
    failed: Mutex<Vec<OutRecord>>,
    /// Signalled when the last in-flight record's delivery report arrives, so `flush` wakes at
    /// once. (rdkafka's own flush polls the main queue in 100 ms slices; with the threaded
    /// producer's poller taking the report instead, every flush cost a full 100 ms.)
    idle_lock: Mutex<()>,
    idle: Condvar,
}

impl DeliveryTracker {
    /// One record is no longer in flight (delivered, failed, or never enqueued).
    fn settled(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Under the lock, so a flush that has just seen in_flight > 0 cannot miss this.
            let _guard = self.idle_lock.lock();
            self.idle.notify_all();
        }
    }

    /// Wait until every record sent so far is acknowledged (or failed). False on timeout.
    fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut guard = self.idle_lock.lock();
        while self.in_flight.load(Ordering::Acquire) > 0 {
            if self.idle.wait_until(&mut guard, deadline).timed_out() {
                return self.in_flight.load(Ordering::Acquire) == 0;
            }
        }
        true
    }
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((err, msg)) = result {
            let failure = format!("{}[{}]: {err}", msg.topic(), msg.partition());
            self.failures.lock().push(failure);
            let headers = msg
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default();
            self.failed.lock().push(OutRecord {
                topic: msg.topic().to_string(),
                key: msg.key().map(<[u8]>::to_vec),
                value: msg.payload().map(<[u8]>::to_vec),
                headers,
                partition: Some(msg.partition()),
                timestamp_ms: msg.timestamp().to_millis(),
            });
        }
        self.settled();
    }
}

pub struct KafkaProducer {
    /// Behind a lock only so that `renew` can replace it; every other call takes a read lock.
    inner: RwLock<ThreadedProducer<DeliveryTracker>>,
    limit: SizeLimit,
    config: HashMap<String, String>,
}

impl KafkaProducer {
    pub fn new(config: &HashMap<String, String>) -> BusResult<Self> {
        let limit = SizeLimit::from_config(config)?;
        Ok(Self {
            inner: RwLock::new(Self::client(config)?),
            limit,
            config: config.clone(),
        })
    }

    fn client(config: &HashMap<String, String>) -> BusResult<ThreadedProducer<DeliveryTracker>> {
        client_config(PRODUCER_DEFAULTS, config)
            .create_with_context(DeliveryTracker::default())
            .map_err(|e| BusError::Config(e.to_string()))
    }
}

impl Producer for KafkaProducer {
    fn send(&self, record: OutRecord) -> BusResult<()> {
        let size = self.limit.check(&record)?;
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (key, value) in &record.headers {
            headers = headers.insert(RdHeader {
                key,
                value: value.as_deref(),
            });
        }
        let mut base: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&record.topic).headers(headers);
        if let Some(key) = record.key.as_deref() {
            base = base.key(key);
        }
        if let Some(value) = record.value.as_deref() {
            base = base.payload(value);
        }
        if let Some(p) = record.partition {
            base = base.partition(p);
        }
        if let Some(ts) = record.timestamp_ms {
            base = base.timestamp(ts);
        }
        let deadline = Instant::now() + QUEUE_FULL_PATIENCE;
        let inner = self.inner.read();
        let tracker = inner.context();
        tracker.in_flight.fetch_add(1, Ordering::AcqRel);
        loop {
            match inner.send(base) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if Instant::now() < deadline =>
                {
                    base = back;
                    thread::sleep(Duration::from_micros(200));
                }
                Err((err, _)) => {
                    tracker.settled();
                    return Err(match err {
                        KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge) => {
                            BusError::MessageTooLarge {
                                topic: record.topic.clone(),
                                size,
                                max: self.limit.0,
                            }
                        }
                        other => other.into(),
                    });
                }
            }
        }
    }

    fn flush(&self, timeout: Duration) -> BusResult<()> {
        let inner = self.inner.read();
        let flushed = inner.context().wait_idle(timeout);
        let failures = std::mem::take(&mut *inner.context().failures.lock());
        if let Some(first) = failures.first() {
            return Err(BusError::Delivery {
                failed: failures.len(),
                first: first.clone(),
            });
        }
        if flushed {
            Ok(())
        } else {
            Err(BusError::Timeout(timeout.as_millis() as u64))
        }
    }

    fn in_flight(&self) -> usize {
        self.inner
            .read()
            .context()
            .in_flight
            .load(Ordering::Acquire)
    }

    fn take_failed(&self) -> Vec<OutRecord> {
        std::mem::take(&mut *self.inner.read().context().failed.lock())
    }

    fn renew(&self) -> BusResult<()> {
        let mut inner = self.inner.write();
        let waiting = inner.context().in_flight.load(Ordering::Acquire);
        if waiting > 0 {
            return Err(BusError::Config(format!(
                "renew: {waiting} record(s) still in flight: flush first"
            )));
        }
        let old = std::mem::replace(&mut *inner, Self::client(&self.config)?);
        drop(inner);
        drop(old); // nothing in flight: nothing is purged
        Ok(())
    }
}
