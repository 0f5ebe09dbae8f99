//! `streamctl top`: a live view of the daemon's streams, like htop for Streamgate.
//!
//! # Layout
//!
//! - [`app`]: state ([`app::App`]), events ([`app::Event`]) and `update`; no I/O.
//! - [`ui`]: `draw(&App, &mut Frame)`, pure, tested with ratatui's `TestBackend`.
//! - [`feed`]: the daemon's stats feed (pushed over a WebSocket) and the detail pane's live
//!   tail.
//!
//! This module runs the loop: terminal in, events to `update`, `draw` after each batch of
//! events, terminal restored on every exit (drop guard; ratatui's panic hook for panics).
//! When stdout is not a terminal, or with `--once`, it prints one plain-text snapshot.

pub mod app;
pub mod feed;
pub mod ui;

#[cfg(test)]
mod fixtures;

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use app::{App, Command, Event};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::client::{Client, ConnectionArgs};
use crate::streams::ago;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub conn: ConnectionArgs,
    /// Print one plain-text snapshot and exit (also what happens when stdout is not a terminal).
    #[arg(long)]
    pub once: bool,
    /// With --once (or when stdout is not a terminal): print the daemon's stats as JSON
    /// (`GET /api/stats`) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Time between snapshots, e.g. 1s, 500ms.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
}

impl Args {
    pub async fn run(self) -> anyhow::Result<()> {
        if self.interval.is_zero() {
            anyhow::bail!("--interval must be greater than zero");
        }
        let client = crate::client::connect(&self.conn)?;
        if self.once || self.json || !std::io::stdout().is_terminal() {
            if self.json {
                let stats = feed::fetch(&client).await?;
                println!("{}", serde_json::to_string_pretty(&stats)?);
                return Ok(());
            }
            let text = once(&client, self.interval).await?;
            print!("{text}");
            return Ok(());
        }
        interactive(client, self.interval).await
    }
}

/// Two snapshots `interval` apart (rates need two), as plain text.
async fn once(client: &Client, interval: Duration) -> anyhow::Result<String> {
    let mut app = App::new(client.http().url(""));
    let first = feed::fetch(client).await?;
    app.update(Event::Snapshot(Box::new(first), Instant::now()));
    tokio::time::sleep(interval).await;
    let second = feed::fetch(client).await?;
    app.update(Event::Snapshot(Box::new(second), Instant::now()));
    Ok(plain(&app))
}

/// The plain-text snapshot: header, totals, then one line per stream with rates and counters.
pub fn plain(app: &App) -> String {
    let mut out = String::new();
    let Some(s) = &app.snapshot else {
        return out;
    };
    let _ = writeln!(
        out,
        "streamgate {}  broker {} {}  uptime {}s  v{}",
        app.url,
        s.broker.name(),
        if s.broker.reachable {
            "ok"
        } else {
            "UNREACHABLE"
        },
        s.uptime_s,
        s.version
    );
    let latency = match s.totals.latency_ms.count {
        0 => "-".to_string(),
        _ => format!(
            "p50 {:.1} ms  p99 {:.1} ms",
            s.totals.latency_ms.p50, s.totals.latency_ms.p99
        ),
    };
    let _ = writeln!(
        out,
        "streams {}  subscribers {}  in {}/s  out {}/s  end-to-end latency {latency}",
        s.totals.streams,
        s.totals.subscribers,
        ui::rate(app.in_rate),
        ui::rate(app.out_rate)
    );
    let _ = writeln!(
        out,
        "{:<36}  {:<10}  {:<10}  {:>8}  {:>8}  {:>4}  {:>5}  {:>7}  {:>10}  {:>10}",
        "STREAM",
        "OWNER",
        "PROCESSOR",
        "IN/S",
        "OUT/S",
        "SUBS",
        "LAST",
        "BACKLOG",
        "RECORDS",
        "RESULTS"
    );
    for r in app.visible() {
        let _ = writeln!(
            out,
            "{:<36}  {:<10}  {:<10}  {:>8}  {:>8}  {:>4}  {:>5}  {:>7}  {:>10}  {:>10}",
            r.id,
            r.stream.owner,
            r.processor,
            ui::rate(r.in_rate),
            ui::rate(r.out_rate),
            r.stream.subscribers,
            ago(r.stream.last_activity_ms, s.now_ms),
            r.backlog,
            r.stream.records_in,
            r.stream.records_out
        );
    }
    out
}

/// The terminal in raw mode on the alternate screen; dropping it restores the terminal.
/// `ratatui::try_init` also installs a panic hook that restores it before the panic prints.
struct Tui(ratatui::DefaultTerminal);

impl Tui {
    fn enter() -> std::io::Result<Self> {
        ratatui::try_init().map(Tui)
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

async fn interactive(client: Client, interval: Duration) -> anyhow::Result<()> {
    let (tx, mut rx) = mpsc::channel::<Event>(1024);
    let poller = feed::watch(client.clone(), interval, tx.clone());
    let stop_keys = Arc::new(AtomicBool::new(false));
    let keys = read_keys(tx.clone(), stop_keys.clone());
    let mut tui = Tui::enter()?;
    let mut app = App::new(client.http().url(""));
    let mut tail: Option<JoinHandle<()>> = None;
    let result = loop {
        if let Err(e) = tui.0.draw(|f| ui::draw(&app, f)) {
            break Err(e.into());
        }
        let Some(event) = rx.recv().await else {
            break Ok(());
        };
        // Handle everything already waiting, then draw once: no flicker under a busy tail.
        let mut next = Some(event);
        while let Some(event) = next {
            match app.update(event) {
                Some(Command::Tail(id)) => {
                    if let Some(t) = tail.take() {
                        t.abort();
                    }
                    tail = uuid::Uuid::parse_str(&id)
                        .ok()
                        .map(|id| feed::tail(client.clone(), id, tx.clone()));
                }
                Some(Command::StopTail) => {
                    if let Some(t) = tail.take() {
                        t.abort();
                    }
                }
                None => {}
            }
            next = rx.try_recv().ok();
        }
        if app.quit {
            break Ok(());
        }
    };
    stop_keys.store(true, Ordering::Relaxed);
    poller.abort();
    if let Some(t) = tail {
        t.abort();
    }
    drop(tui);
    let _ = keys.join();
    result
}

/// Reads terminal events on a thread of its own (crossterm's reader blocks) and forwards
/// keys; a resize is forwarded as a key-less redraw.
fn read_keys(tx: mpsc::Sender<Event>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    use crossterm::event::{self, Event as TermEvent};
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match event::poll(Duration::from_millis(100)) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(_) => return,
            }
            let forwarded = match event::read() {
                Ok(TermEvent::Key(k)) => tx.blocking_send(Event::Key(k)),
                Ok(TermEvent::Resize(..)) => tx.blocking_send(Event::Resize),
                Ok(_) => Ok(()),
                Err(_) => return,
            };
            if forwarded.is_err() {
                return;
            }
        }
    })
}
