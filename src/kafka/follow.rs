//! Following a topic into memory: the registry and the idempotency key index are compacted
//! topics that every instance reads from the beginning and keeps up with, applying each
//! record as it comes. A [`Follower`] reads the topic and says how far it got, so a caller
//! can wait until everything stored up to now has been applied ([`Follower::fence`]):
//! after it, this instance has seen every write made anywhere before the call.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::watch;
use uuid::Uuid;

use super::{Cluster, Counted, TopicInfo};
use crate::error::Error;

/// Callers waiting for the next catch-up round.
#[derive(Default)]
struct Rounds {
    waiting: Vec<tokio::sync::oneshot::Sender<Result<(), String>>>,
    running: bool,
}

/// Reads one topic from its beginning, and says how far it got.
pub struct Follower {
    consumer: StreamConsumer<Counted>,
    /// Asks for the watermarks on a connection of its own: a broker may answer requests of
    /// one connection in order, and the follower's connection mostly has a fetch waiting
    /// (tansu holds it for `fetch.wait.max.ms`).
    watermarks: BaseConsumer<Counted>,
    topic: TopicInfo,
    /// Next offset to apply, per partition; lets callers wait for a catch-up.
    applied: watch::Sender<Vec<i64>>,
    rounds: Mutex<Rounds>,
    /// What the log calls the topic (`registry`, `idempotency keys`).
    name: &'static str,
}

impl Follower {
    /// A follower of `topic` from its beginning; `name` is what the log calls it.
    pub fn new(cluster: &Cluster, topic: &TopicInfo, name: &'static str) -> Result<Self, Error> {
        let consumer: StreamConsumer<Counted> = cluster
            .requests
            .create(&cluster.consumer(&format!("streamgate-{name}-{}", Uuid::new_v4())))
            .map_err(|e| Error::kafka(format!("create {name} consumer"), e))?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..topic.partitions {
            tpl.add_partition_offset(&topic.name, p, Offset::Beginning)
                .map_err(|e| Error::kafka(format!("assign {name} partitions"), e))?;
        }
        consumer
            .assign(&tpl)
            .map_err(|e| Error::kafka(format!("assign {name} partitions"), e))?;
        let watermarks: BaseConsumer<Counted> = cluster
            .requests
            .create(&cluster.client())
            .map_err(|e| Error::kafka(format!("create {name} watermark client"), e))?;
        let (applied, _) = watch::channel(vec![0; topic.partitions as usize]);
        Ok(Self {
            consumer,
            watermarks,
            topic: topic.clone(),
            applied,
            rounds: Mutex::default(),
            name,
        })
    }

    /// Applies every record of the topic, in order per partition, until `shutdown`.
    pub async fn run(
        self: Arc<Self>,
        mut apply: impl FnMut(&BorrowedMessage<'_>) + Send,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let m = tokio::select! {
                _ = shutdown.changed() => return,
                m = self.consumer.recv() => m,
            };
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "{} follower error", self.name);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            apply(&m);
            let (p, next) = (m.partition() as usize, m.offset() + 1);
            self.applied.send_modify(|v| {
                if p < v.len() && v[p] < next {
                    v[p] = next
                }
            });
        }
    }

    /// Waits until everything in the topic up to now has been applied. Callers at once
    /// share one round (one watermark request): a round serves those who were waiting when
    /// it began, so each is served by a watermark read after its call.
    pub async fn fence(self: Arc<Self>, timeout: Duration) -> Result<(), String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let start = {
            let mut rounds = self.rounds.lock().expect("rounds lock");
            rounds.waiting.push(tx);
            !std::mem::replace(&mut rounds.running, true)
        };
        if start {
            tokio::spawn(self.clone().run_rounds(timeout));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(format!("{} catch-up abandoned", self.name)),
            Err(_) => Err(format!(
                "the {} did not catch up within {timeout:?}",
                self.name
            )),
        }
    }

    /// Runs catch-up rounds while callers wait.
    async fn run_rounds(self: Arc<Self>, timeout: Duration) {
        loop {
            let waiting = {
                let mut rounds = self.rounds.lock().expect("rounds lock");
                if rounds.waiting.is_empty() {
                    rounds.running = false;
                    return;
                }
                std::mem::take(&mut rounds.waiting)
            };
            let result = self.clone().catch_up(timeout).await;
            for tx in waiting {
                let _ = tx.send(result.clone());
            }
        }
    }

    /// One catch-up: reads the watermarks, then waits until they are applied.
    async fn catch_up(self: Arc<Self>, timeout: Duration) -> Result<(), String> {
        let this = self.clone();
        let highs = tokio::task::spawn_blocking(move || {
            (0..this.topic.partitions)
                .map(|p| {
                    this.watermarks
                        .fetch_watermarks(&this.topic.name, p, Duration::from_secs(5))
                        .map(|(_, high)| high)
                })
                .collect::<Result<Vec<i64>, _>>()
        })
        .await
        .map_err(|e| format!("{} watermark task: {e}", self.name))?
        .map_err(|e| format!("read {} watermarks: {e}", self.name))?;
        let mut rx = self.applied.subscribe();
        let caught_up = async {
            rx.wait_for(|applied| applied.iter().zip(&highs).all(|(a, h)| a >= h))
                .await
                .map(|_| ())
        };
        match tokio::time::timeout(timeout, caught_up).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(format!("the {} follower stopped", self.name)),
            Err(_) => Err(format!(
                "the {} did not catch up within {timeout:?}",
                self.name
            )),
        }
    }
}
