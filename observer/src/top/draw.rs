//! How `gilwatch top` draws its state: a header, the verdict, the GIL's history, the thread
//! table with a sparkline per thread, the keys. Rendering only: no I/O, no state changes.
use ratatui::{
    Frame,
    layout::{Constraint, Layout},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Borders, Cell, Paragraph, Row, Sparkline, Table, Wrap},
};

use super::app::{App, SortBy, sparkline};
use crate::report::{
    format::{fmt_ns, pct, truncate},
    table::SUFFERING_PCT,
};

pub fn draw(f: &mut Frame<'_>, app: &App) {
    let [head, verdict, history, table, keys] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(2),
        Constraint::Length(4),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(f.area());

    let mut status = vec![
        Span::styled(app.title.clone(), Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(format!(
            " · {:.0}s · sorted by {}",
            app.elapsed_ns as f64 / 1e9,
            app.sort_by().label()
        )),
    ];
    if !app.filter.is_empty() {
        status.push(Span::raw(format!(" · filter: {}", app.filter)));
    }
    if let Some(c) = app.sampled {
        status.push(Span::styled(
            format!(" · SAMPLED {:.0}%", c * 100.0),
            Style::new().fg(Color::Yellow),
        ));
    }
    if app.paused {
        status.push(Span::styled(
            " · PAUSED",
            Style::new()
                .fg(Color::Black)
                .bg(Color::Yellow)
                .add_modifier(Modifier::BOLD),
        ));
    }
    let summary = if app.intervals == 0 {
        "waiting for the first interval…".to_owned()
    } else {
        app.summary.clone()
    };
    f.render_widget(
        Paragraph::new(vec![Line::from(status), Line::from(summary)]),
        head,
    );

    let colour = if app.contended {
        Color::Red
    } else {
        Color::Green
    };
    f.render_widget(
        Paragraph::new(app.verdict.clone())
            .style(Style::new().fg(colour))
            .wrap(Wrap { trim: true }),
        verdict,
    );

    let held: Vec<u64> = app.gil_held_history.iter().copied().collect();
    let skip = held
        .len()
        .saturating_sub(usize::from(history.width.saturating_sub(2)));
    f.render_widget(
        Sparkline::default()
            .block(Block::new().borders(Borders::TOP).title(format!(
                        " GIL held, % of each interval (now {}) ",
                        app.gil_held_history.back().map_or("–".into(), |&v| format!("{v}%"))
                    )))
            .data(&held[skip..])
            .max(100)
            .style(Style::new().fg(Color::Blue)),
        history,
    );

    f.render_widget(thread_table(app, table.width), table);

    let keys_line = match &app.editing {
        Some(text) => Line::from(vec![
            Span::styled(" filter: ", Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(format!("{text}▏")),
            Span::raw("   Enter apply · Esc cancel"),
        ]),
        None => Line::from(" w sort by wait · h sort by hold · / filter · space pause · q quit"),
    };
    f.render_widget(
        Paragraph::new(keys_line).style(Style::new().add_modifier(Modifier::REVERSED)),
        keys,
    );
}

fn thread_table(app: &App, width: u16) -> Table<'static> {
    let rows = app.visible();
    let sorted = |s: SortBy, text: &'static str| {
        if app.sort_by() == s {
            Cell::from(format!("{text}▼"))
        } else {
            Cell::from(text)
        }
    };
    let header = Row::new(vec![
        Cell::from("    TID"),
        Cell::from("THREAD"),
        Cell::from("  ACQ/s"),
        sorted(SortBy::Wait, "WAIT%"),
        Cell::from("wait p50"),
        Cell::from("wait max"),
        sorted(SortBy::Hold, "HOLD%"),
        Cell::from("hold p50"),
        Cell::from("WAIT % HISTORY"),
    ])
    .style(Style::new().add_modifier(Modifier::BOLD));
    // Fixed columns take 8+8+7+9+9+7+9 = 57 and gaps 8; the name and the history share the rest.
    let rest = width.saturating_sub(65);
    let name_w = (rest / 3).clamp(8, 28);
    let history_w = rest.saturating_sub(name_w).max(4);
    let body: Vec<Row<'static>> = rows
        .iter()
        .map(|t| {
            let hot = t.wait_pct >= SUFFERING_PCT;
            let wait_style = if hot {
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
            } else {
                Style::new()
            };
            let spark = app
                .wait_history
                .get(&t.tid)
                .map(|h| sparkline(h, usize::from(history_w), 100))
                .unwrap_or_default();
            Row::new(vec![
                Cell::from(format!("{:>7}", t.tid)),
                Cell::from(truncate(&t.name, usize::from(name_w))),
                Cell::from(format!("{:>7.0}", t.acquisitions_per_sec)),
                Cell::from(format!("{:>6}", pct(t.wait_pct))).style(wait_style),
                Cell::from(format!("{:>8}", fmt_ns(t.wait_p50))),
                Cell::from(format!("{:>8}", fmt_ns(t.wait_max))),
                Cell::from(format!("{:>6}", pct(t.hold_pct))),
                Cell::from(format!("{:>8}", fmt_ns(t.hold_p50))),
                Cell::from(spark).style(Style::new().fg(if hot {
                    Color::Red
                } else {
                    Color::Cyan
                })),
            ])
        })
        .collect();
    let empty = body.is_empty();
    let title = if empty && !app.filter.is_empty() {
        format!(" no thread matches “{}” (Esc clears) ", app.filter)
    } else {
        format!(" threads ({} shown of {}) ", rows.len(), app.rows.len())
    };
    Table::new(
        body,
        [
            Constraint::Length(8),
            Constraint::Length(name_w),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(7),
            Constraint::Length(9),
            Constraint::Length(history_w),
        ],
    )
    .header(header)
    .block(Block::new().borders(Borders::TOP).title(title))
}

#[cfg(test)]
mod tests {
    use ratatui::{Terminal, backend::TestBackend};

    use super::*;
    use crate::top::app::ThreadRow;

    fn screen(app: &App, w: u16, h: u16) -> String {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(|f| draw(f, app)).unwrap();
        let buf = t.backend().buffer().clone();
        (0..h)
            .map(|y| {
                (0..w)
                    .map(|x| buf[(x, y)].symbol().to_owned())
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn draws_empty_and_tiny_screens_without_panicking() {
        let app = App::new("gilwatch top · PID 1".into());
        let s = screen(&app, 100, 20);
        assert!(s.contains("waiting for the first interval"), "{s}");
        screen(&app, 10, 3);
        screen(&app, 1, 1);
    }

    #[test]
    fn rows_show_names_shares_and_history() {
        let mut app = App::new("gilwatch top · PID 1".into());
        app.intervals = 1;
        app.rows = vec![ThreadRow {
            tid: 42,
            name: "io-1".into(),
            acquisitions_per_sec: 199.0,
            wait_pct: 80.0,
            hold_pct: 0.1,
            wait_p50: 5_000_000,
            hold_p50: 2_000,
            wait_max: 20_000_000,
        }];
        app.wait_history
            .insert(42, [10, 80, 100].into_iter().collect());
        let s = screen(&app, 120, 20);
        for want in ["io-1", "80%", "5ms", "▂▇█", "WAIT%▼", "q quit"] {
            assert!(s.contains(want), "{want} missing:\n{s}");
        }
    }
}
