//! Kafka admin: topics with partitions, replication and configs, described from the broker.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use futures_executor::block_on;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

use super::config::client_config;
use crate::error::{BusError, BusResult};
use crate::record::{TopicDescription, TopicSpec};
use crate::traits::Admin;

/// How long `describe_topics` waits for a just-created topic to reach the broker it asks.
const METADATA_GRACE: Duration = Duration::from_secs(3);

pub struct KafkaAdmin {
    inner: AdminClient<DefaultClientContext>,
}

impl KafkaAdmin {
    pub fn new(config: &HashMap<String, String>) -> BusResult<Self> {
        let inner = client_config(&[], config)
            .create()
            .map_err(|e| BusError::Config(e.to_string()))?;
        Ok(Self { inner })
    }

    /// The controller acknowledges a new topic before every broker knows it. Wait until the
    /// metadata shows each topic with a leader for every partition, so whatever comes next
    /// (describe, produce, another process) finds it.
    fn wait_until_usable(&self, names: &[&str], timeout: Duration) -> BusResult<()> {
        let deadline = Instant::now() + timeout;
        for name in names {
            loop {
                let metadata = self.inner.inner().fetch_metadata(Some(name), timeout)?;
                let ready = metadata.topics().iter().any(|t| {
                    t.name() == *name
                        && t.error().is_none()
                        && !t.partitions().is_empty()
                        && t.partitions()
                            .iter()
                            .all(|p| p.leader() >= 0 && p.error().is_none())
                });
                if ready {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(BusError::Timeout(timeout.as_millis() as u64));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    fn options(timeout: Duration) -> AdminOptions {
        AdminOptions::new()
            .operation_timeout(Some(timeout))
            .request_timeout(Some(timeout))
    }
}

impl Admin for KafkaAdmin {
    fn create_topics(
        &self,
        specs: &[TopicSpec],
        timeout: Duration,
    ) -> BusResult<Vec<(String, bool)>> {
        let new: Vec<NewTopic<'_>> = specs
            .iter()
            .map(|s| {
                let mut t = NewTopic::new(
                    &s.name,
                    s.partitions,
                    TopicReplication::Fixed(s.replication_factor),
                );
                for (k, v) in &s.configs {
                    t = t.set(k, v);
                }
                t
            })
            .collect();
        let results = block_on(
            self.inner
                .create_topics(new.iter(), &Self::options(timeout)),
        )?;
        let outcome: Vec<(String, bool)> = results
            .into_iter()
            .map(|r| match r {
                Ok(name) => Ok((name, true)),
                Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => Ok((name, false)),
                Err((name, code)) => Err(BusError::Kafka {
                    code: format!("{code:?}"),
                    message: format!("creating topic '{name}': {code}"),
                }),
            })
            .collect::<BusResult<_>>()?;
        let names: Vec<&str> = outcome.iter().map(|(n, _)| n.as_str()).collect();
        self.wait_until_usable(&names, timeout)?;
        Ok(outcome)
    }

    fn delete_topics(&self, names: &[String], timeout: Duration) -> BusResult<()> {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        for r in block_on(self.inner.delete_topics(&refs, &Self::options(timeout)))? {
            match r {
                Ok(_) => {}
                Err((name, RDKafkaErrorCode::UnknownTopicOrPartition)) => {
                    return Err(BusError::UnknownTopic(name))
                }
                Err((name, code)) => {
                    return Err(BusError::Kafka {
                        code: format!("{code:?}"),
                        message: format!("deleting topic '{name}': {code}"),
                    })
                }
            }
        }
        Ok(())
    }

    fn describe_topics(
        &self,
        names: &[String],
        timeout: Duration,
    ) -> BusResult<Vec<TopicDescription>> {
        let client = self.inner.inner();
        // Another broker may learn of a topic a moment after the one that created it: give
        // metadata a short grace period before calling the topic unknown, and only then ask for
        // its configs (a broker that has not caught up yet may answer with partial ones).
        let mut shapes = Vec::with_capacity(names.len());
        for name in names {
            let grace = Instant::now() + timeout.min(METADATA_GRACE);
            shapes.push(loop {
                let metadata = client.fetch_metadata(Some(name), timeout)?;
                let found = metadata.topics().iter().find(|t| {
                    t.name() == name && t.error().is_none() && !t.partitions().is_empty()
                });
                if let Some(t) = found {
                    break (
                        t.partitions().len() as i32,
                        t.partitions()[0].replicas().len() as i32,
                    );
                }
                if Instant::now() >= grace {
                    return Err(BusError::UnknownTopic(name.clone()));
                }
                std::thread::sleep(Duration::from_millis(50));
            });
        }
        let specifiers: Vec<ResourceSpecifier<'_>> =
            names.iter().map(|n| ResourceSpecifier::Topic(n)).collect();
        let configs = block_on(
            self.inner
                .describe_configs(specifiers.iter(), &Self::options(timeout)),
        )?;
        let mut out = Vec::with_capacity(names.len());
        for ((name, described), (partitions, replication_factor)) in
            names.iter().zip(configs).zip(shapes)
        {
            let resource = described.map_err(|code| BusError::Kafka {
                code: format!("{code:?}"),
                message: format!("describing configs of '{name}': {code}"),
            })?;
            let configs: BTreeMap<String, String> = resource
                .entries
                .into_iter()
                .filter_map(|e| e.value.map(|v| (e.name, v)))
                .collect();
            out.push(TopicDescription {
                name: name.clone(),
                partitions,
                replication_factor,
                configs,
            });
        }
        Ok(out)
    }

    fn list_topics(&self, timeout: Duration) -> BusResult<Vec<String>> {
        let metadata = self.inner.inner().fetch_metadata(None, timeout)?;
        Ok(super::topic_names(&metadata))
    }

    fn end_offsets(&self, topic: &str, timeout: Duration) -> BusResult<Vec<i64>> {
        let client = self.inner.inner();
        let metadata = client.fetch_metadata(Some(topic), timeout)?;
        let t = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .ok_or_else(|| BusError::UnknownTopic(topic.to_string()))?;
        let mut ends = Vec::with_capacity(t.partitions().len());
        for p in t.partitions() {
            let (_, high) = client.fetch_watermarks(topic, p.id(), timeout)?;
            ends.push(high);
        }
        Ok(ends)
    }
}
