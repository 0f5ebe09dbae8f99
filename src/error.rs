//! The daemon's own failures (config, broker, I/O, start-up), reported once at the binary's
//! edge. What a client is told is `api::ApiError`, which only `api/` builds.

/// Failures of the daemon itself, reported once at the binary's edge.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid config: {message}")]
    Config { message: String },
    #[error("kafka: {context}")]
    Kafka {
        context: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Startup(String),
}

impl Error {
    pub fn kafka(context: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        Error::Kafka {
            context: context.into(),
            source,
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
