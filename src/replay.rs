//! Replay of one stream's results from the broker, for subscribers that ask for
//! `?from=earliest` or `?from=CURSOR` (to resume after a disconnect or a restart).
//!
//! A replay reads the stream's partition of the results topic from the requested offset up
//! to the high watermark measured *after* the live subscription was taken. Every result below
//! that mark comes from the replay, every result at or above it from the live subscription
//! (which could not have passed it yet), and the session drops live frames it already
//! replayed: no gap and no duplicate at the switch.

use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use uuid::Uuid;

use crate::error::ApiError;
use crate::kafka::TopicInfo;
use crate::results::{delivery_of, Delivery};

/// Where a subscriber starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// Only results produced from now on (the default).
    Latest,
    /// Every result the broker still holds.
    Earliest,
    /// Results with a cursor at or after this one.
    Cursor(i64),
}

impl From {
    pub fn parse(value: Option<&str>) -> Result<Self, ApiError> {
        match value {
            None | Some("latest") => Ok(From::Latest),
            Some("earliest") => Ok(From::Earliest),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if n >= 0 => Ok(From::Cursor(n)),
                _ => Err(ApiError::InvalidInput(format!(
                    "from: `{v}` is not earliest, latest or a cursor (a result's `cursor`, 0 or more)"
                ))),
            },
        }
    }
}

/// An ongoing replay of one stream's results.
pub struct Replay {
    consumer: StreamConsumer,
    stream: Uuid,
    /// Offset at which the replay is complete.
    end: i64,
    /// Next offset expected (to know when `end` is reached even if records were filtered).
    position: i64,
}

impl Replay {
    /// Starts reading `stream`'s partition of the results topic at `from`. `None` when there
    /// is nothing to replay.
    pub async fn start(
        config: ClientConfig,
        topic: &TopicInfo,
        stream: Uuid,
        from: From,
    ) -> Result<Option<Self>, ApiError> {
        let start = match from {
            From::Latest => return Ok(None),
            From::Earliest => Offset::Beginning,
            From::Cursor(n) => Offset::Offset(n),
        };
        let partition = crate::kafka::partition_for(&stream.to_string(), topic.partitions);
        let consumer: StreamConsumer = config
            .create()
            .map_err(|e| ApiError::Internal(format!("create replay consumer: {e}")))?;
        let name = topic.name.clone();
        let (consumer, marks) = tokio::task::spawn_blocking(move || {
            let marks = consumer.fetch_watermarks(&name, partition, Duration::from_secs(5));
            (consumer, marks)
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
        let (low, high) = marks.map_err(|e| ApiError::BrokerUnavailable {
            message: format!("cannot read the results topic: {e}"),
            acknowledged: 0,
        })?;
        let first = match start {
            Offset::Offset(n) => n.max(low),
            _ => low,
        };
        tracing::debug!(%stream, partition, low, high, first, "replay");
        if first >= high {
            return Ok(None);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic.name, partition, Offset::Offset(first))
            .and_then(|()| consumer.assign(&tpl))
            .map_err(|e| ApiError::Internal(format!("assign replay consumer: {e}")))?;
        Ok(Some(Self {
            consumer,
            stream,
            end: high,
            position: first,
        }))
    }

    /// The next replayed result of the stream, or `None` once the replay is complete.
    pub async fn next(&mut self) -> Option<Result<Delivery, ApiError>> {
        while self.position < self.end {
            let m = match self.consumer.recv().await {
                Ok(m) => m,
                Err(e) => {
                    return Some(Err(ApiError::BrokerUnavailable {
                        message: format!("replay interrupted: {e}"),
                        acknowledged: 0,
                    }))
                }
            };
            self.position = rdkafka::Message::offset(&m) + 1;
            if let Some((stream, delivery)) = delivery_of(&m) {
                if stream == self.stream {
                    return Some(Ok(delivery));
                }
            }
        }
        None
    }
}
