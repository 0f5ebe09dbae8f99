//! Drawing `top`: a pure function of [`App`], so every screen can be rendered into ratatui's
//! `TestBackend` and checked.
//!
//! Layout, top to bottom: header (daemon, broker, uptime), totals with sparklines of records
//! in/out per second, the streams table (or table + detail pane), a one-line footer. Help and
//! the disconnected notice draw over it.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Sparkline, Table, TableState};
use ratatui::Frame;

use super::app::{App, Column, Connection};
use crate::streams::ago;

pub fn draw(app: &App, frame: &mut Frame) {
    let [header, totals, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(5),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    draw_header(app, frame, header);
    draw_totals(app, frame, totals);
    if app.detail.is_some() {
        let [table, detail] =
            Layout::vertical([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(body);
        draw_table(app, frame, table);
        draw_detail(app, frame, detail);
    } else {
        draw_table(app, frame, body);
    }
    draw_footer(app, frame, footer);
    if app.help {
        draw_help(frame);
    }
}

fn draw_header(app: &App, frame: &mut Frame, area: Rect) {
    let mut spans = vec![
        Span::styled(" streamgate top ", Style::new().bold().reversed()),
        Span::raw(format!("  {}", app.url)),
    ];
    match (&app.connection, &app.snapshot) {
        (Connection::Disconnected(_), _) => {
            spans.push(Span::styled(
                "  DISCONNECTED, retrying",
                Style::new().fg(Color::Red).bold(),
            ));
        }
        (Connection::Connecting, _) => spans.push(Span::raw("  connecting…")),
        (Connection::Connected, Some(s)) => {
            let broker = if s.broker.reachable {
                Span::styled("ok", Style::new().fg(Color::Green))
            } else {
                Span::styled("UNREACHABLE", Style::new().fg(Color::Red).bold())
            };
            spans.extend([
                Span::raw(format!("  broker {} ", s.broker.name())),
                broker,
                Span::raw(format!("  uptime {}  v{}", uptime(s.uptime_s), s.version)),
            ]);
        }
        (Connection::Connected, None) => {}
    }
    frame.render_widget(Line::from(spans), area);
}

fn draw_totals(app: &App, frame: &mut Frame, area: Rect) {
    let block = Block::new().borders(Borders::ALL).title(" totals ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [text, spark_in, spark_out] = Layout::horizontal([
        Constraint::Percentage(50),
        Constraint::Percentage(25),
        Constraint::Percentage(25),
    ])
    .areas(inner);
    let (streams, subscribers, latency) = match &app.snapshot {
        Some(s) => (
            s.totals.streams.to_string(),
            s.totals.subscribers.to_string(),
            if s.totals.latency_ms.count == 0 {
                "p50 -  p99 -".to_string()
            } else {
                format!(
                    "p50 {:.1} ms  p99 {:.1} ms",
                    s.totals.latency_ms.p50, s.totals.latency_ms.p99
                )
            },
        ),
        None => ("-".into(), "-".into(), "-".into()),
    };
    let lines = vec![
        Line::from(format!("streams {streams}   subscribers {subscribers}")),
        Line::from(format!(
            "in {}/s   out {}/s",
            rate(app.in_rate),
            rate(app.out_rate)
        )),
        Line::from(format!("end-to-end latency {latency}")),
    ];
    frame.render_widget(Paragraph::new(lines), text);
    for (area, title, data, color) in [
        (spark_in, "in/s", &app.in_history, Color::Cyan),
        (spark_out, "out/s", &app.out_history, Color::Green),
    ] {
        // The newest samples that fit, right-aligned like htop's graphs.
        let width = area.width.saturating_sub(2) as usize;
        let data: Vec<u64> = data
            .iter()
            .skip(data.len().saturating_sub(width))
            .copied()
            .collect();
        let spark = Sparkline::default()
            .block(Block::new().borders(Borders::LEFT).title(title))
            .data(data)
            .style(Style::new().fg(color));
        frame.render_widget(spark, area);
    }
}

fn draw_table(app: &App, frame: &mut Frame, area: Rect) {
    let now = app.snapshot.as_ref().map_or(0, |s| s.now_ms);
    let header = Row::new(Column::ALL.iter().map(|c| {
        let mut title = c.title().to_string();
        if *c == app.sort {
            title.push(if app.descending { '▼' } else { '▲' });
            Cell::from(title).style(Style::new().fg(Color::Yellow))
        } else {
            Cell::from(title)
        }
    }))
    .style(Style::new().bold());
    let visible = app.visible();
    let rows = visible.iter().map(|r| {
        Row::new([
            Cell::from(r.id.clone()),
            Cell::from(r.stream.owner.clone()),
            Cell::from(r.processor.clone()),
            Cell::from(rate(r.in_rate)),
            Cell::from(rate(r.out_rate)),
            Cell::from(r.stream.subscribers.to_string()),
            Cell::from(ago(r.stream.last_activity_ms, now)),
            Cell::from(r.backlog.to_string()),
        ])
    });
    let widths = [
        Constraint::Length(36),
        Constraint::Length(10),
        Constraint::Length(12),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(5),
        Constraint::Length(9),
        Constraint::Length(8),
    ];
    let title = match (visible.len(), app.rows.len(), app.filter.is_empty()) {
        (0, 0, _) => " streams: none open ".to_string(),
        (_, total, true) => format!(" streams ({total}) "),
        (shown, total, false) => format!(" streams ({shown} of {total} match /{}) ", app.filter),
    };
    let table = Table::new(rows, widths)
        .header(header)
        .block(Block::new().borders(Borders::ALL).title(title))
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    let mut state =
        TableState::default().with_selected((!visible.is_empty()).then_some(app.selected));
    frame.render_stateful_widget(table, area, &mut state);
}

fn draw_detail(app: &App, frame: &mut Frame, area: Rect) {
    let Some(detail) = &app.detail else {
        return;
    };
    let block = Block::new()
        .borders(Borders::ALL)
        .title(format!(" {} (Esc to close) ", detail.stream_id));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [counters, tail] =
        Layout::vertical([Constraint::Length(2), Constraint::Min(1)]).areas(inner);
    let text = match app.detail_row() {
        Some(r) => vec![
            Line::from(format!(
                "owner {}   processor {}   subscribers {}   backlog {}",
                r.stream.owner, r.processor, r.stream.subscribers, r.backlog
            )),
            Line::from(format!(
                "records in {} ({}/s)   results out {} ({}/s)",
                r.stream.records_in,
                rate(r.in_rate),
                r.stream.records_out,
                rate(r.out_rate)
            )),
        ],
        None => vec![Line::from("the stream is no longer open")],
    };
    frame.render_widget(Paragraph::new(text), counters);
    let height = tail.height as usize;
    let lines: Vec<Line> = if detail.lines.is_empty() {
        vec![Line::from("waiting for results…".dim())]
    } else {
        detail
            .lines
            .iter()
            .skip(detail.lines.len().saturating_sub(height))
            .map(|l| Line::from(l.as_str()))
            .collect()
    };
    frame.render_widget(Paragraph::new(lines), tail);
}

fn draw_footer(app: &App, frame: &mut Frame, area: Rect) {
    let line = if app.filtering {
        Line::from(vec![
            Span::styled(" filter: ", Style::new().bold()),
            Span::raw(format!("{}▏", app.filter)),
            Span::raw("   Enter keep  Esc clear"),
        ])
    } else {
        Line::from(" ? help  q quit  ↑↓ select  Enter details  ←→ sort  r reverse  / filter".dim())
    };
    frame.render_widget(line, area);
}

fn draw_help(frame: &mut Frame) {
    let text = vec![
        Line::from("Keys".bold()),
        Line::from(""),
        Line::from("↑ ↓ j k, PgUp PgDn, Home End   select a stream"),
        Line::from("Enter                          details and live results of the stream"),
        Line::from("← → < >                        sort by the previous / next column"),
        Line::from("1 … 8                          sort by that column (again: reverse)"),
        Line::from("r                              reverse the sort"),
        Line::from("/                              filter by id, owner or processor"),
        Line::from("Esc                            close details / clear filter / quit"),
        Line::from("q, Ctrl-C                      quit"),
        Line::from(""),
        Line::from("Rates are per second between two snapshots (one per second)."),
        Line::from("BACKLOG: results queued for this instance's subscribers."),
        Line::from(""),
        Line::from("any key closes this help".dim()),
    ];
    let area = centered(frame.area(), 76, text.len() as u16 + 2);
    frame.render_widget(Clear, area);
    frame.render_widget(
        Paragraph::new(text).block(Block::new().borders(Borders::ALL).title(" help ")),
        area,
    );
}

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    }
}

/// A rate for display: whole numbers, or one decimal below 10.
pub fn rate(r: f64) -> String {
    if r < 10.0 {
        format!("{r:.1}")
    } else {
        format!("{r:.0}")
    }
}

fn uptime(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    use super::*;
    use crate::top::app::Event;
    use crate::top::fixtures::{id, row, snapshot};
    use streamgate::wire::StatsRow;

    /// How a fixture stream's id is shown.
    fn shown(name: &str) -> String {
        id(name).to_string()
    }

    /// An app that has seen two snapshots one second apart.
    fn app_with(before: Vec<StatsRow>, after: Vec<StatsRow>) -> App {
        let mut app = App::new("http://127.0.0.1:8080".into());
        let t0 = Instant::now();
        app.update(Event::Snapshot(Box::new(snapshot(before)), t0));
        app.update(Event::Snapshot(
            Box::new(snapshot(after)),
            t0 + Duration::from_secs(1),
        ));
        app
    }

    fn render(app: &App) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(130, 30)).unwrap();
        terminal.draw(|f| draw(app, f)).unwrap();
        let buffer = terminal.backend().buffer();
        buffer
            .content()
            .chunks(buffer.area.width as usize)
            .map(|cells| cells.iter().map(|c| c.symbol()).collect::<String>())
            .collect()
    }

    fn screen(app: &App) -> String {
        render(app).join("\n")
    }

    fn key(app: &mut App, code: KeyCode) {
        app.update(Event::Key(KeyEvent::new(code, KeyModifiers::NONE)));
    }

    #[test]
    fn no_streams() {
        let app = app_with(vec![], vec![]);
        let s = screen(&app);
        assert!(s.contains("http://127.0.0.1:8080"), "{s}");
        assert!(s.contains("broker 127.0.0.1:9092 ok"), "{s}");
        assert!(s.contains("uptime 1h02m"), "{s}");
        assert!(s.contains("streams 0"), "{s}");
        assert!(s.contains("p50 12.5 ms  p99 48.0 ms"), "{s}");
        assert!(s.contains("streams: none open"), "{s}");
    }

    #[test]
    fn many_streams_sorted_and_filtered() {
        let ids: Vec<String> = (0..30).map(|i| format!("stream-{i:02}")).collect();
        let before = ids.iter().map(|id| row(id, "alice", 0, 0)).collect();
        let mut after: Vec<StatsRow> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                row(
                    id,
                    if i % 2 == 0 { "alice" } else { "bob" },
                    i as u64 * 10,
                    i as u64 * 10,
                )
            })
            .collect();
        after[3].stream.owner = "carol".into();
        let mut app = app_with(before, after);
        let lines = render(&app);
        let s = lines.join("\n");
        assert!(s.contains("IN/S▼"), "sorted by in/s, descending: {s}");
        assert!(s.contains("streams (30)"), "{s}");
        // Busiest first: stream-29 (290/s) is the first data row, above stream-28.
        let pos = |name: &str| lines.iter().position(|l| l.contains(&shown(name)));
        assert!(pos("stream-29") < pos("stream-28"), "{s}");
        assert!(lines
            .iter()
            .any(|l| l.contains(&shown("stream-29")) && l.contains("290")));
        assert!(s.contains("in 4350/s"), "total rate: {s}");

        key(&mut app, KeyCode::Char('/'));
        for c in "carol".chars() {
            key(&mut app, KeyCode::Char(c));
        }
        let s = screen(&app);
        assert!(s.contains("streams (1 of 30 match /carol)"), "{s}");
        assert!(
            s.contains(&shown("stream-03")) && !s.contains(&shown("stream-29")),
            "{s}"
        );
        assert!(s.contains("filter: carol"), "{s}");
    }

    #[test]
    fn detail_pane_shows_counters_and_the_live_tail() {
        let mut app = app_with(
            vec![row("s-1", "alice", 10, 10)],
            vec![row("s-1", "alice", 15, 15)],
        );
        key(&mut app, KeyCode::Enter);
        let s = screen(&app);
        assert!(
            s.contains(&format!("{} (Esc to close)", shown("s-1"))),
            "{s}"
        );
        assert!(s.contains("records in 15 (5.0/s)"), "{s}");
        assert!(s.contains("waiting for results"), "{s}");
        app.update(Event::TailLine(
            shown("s-1"),
            r#"{"type":"result","data":42}"#.into(),
        ));
        let s = screen(&app);
        assert!(s.contains(r#"{"type":"result","data":42}"#), "{s}");
    }

    #[test]
    fn disconnected_keeps_the_last_data_and_says_so() {
        let mut app = app_with(
            vec![row("s-1", "alice", 1, 1)],
            vec![row("s-1", "alice", 2, 2)],
        );
        app.update(Event::Disconnected("connection refused".into()));
        let s = screen(&app);
        assert!(s.contains("DISCONNECTED, retrying"), "{s}");
        assert!(
            s.contains(&shown("s-1")),
            "the last snapshot stays visible: {s}"
        );
    }

    #[test]
    fn help_overlay() {
        let mut app = app_with(vec![], vec![]);
        key(&mut app, KeyCode::Char('?'));
        let s = screen(&app);
        assert!(s.contains("sort by that column"), "{s}");
    }
}
