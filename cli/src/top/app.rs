//! `top`'s state and how events change it. Nothing here draws or does I/O: `update` returns
//! a [`Command`] when the outside world must act (start or stop a tail), so key handling and
//! rate arithmetic are unit-tested without a terminal.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use streamgate::wire::{Stats, StreamView};

/// Samples kept for the sparklines: three minutes at one per second.
pub const HISTORY: usize = 180;
/// Result lines kept in the detail pane.
pub const TAIL_LINES: usize = 200;

/// What happened.
#[derive(Debug)]
pub enum Event {
    Key(KeyEvent),
    /// A stats snapshot and when it arrived.
    Snapshot(Box<Stats>, Instant),
    /// The daemon could not be reached (the poller keeps trying).
    Disconnected(String),
    /// A frame from the detail pane's stream.
    TailLine(String, String),
    /// The terminal changed size: only a redraw is needed.
    Resize,
}

/// What the run loop must do after an update.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Tail(String),
    StopTail,
}

/// Table columns, in display order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    Id,
    Owner,
    Processor,
    InRate,
    OutRate,
    Subscribers,
    LastActivity,
    Backlog,
}

impl Column {
    pub const ALL: [Column; 8] = [
        Column::Id,
        Column::Owner,
        Column::Processor,
        Column::InRate,
        Column::OutRate,
        Column::Subscribers,
        Column::LastActivity,
        Column::Backlog,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Column::Id => "STREAM",
            Column::Owner => "OWNER",
            Column::Processor => "PROCESSOR",
            Column::InRate => "IN/S",
            Column::OutRate => "OUT/S",
            Column::Subscribers => "SUBS",
            Column::LastActivity => "LAST",
            Column::Backlog => "BACKLOG",
        }
    }

    fn index(self) -> usize {
        Column::ALL.iter().position(|c| *c == self).unwrap_or(0)
    }
}

/// One table row: the daemon's counters plus rates derived from the previous snapshot.
#[derive(Debug, Clone)]
pub struct Row {
    /// The stream id as text (what is shown, sorted and filtered).
    pub id: String,
    pub stream: StreamView,
    /// Frames queued for the stream's subscribers on the daemon's instance.
    pub backlog: u64,
    pub processor: String,
    pub in_rate: f64,
    pub out_rate: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Connection {
    Connecting,
    Connected,
    Disconnected(String),
}

#[derive(Debug, Default)]
pub struct Detail {
    pub stream_id: String,
    pub lines: VecDeque<String>,
}

pub struct App {
    /// The daemon's URL, for the header.
    pub url: String,
    pub connection: Connection,
    pub snapshot: Option<Stats>,
    /// When the snapshot arrived: rates divide by the time between two of them.
    received: Option<Instant>,
    pub rows: Vec<Row>,
    pub in_rate: f64,
    pub out_rate: f64,
    pub in_history: VecDeque<u64>,
    pub out_history: VecDeque<u64>,
    pub sort: Column,
    pub descending: bool,
    pub filter: String,
    /// Typing goes into the filter (after `/`).
    pub filtering: bool,
    /// Index into `visible()`.
    pub selected: usize,
    pub detail: Option<Detail>,
    pub help: bool,
    pub quit: bool,
}

impl App {
    pub fn new(url: String) -> Self {
        Self {
            url,
            connection: Connection::Connecting,
            snapshot: None,
            received: None,
            rows: Vec::new(),
            in_rate: 0.0,
            out_rate: 0.0,
            in_history: VecDeque::new(),
            out_history: VecDeque::new(),
            sort: Column::InRate,
            descending: true,
            filter: String::new(),
            filtering: false,
            selected: 0,
            detail: None,
            help: false,
            quit: false,
        }
    }

    /// The rows that match the filter, in sort order.
    pub fn visible(&self) -> Vec<&Row> {
        let needle = self.filter.to_lowercase();
        let mut rows: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| {
                needle.is_empty()
                    || r.id.to_lowercase().contains(&needle)
                    || r.stream.owner.to_lowercase().contains(&needle)
                    || r.processor.to_lowercase().contains(&needle)
            })
            .collect();
        let sort = self.sort;
        rows.sort_by(|a, b| {
            let order = match sort {
                Column::Id => a.id.cmp(&b.id),
                Column::Owner => a.stream.owner.cmp(&b.stream.owner),
                Column::Processor => a.processor.cmp(&b.processor),
                Column::InRate => a.in_rate.total_cmp(&b.in_rate),
                Column::OutRate => a.out_rate.total_cmp(&b.out_rate),
                Column::Subscribers => a.stream.subscribers.cmp(&b.stream.subscribers),
                Column::LastActivity => a.stream.last_activity_ms.cmp(&b.stream.last_activity_ms),
                Column::Backlog => a.backlog.cmp(&b.backlog),
            };
            // Ties keep a stable, readable order.
            let order = order.then_with(|| a.id.cmp(&b.id));
            if self.descending {
                order.reverse()
            } else {
                order
            }
        });
        rows
    }

    pub fn selected_row(&self) -> Option<&Row> {
        self.visible().get(self.selected).copied()
    }

    /// Applies one event.
    pub fn update(&mut self, event: Event) -> Option<Command> {
        match event {
            Event::Key(key) => return self.key(key),
            Event::Snapshot(snapshot, at) => self.snapshot(*snapshot, at),
            Event::Disconnected(why) => self.connection = Connection::Disconnected(why),
            Event::Resize => {}
            Event::TailLine(stream, line) => {
                if let Some(d) = self.detail.as_mut().filter(|d| d.stream_id == stream) {
                    d.lines.push_back(line);
                    while d.lines.len() > TAIL_LINES {
                        d.lines.pop_front();
                    }
                }
            }
        }
        None
    }

    fn snapshot(&mut self, snapshot: Stats, at: Instant) {
        let elapsed = self
            .received
            .map(|prev| at.saturating_duration_since(prev).as_secs_f64())
            .filter(|s| *s > 0.0);
        let previous: HashMap<uuid::Uuid, (u64, u64)> = self
            .snapshot
            .iter()
            .flat_map(|s| &s.streams)
            .map(|r| {
                (
                    r.stream.stream_id,
                    (r.stream.records_in, r.stream.records_out),
                )
            })
            .collect();
        let rate = |now: u64, before: Option<u64>| match (elapsed, before) {
            (Some(secs), Some(b)) => now.saturating_sub(b) as f64 / secs,
            _ => 0.0,
        };
        let rows: Vec<Row> = snapshot
            .streams
            .iter()
            .map(|r| {
                let s = &r.stream;
                let before = previous.get(&s.stream_id);
                Row {
                    id: s.stream_id.to_string(),
                    processor: s.processor.name().to_string(),
                    in_rate: rate(s.records_in, before.map(|b| b.0)),
                    out_rate: rate(s.records_out, before.map(|b| b.1)),
                    backlog: r.backlog,
                    stream: s.clone(),
                }
            })
            .collect();
        if let (Some(prev), Some(_)) = (&self.snapshot, elapsed) {
            self.in_rate = rate(snapshot.totals.records_in, Some(prev.totals.records_in));
            self.out_rate = rate(snapshot.totals.records_out, Some(prev.totals.records_out));
            push(&mut self.in_history, self.in_rate.round() as u64);
            push(&mut self.out_history, self.out_rate.round() as u64);
        }
        self.rows = rows;
        self.snapshot = Some(snapshot);
        self.received = Some(at);
        self.connection = Connection::Connected;
        self.clamp_selection();
    }

    fn clamp_selection(&mut self) {
        let n = self.visible().len();
        self.selected = self.selected.min(n.saturating_sub(1));
    }

    fn key(&mut self, key: KeyEvent) -> Option<Command> {
        if key.kind == KeyEventKind::Release {
            return None;
        }
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            self.quit = true;
            return None;
        }
        if self.filtering {
            match key.code {
                KeyCode::Esc => {
                    self.filter.clear();
                    self.filtering = false;
                }
                KeyCode::Enter => self.filtering = false,
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) => self.filter.push(c),
                _ => {}
            }
            self.clamp_selection();
            return None;
        }
        if self.help {
            // Any key closes the help.
            self.help = false;
            return None;
        }
        let rows = self.visible().len();
        match key.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Esc if self.detail.is_some() => {
                self.detail = None;
                return Some(Command::StopTail);
            }
            KeyCode::Esc => self.quit = true,
            KeyCode::Char('?') => self.help = true,
            KeyCode::Char('/') => self.filtering = true,
            KeyCode::Down | KeyCode::Char('j') => {
                self.selected = (self.selected + 1).min(rows.saturating_sub(1))
            }
            KeyCode::Up | KeyCode::Char('k') => self.selected = self.selected.saturating_sub(1),
            KeyCode::PageDown => self.selected = (self.selected + 10).min(rows.saturating_sub(1)),
            KeyCode::PageUp => self.selected = self.selected.saturating_sub(10),
            KeyCode::Home | KeyCode::Char('g') => self.selected = 0,
            KeyCode::End | KeyCode::Char('G') => self.selected = rows.saturating_sub(1),
            KeyCode::Right | KeyCode::Char('>') => {
                self.sort = Column::ALL[(self.sort.index() + 1) % Column::ALL.len()]
            }
            KeyCode::Left | KeyCode::Char('<') => {
                let n = Column::ALL.len();
                self.sort = Column::ALL[(self.sort.index() + n - 1) % n]
            }
            KeyCode::Char(c @ '1'..='8') => {
                let column = Column::ALL[c as usize - '1' as usize];
                if self.sort == column {
                    self.descending = !self.descending;
                } else {
                    self.sort = column;
                }
            }
            KeyCode::Char('r') => self.descending = !self.descending,
            KeyCode::Enter => {
                if self.detail.is_some() {
                    self.detail = None;
                    return Some(Command::StopTail);
                }
                let id = self.selected_row()?.id.clone();
                self.detail = Some(Detail {
                    stream_id: id.clone(),
                    lines: VecDeque::new(),
                });
                return Some(Command::Tail(id));
            }
            _ => {}
        }
        None
    }

    /// The detail pane's stream as the latest snapshot has it.
    pub fn detail_row(&self) -> Option<&Row> {
        let d = self.detail.as_ref()?;
        self.rows.iter().find(|r| r.id == d.stream_id)
    }
}

fn push(history: &mut VecDeque<u64>, v: u64) {
    history.push_back(v);
    while history.len() > HISTORY {
        history.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::fixtures::{id, name, row, snapshot};
    use std::time::Duration;

    fn key(app: &mut App, code: KeyCode) -> Option<Command> {
        app.update(Event::Key(KeyEvent::new(code, KeyModifiers::NONE)))
    }

    fn type_text(app: &mut App, text: &str) {
        for c in text.chars() {
            key(app, KeyCode::Char(c));
        }
    }

    #[test]
    fn rates_come_from_two_snapshots() {
        let mut app = App::new("http://x".into());
        let t0 = Instant::now();
        app.update(Event::Snapshot(
            Box::new(snapshot(vec![row("a", "alice", 100, 50)])),
            t0,
        ));
        assert_eq!(app.rows[0].in_rate, 0.0, "one snapshot has no rate yet");
        app.update(Event::Snapshot(
            Box::new(snapshot(vec![row("a", "alice", 300, 150)])),
            t0 + Duration::from_secs(2),
        ));
        assert_eq!(app.rows[0].in_rate, 100.0);
        assert_eq!(app.rows[0].out_rate, 50.0);
        assert_eq!((app.in_rate, app.out_rate), (100.0, 50.0));
        assert_eq!(app.in_history, [100]);
        assert_eq!(app.connection, Connection::Connected);
    }

    #[test]
    fn sort_keys_and_filter_typing() {
        let mut app = App::new("http://x".into());
        let t0 = Instant::now();
        let rows = vec![row("a1", "alice", 0, 0), row("b2", "bob", 0, 0)];
        app.update(Event::Snapshot(Box::new(snapshot(rows)), t0));
        let later = vec![row("a1", "alice", 10, 0), row("b2", "bob", 30, 0)];
        app.update(Event::Snapshot(
            Box::new(snapshot(later)),
            t0 + Duration::from_secs(1),
        ));
        let ids =
            |app: &App| -> Vec<String> { app.visible().iter().map(|r| name(&r.id)).collect() };
        assert_eq!(ids(&app), ["b2", "a1"], "default: busiest first");
        key(&mut app, KeyCode::Char('1')); // by id, descending
        assert_eq!(ids(&app), ["b2", "a1"]);
        key(&mut app, KeyCode::Char('1')); // again: ascending
        assert_eq!(ids(&app), ["a1", "b2"]);
        key(&mut app, KeyCode::Char('r'));
        assert_eq!(ids(&app), ["b2", "a1"]);
        key(&mut app, KeyCode::Right);
        assert_eq!(app.sort, Column::Owner);

        key(&mut app, KeyCode::Char('/'));
        type_text(&mut app, "ali");
        assert_eq!(ids(&app), ["a1"]);
        assert!(!app.quit, "q-less text typed into the filter");
        key(&mut app, KeyCode::Backspace);
        key(&mut app, KeyCode::Enter);
        assert_eq!(app.filter, "al");
        assert!(!app.filtering);
        key(&mut app, KeyCode::Char('/'));
        key(&mut app, KeyCode::Esc);
        assert_eq!(app.filter, "", "Esc in the filter clears it");
        assert!(!app.quit);
    }

    #[test]
    fn enter_opens_the_detail_and_esc_closes_it_then_quits() {
        let mut app = App::new("http://x".into());
        assert_eq!(key(&mut app, KeyCode::Enter), None, "no stream, no detail");
        app.update(Event::Snapshot(
            Box::new(snapshot(vec![row("a1", "alice", 0, 0)])),
            Instant::now(),
        ));
        assert_eq!(
            key(&mut app, KeyCode::Enter),
            Some(Command::Tail(id("a1").to_string()))
        );
        app.update(Event::TailLine(
            id("a1").to_string(),
            "{\"type\":\"result\"}".into(),
        ));
        app.update(Event::TailLine("other".into(), "ignored".into()));
        assert_eq!(app.detail.as_ref().unwrap().lines.len(), 1);
        assert_eq!(key(&mut app, KeyCode::Esc), Some(Command::StopTail));
        assert!(app.detail.is_none() && !app.quit);
        key(&mut app, KeyCode::Char('?'));
        assert!(app.help);
        key(&mut app, KeyCode::Char('q'));
        assert!(!app.help && !app.quit, "a key closes the help first");
        key(&mut app, KeyCode::Esc);
        assert!(app.quit);
    }

    #[test]
    fn selection_moves_within_the_visible_rows() {
        let mut app = App::new("http://x".into());
        let rows = (0..5)
            .map(|i| row(&format!("s{i}"), "alice", 0, 0))
            .collect();
        app.update(Event::Snapshot(Box::new(snapshot(rows)), Instant::now()));
        key(&mut app, KeyCode::End);
        assert_eq!(app.selected, 4);
        key(&mut app, KeyCode::Down);
        assert_eq!(app.selected, 4);
        key(&mut app, KeyCode::Char('/'));
        type_text(&mut app, &id("s1").to_string()[..4]);
        assert_eq!(app.selected, 0, "clamped to the filtered rows");
        assert!(app.update(Event::Disconnected("refused".into())).is_none());
        assert_eq!(app.connection, Connection::Disconnected("refused".into()));
    }
}
