//! `streamctl bench`: an open-loop benchmark of the whole path, from a client's send to the
//! result frame on its WebSocket, that accounts for every record.
//!
//! # Layout
//!
//! - [`schedule`]: when each record is due (latency counts from there: no coordinated omission).
//! - [`drive`]: pacing, in-flight bound and draining, shared by every run.
//! - [`gateway`]: the load through a daemon; [`baseline`]: the same load straight through rdkafka;
//!   [`broadcast`]: with `--subscribers`, the same fan-out from a raw WebSocket broadcaster.
//! - [`recorder`]: what a run observed; [`ledger`]: per-stream loss, duplicate and order accounting.
//! - [`report`]: the report as JSON (`--json`) and text; [`progress`]: the live line.
//! - [`cost`]: the CPU the daemon (and a local broker) spent per 1 000 records.

mod baseline;
mod broadcast;
mod cost;
mod drive;
mod gateway;
mod ledger;
mod progress;
mod recorder;
mod report;
mod schedule;

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use streamgate::config::{ApiKey, Brokers, Config};
use streamgate::kafka::EmbeddedBroker;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::client::{Client, ConnectionArgs};
use report::{FindMax, Ratio, Report, RunReport, Step};
use schedule::Schedule;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub conn: ConnectionArgs,
    /// Start a daemon in this process on the embedded broker instead of using --url.
    #[arg(long)]
    pub embedded: bool,
    /// Streams to open, each with one WebSocket subscriber.
    #[arg(long, default_value_t = 10)]
    pub streams: usize,
    /// Records per second, all streams together (open loop: sent on schedule regardless of
    /// how fast the daemon answers).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// How long to send, e.g. 30s, 2m.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Size of each JSON record.
    #[arg(long, default_value_t = 128)]
    pub payload_bytes: usize,
    /// How records are sent: http (NDJSON requests) or ws (frames on the subscriber sockets).
    #[arg(long, value_enum, default_value_t = Transport::Http)]
    pub transport: Transport,
    /// The bench streams' processor, as for `streamctl start` (a name or a JSON spec); it must
    /// keep the record's `q` field (e.g. `{"type":"jq","filter":". + {seen: true}"}`), which
    /// matches results to records. Default: identity.
    #[arg(long, value_name = "SPEC")]
    pub processor: Option<String>,
    /// Results subscribers (WebSockets) per stream: measures fan-out. Each record is then
    /// expected once on every one of them.
    #[arg(long, default_value_t = 1)]
    pub subscribers: usize,
    /// Spread the results sockets over this many loopback source addresses (127.0.0.1 to
    /// 127.0.0.N), for more sockets than one client address may hold (a quarter of the
    /// daemon's `limits.max_connections`). For a daemon on this machine.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub source_addresses: u8,
    /// Follow the streams over `/api/connect`, this many streams per connection, instead of
    /// one WebSocket per stream (with --transport http and one subscriber per stream).
    #[arg(long, value_name = "STREAMS")]
    pub mux: Option<usize>,
    /// Send every HTTP request with an `Idempotency-Key` of its own (what the client
    /// libraries do): measures what the key costs.
    #[arg(long)]
    pub idempotency: bool,
    /// Share of HTTP requests (0 to 1) sent with a sampled `traceparent` of their own: with
    /// the daemon's `telemetry` on, what tracing costs (compare a run at 0 with one at 1).
    #[arg(long, default_value_t = 0.0, value_name = "SHARE")]
    pub traced: f64,
    /// Records per HTTP request (or per burst of WebSocket frames).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// HTTP requests awaiting their answer at once; beyond it, sends queue (and their
    /// latency, counted from the schedule, grows).
    #[arg(long, default_value_t = 1024)]
    pub max_in_flight: usize,
    /// After sending, how long to wait for acknowledged records still on their way.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    /// First run the same load with rdkafka straight on the broker, for comparison; with
    /// --subscribers above 1, through a raw WebSocket broadcaster in this process instead
    /// (no Kafka), and report the ratio of deliveries/s within --max-p99-ms (`fan_out`).
    #[arg(long)]
    pub baseline: bool,
    /// The daemon's broker, for --baseline against --url (HOST:PORT[,...]).
    #[arg(long, value_name = "BOOTSTRAP")]
    pub brokers: Option<String>,
    /// Partitions of the baseline's topic, if it must be created (the daemon's default is 12).
    #[arg(long, default_value_t = 12)]
    pub baseline_partitions: i32,
    /// A librdkafka setting for the baseline's clients (repeatable). Give it the daemon's
    /// `kafka` settings for a like-for-like comparison.
    #[arg(long = "baseline-kafka", value_name = "KEY=VALUE", value_parser = parse_setting)]
    pub baseline_kafka: Vec<(String, String)>,
    /// Step the rate up from --rate until a bound breaks; report the highest that held.
    #[arg(long)]
    pub find_max: bool,
    /// With --find-max: the end-to-end p99 (ms) a rate must keep to count as sustainable.
    #[arg(long, default_value_t = 100.0)]
    pub max_p99_ms: f64,
    /// With --find-max: factor from one rate to the next.
    #[arg(long, default_value_t = 1.5)]
    pub step: f64,
    /// The broker's process id, when it runs on this machine: its CPU per 1 000 records is
    /// reported beside the daemon's.
    #[arg(long, value_name = "PID")]
    pub broker_pid: Option<u32>,
    /// Print the report as JSON (fields documented in docs/benchmarks.md).
    #[arg(long)]
    pub json: bool,
    /// No live progress line (it is only drawn when stderr is a terminal anyway).
    #[arg(long, alias = "no-tui")]
    pub no_progress: bool,
    /// Test-only fault: ignore every Nth result frame, as if it never arrived.
    #[arg(long, hide = true, value_name = "N")]
    pub fault_drop_every: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    Http,
    Ws,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Ws => "ws",
        }
    }
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

/// One run's load.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub schedule: Schedule,
    pub payload_bytes: usize,
    pub transport: Transport,
    pub subscribers: usize,
    /// Streams per `/api/connect` connection, instead of a socket per stream.
    pub mux: Option<usize>,
    /// Loopback source addresses the results sockets are spread over.
    pub source_addresses: u8,
    /// An `Idempotency-Key` on every HTTP send.
    pub idempotency: bool,
    /// Share of HTTP sends with a sampled `traceparent`.
    pub traced: f64,
    pub max_in_flight: usize,
    pub drain_timeout: Duration,
    pub fault_drop_every: Option<u64>,
}

/// How long until every Kafka client reported the requests it sent until now (librdkafka
/// statistics come once a second).
pub const STATS_LAG: Duration = Duration::from_millis(streamgate::kafka::STATS_INTERVAL_MS + 200);

/// Most rates `--find-max` tries.
const MAX_STEPS: usize = 12;

impl Args {
    pub async fn run(self) -> anyhow::Result<()> {
        self.validate()?;
        // 1000 streams need 1000 sockets plus HTTP connections.
        let _ = rlimit::increase_nofile_limit(u64::MAX);
        let load = Load {
            schedule: Schedule {
                streams: self.streams,
                rate: self.rate,
                batch: self.batch,
                duration: self.duration,
            },
            payload_bytes: self.payload_bytes,
            transport: self.transport,
            subscribers: self.subscribers,
            mux: self.mux,
            source_addresses: self.source_addresses,
            idempotency: self.idempotency,
            traced: self.traced,
            max_in_flight: self.max_in_flight,
            drain_timeout: self.drain_timeout,
            fault_drop_every: self.fault_drop_every,
        };
        let embedded = match self.embedded {
            true => Some(EmbeddedDaemon::start().await?),
            false => None,
        };
        let client = match &embedded {
            Some(d) => crate::client::connect(&d.conn)?,
            None => crate::client::connect(&self.conn)?,
        };
        let progress = !self.no_progress && std::io::stderr().is_terminal();
        let result = self
            .measure(&client, embedded.as_ref(), load, progress)
            .await;
        if let Some(d) = embedded {
            d.stop().await;
        }
        let report = result?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", report.text());
        }
        // What the raw broadcaster drops (it closes a socket past its queue) is not a record
        // the gateway or Kafka acknowledged.
        let steps_lost = |f: &Option<FindMax>| {
            f.as_ref()
                .map_or(0, |f| f.steps.iter().map(|s| s.lost).sum::<u64>())
        };
        let mut lost = report.gateway.records.lost + steps_lost(&report.find_max);
        if self.subscribers == 1 {
            lost += report.baseline.as_ref().map_or(0, |b| b.records.lost)
                + steps_lost(&report.baseline_find_max);
        }
        if lost > 0 {
            anyhow::bail!("{lost} acknowledged records were lost");
        }
        Ok(())
    }

    fn validate(&self) -> anyhow::Result<()> {
        let positive = [
            ("--streams", self.streams as f64),
            ("--rate", self.rate),
            ("--batch", self.batch as f64),
            ("--subscribers", self.subscribers as f64),
            ("--source-addresses", f64::from(self.source_addresses)),
            ("--max-in-flight", self.max_in_flight as f64),
            ("--duration", self.duration.as_secs_f64()),
        ];
        for (name, v) in positive {
            if v.is_nan() || v <= 0.0 {
                anyhow::bail!("{name} must be greater than zero");
            }
        }
        if let Some(mux) = self.mux {
            if mux == 0 || self.subscribers > 1 {
                anyhow::bail!(
                    "--mux takes a number of streams per connection, and one subscriber per \
                     stream"
                );
            }
        }
        if self.idempotency && self.transport != Transport::Http {
            anyhow::bail!("--idempotency keys HTTP sends: use it with --transport http");
        }
        if !(0.0..=1.0).contains(&self.traced) {
            anyhow::bail!("--traced takes a share from 0 to 1");
        }
        if self.traced > 0.0 && self.transport != Transport::Http {
            anyhow::bail!("--traced traces HTTP sends: use it with --transport http");
        }
        if self.find_max && self.step <= 1.0 {
            anyhow::bail!("--step must be greater than 1");
        }
        if self.baseline && self.subscribers == 1 && !self.embedded && self.brokers.is_none() {
            anyhow::bail!(
                "--baseline needs the daemon's broker: pass --brokers HOST:PORT, or use --embedded"
            );
        }
        Ok(())
    }

    async fn measure(
        &self,
        client: &Client,
        embedded: Option<&EmbeddedDaemon>,
        load: Load,
        progress: bool,
    ) -> anyhow::Result<Report> {
        let target = self.baseline_target(embedded).await?;
        // With --find-max, the baseline's own highest rate too, so the maxima compare.
        let (baseline, baseline_find_max) = match &target {
            _ if self.baseline && self.subscribers > 1 && self.find_max => {
                let (best, f) = self
                    .find_max(
                        load,
                        |load| async move { broadcast::run(&load, progress).await },
                    )
                    .await
                    .context("raw broadcaster run")?;
                (Some(best), Some(f))
            }
            _ if self.baseline && self.subscribers > 1 => (
                Some(
                    broadcast::run(&load, progress)
                        .await
                        .context("raw broadcaster run")?,
                ),
                None,
            ),
            Some(target) if self.find_max => {
                let (best, f) = self
                    .find_max(load, |load| async move {
                        baseline::run(target, &load, progress).await
                    })
                    .await
                    .context("baseline run")?;
                (Some(best), Some(f))
            }
            Some(target) => (
                Some(
                    baseline::run(target, &load, progress)
                        .await
                        .context("baseline run")?,
                ),
                None,
            ),
            None => (None, None),
        };
        let before = cost::Sample::take(client, self.broker_pid).await;
        let processor = self.processor.as_deref();
        let (gateway, find_max) = if self.find_max {
            let (best, f) = self
                .find_max(load, |load| async move {
                    gateway::run(client, &load, processor, progress).await
                })
                .await?;
            (best, Some(f))
        } else {
            (
                gateway::run(client, &load, processor, progress).await?,
                None,
            )
        };
        // The cost of one run (with --find-max, of every step together); its Kafka requests
        // once the daemon's clients reported what they sent until now.
        let after = cost::Sample::take(client, self.broker_pid).await;
        tokio::time::sleep(STATS_LAG).await;
        let after = after.with_requests_of(cost::Sample::take(client, None).await);
        let records = match &find_max {
            Some(f) => f.steps.iter().map(|s| s.acked).sum(),
            None => gateway.records.acked,
        };
        let cost = before.until(&after, records, embedded.is_some());
        Ok(Report {
            ratio: baseline.as_ref().map(|b| {
                // With --find-max the two ran at different rates: no like-for-like ratio.
                let gateway_requests = cost
                    .daemon_kafka_requests_per_record
                    .filter(|_| !self.find_max);
                let ratio = Ratio::of(&gateway, b)
                    .with_requests(gateway_requests, b)
                    .with_max_rates(find_max.as_ref(), baseline_find_max.as_ref());
                match self.subscribers {
                    1 => ratio,
                    _ => ratio.with_fan_out(&gateway, b, self.max_p99_ms),
                }
            }),
            cost,
            gateway,
            baseline,
            find_max,
            baseline_find_max,
        })
    }

    /// Where `--baseline` runs, with its topic created.
    async fn baseline_target(
        &self,
        embedded: Option<&EmbeddedDaemon>,
    ) -> anyhow::Result<Option<baseline::Target>> {
        if !self.baseline || self.subscribers > 1 {
            return Ok(None);
        }
        let topic = baseline::TOPIC.to_string();
        let partitions = self.baseline_partitions;
        let target = match (embedded, &self.brokers) {
            (Some(d), _) => {
                d.broker.create_topic(&topic, partitions)?;
                baseline::Target {
                    bootstrap: d.broker.bootstrap_servers().to_string(),
                    topic,
                    partitions,
                    embedded: true,
                    kafka: self.baseline_kafka.iter().cloned().collect(),
                }
            }
            (None, Some(bootstrap)) => baseline::Target {
                partitions: baseline::create_topic(bootstrap, &topic, partitions).await?,
                bootstrap: bootstrap.clone(),
                topic,
                embedded: false,
                kafka: self.baseline_kafka.iter().cloned().collect(),
            },
            (None, None) => unreachable!("validate() requires --brokers for --baseline"),
        };
        Ok(Some(target))
    }

    /// Runs at rising rates until one breaks the bound; returns the best run (or the first).
    /// `run` is one step: through the gateway, or the baseline.
    async fn find_max<F, Fut>(
        &self,
        mut load: Load,
        mut run: F,
    ) -> anyhow::Result<(RunReport, FindMax)>
    where
        F: FnMut(Load) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<RunReport>>,
    {
        let mut steps = Vec::new();
        let mut best: Option<RunReport> = None;
        let mut first: Option<RunReport> = None;
        for _ in 0..MAX_STEPS {
            let rate = load.schedule.rate;
            let run = run(load).await?;
            let e2e = &run.latency_ms.end_to_end;
            let passed = run.records.lost == 0
                && run.records.failed == 0
                && e2e.p99 <= self.max_p99_ms
                // With --subscribers, every record counts once per subscriber.
                && run.rates.receive_per_s >= 0.95 * rate * self.subscribers as f64;
            steps.push(Step {
                rate,
                passed,
                receive_per_s: run.rates.receive_per_s,
                p99_ms: e2e.p99,
                acked: run.records.acked,
                lost: run.records.lost,
                failed: run.records.failed,
            });
            first.get_or_insert_with(|| run.clone());
            if !passed {
                break;
            }
            best = Some(run);
            load.schedule.rate = rate * self.step;
        }
        let find_max = FindMax {
            max_p99_ms: self.max_p99_ms,
            max_sustainable_rate: best.as_ref().map(|r| r.target.rate),
            steps,
        };
        let report = best.or(first).context("find-max ran no step")?;
        Ok((report, find_max))
    }
}

/// `--embedded`: a daemon in this process on its own embedded broker, with a fresh admin key
/// and no rate limits. The broker is started here (not by the daemon) so that `--baseline`
/// can reach it too.
struct EmbeddedDaemon {
    conn: ConnectionArgs,
    broker: Arc<EmbeddedBroker>,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<Result<(), streamgate::Error>>,
}

impl EmbeddedDaemon {
    async fn start() -> anyhow::Result<Self> {
        let mut config = Config::default();
        let broker = Arc::new(EmbeddedBroker::start(&config.topics)?);
        config.brokers = Brokers::Embedded;
        let key = format!("bench-{}", uuid::Uuid::new_v4());
        config.api_keys = vec![ApiKey::new("bench".into(), key.clone(), true)];
        config.rate_limits.per_ip = None;
        config.rate_limits.per_key = None;
        // warp reports connections it cancels at shutdown as errors: noise here.
        config.log.level = "warn,warp::server=off".into();
        streamgate::logging::init(&config.log);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (shutdown, stopped) = oneshot::channel::<()>();
        let shutdown_signal = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(streamgate::server::run_embedded(
            config,
            listener,
            shutdown_signal,
            Some(broker.clone()),
        ));
        let daemon = Self {
            conn: ConnectionArgs {
                url: url.clone(),
                api_key: Some(key),
                cacert: None,
            },
            broker,
            shutdown,
            task,
        };
        let http = reqwest::Client::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if daemon.task.is_finished() {
                let result = daemon.task.await?;
                result.context("the embedded daemon did not start")?;
                anyhow::bail!("the embedded daemon stopped during start-up");
            }
            let ready = http.get(format!("{url}/readyz")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Ok(daemon);
            }
            if std::time::Instant::now() > deadline {
                anyhow::bail!("the embedded daemon was not ready within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(self) {
        let _ = self.shutdown.send(());
        let _ = self.task.await;
        drop(self.broker);
    }
}
