//! A real Kafka-protocol broker for tests: tansu on a free loopback port with sqlite storage in
//! a temporary directory, stoppable and restartable on the same port and data. Plus a plain
//! rdkafka reader, so tests check what is really in the topics rather than trusting the daemon.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::WAIT;

/// A tansu broker process owned by the test; killed on drop.
pub struct Tansu {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// The tansu binary: `$TANSU_BIN`, else `tansu` on PATH, else `~/.cargo/bin/tansu`.
fn tansu_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TANSU_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("tansu");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_default();
    let candidate = home.join("bin").join("tansu");
    assert!(
        candidate.is_file(),
        "tansu not found: run scripts/test (it installs tansu 0.6.0), or \
         `cargo install tansu --version 0.6.0 --locked --features libsql,dynostore`, \
         or set TANSU_BIN"
    );
    candidate
}

/// A port that was free a moment ago (tansu needs it on its command line).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Tansu {
    pub fn start() -> Self {
        let mut t = Tansu {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        t.spawn();
        t
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        // Four slashes: an absolute path (three would be relative to the working directory).
        let storage = format!("sqlite:///{}", self.dir.path().join("tansu.db").display());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("tansu.log"))
            .unwrap();
        let child = Command::new(tansu_bin())
            .env(
                "RUST_LOG",
                std::env::var("TANSU_LOG").unwrap_or_else(|_| "info".into()),
            )
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", &storage])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        self.wait_until_serving();
    }

    /// Waits until the broker answers a metadata request.
    fn wait_until_serving(&mut self) {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("log_level", "0")
            .create()
            .unwrap();
        let deadline = Instant::now() + WAIT;
        while consumer
            .fetch_metadata(None, Duration::from_millis(500))
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "tansu did not start; log: {}",
                self.log()
            );
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("tansu exited with {status}; log: {}", self.log());
            }
        }
    }

    /// The broker's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }

    /// Stops the broker (an outage); its data stays for `restart`. tansu 0.6.0 is stopped
    /// with SIGINT and waited for: after a SIGKILL its sqlite storage panics on the next
    /// produce of a producer session that outlived it. SIGKILL only if it does not exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts the broker again on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- last lines of the tansu log ---");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// One record read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Option<Vec<u8>>,
}

impl Record {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(self.value.as_deref().unwrap_or(b"null")).unwrap()
    }
}

/// `(low, high)` of every partition of `topic`, read from the broker.
pub fn watermarks(bootstrap: &str, topic: &str) -> Vec<(i64, i64)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    (0..md.topics()[0].partitions().len() as i32)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap()
        })
        .collect()
}

/// Reads every record of `topic` up to its current end, with a plain consumer (no group).
pub fn read_topic(bootstrap: &str, topic: &str) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "streamgate-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions = md.topics()[0].partitions().len() as i32;
    let mut tpl = TopicPartitionList::new();
    let mut ends = Vec::new();
    for p in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .unwrap();
        if high > low {
            tpl.add_partition_offset(topic, p, Offset::Offset(low))
                .unwrap();
            ends.push((p, high));
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return out;
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + WAIT;
    let mut done = std::collections::HashSet::new();
    while done.len() < ends.len() {
        assert!(Instant::now() < deadline, "reading {topic} timed out");
        if let Some(msg) = consumer.poll(Duration::from_millis(200)) {
            let m = msg.unwrap();
            out.push(Record {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                value: m.payload().map(<[u8]>::to_vec),
            });
            if let Some((_, high)) = ends.iter().find(|(p, _)| *p == m.partition()) {
                if m.offset() + 1 >= *high {
                    done.insert(m.partition());
                }
            }
        }
    }
    out
}
