//! The embedded broker: librdkafka's in-process mock cluster, for trying Streamgate with zero
//! setup. It speaks the Kafka protocol on a loopback port but keeps data in memory only, and
//! it does not implement CreateTopics, so Streamgate's topics are created through its own API.

use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;

use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;

use crate::config::Topics;
use crate::error::Error;

/// librdkafka's in-process mock cluster, kept on a thread of its own because the handle is
/// not `Send`. Dropping this stops the cluster.
pub struct EmbeddedBroker {
    bootstrap: String,
    control: Option<std_mpsc::Sender<Control>>,
    thread: Option<JoinHandle<()>>,
}

/// Commands to the thread that owns the mock cluster.
enum Control {
    BrokerDown,
    BrokerUp,
    CreateTopic {
        name: String,
        partitions: i32,
        done: std_mpsc::Sender<Result<(), KafkaError>>,
    },
}

impl EmbeddedBroker {
    /// Starts a one-broker mock cluster with Streamgate's topics already created (the mock
    /// broker does not implement CreateTopics).
    pub fn start(topics: &Topics) -> Result<Self, Error> {
        let (ready_tx, ready_rx) = std_mpsc::channel::<Result<String, Error>>();
        let (control_tx, control_rx) = std_mpsc::channel::<Control>();
        let topics = topics.clone();
        let thread = std::thread::Builder::new()
            .name("embedded-broker".into())
            .spawn(move || {
                let cluster = match MockCluster::new(1) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(Error::kafka("start the embedded broker", e)));
                        return;
                    }
                };
                for (name, partitions) in [
                    (&topics.input, topics.partitions),
                    (&topics.results, topics.partitions),
                    (&topics.streams, 1),
                    (&topics.keys, topics.partitions),
                ] {
                    if let Err(e) = cluster.create_topic(name, partitions, 1) {
                        let _ = ready_tx.send(Err(Error::kafka(format!("create topic {name}"), e)));
                        return;
                    }
                }
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                // Serve commands until the owner drops its handle.
                while let Ok(cmd) = control_rx.recv() {
                    let result = match cmd {
                        Control::BrokerDown => cluster.broker_down(1),
                        Control::BrokerUp => cluster.broker_up(1),
                        Control::CreateTopic {
                            name,
                            partitions,
                            done,
                        } => {
                            let created = cluster.create_topic(&name, partitions, 1);
                            let _ = done.send(created);
                            continue;
                        }
                    };
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "embedded broker control failed");
                    }
                }
                drop(cluster);
            })
            .map_err(|e| Error::io("spawn embedded broker thread", e))?;
        let bootstrap = ready_rx
            .recv()
            .map_err(|_| Error::Startup("embedded broker thread died".into()))??;
        Ok(Self {
            bootstrap,
            control: Some(control_tx),
            thread: Some(thread),
        })
    }

    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// Simulates an outage: the broker stops answering until `broker_up`.
    pub fn broker_down(&self) {
        if let Some(c) = &self.control {
            let _ = c.send(Control::BrokerDown);
        }
    }

    pub fn broker_up(&self) {
        if let Some(c) = &self.control {
            let _ = c.send(Control::BrokerUp);
        }
    }

    /// Creates a topic (the mock broker does not implement CreateTopics).
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<(), Error> {
        let (done, result) = std_mpsc::channel();
        let control = self
            .control
            .as_ref()
            .expect("control channel lives until drop");
        control
            .send(Control::CreateTopic {
                name: name.to_string(),
                partitions,
                done,
            })
            .map_err(|_| Error::Startup("embedded broker thread died".into()))?;
        result
            .recv()
            .map_err(|_| Error::Startup("embedded broker thread died".into()))?
            .map_err(|e| Error::kafka(format!("create topic {name}"), e))
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        self.control.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
