//! What `gilwatch top` shows, apart from how it is drawn: the latest interval's threads, their
//! history, and what the keys changed (sort, filter, pause).
use std::collections::{HashMap, VecDeque};

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::report::{Report, canvas::Canvas, table::SUFFERING_PCT, terminal};

/// Intervals of history a thread's sparkline keeps.
pub const HISTORY: usize = 120;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    Wait,
    Hold,
}

impl SortBy {
    pub fn label(self) -> &'static str {
        match self {
            SortBy::Wait => "WAIT",
            SortBy::Hold => "HOLD",
        }
    }
}

/// One thread over the last interval.
#[derive(Debug, Clone)]
pub struct ThreadRow {
    pub tid: u32,
    pub name: String,
    pub acquisitions_per_sec: f64,
    /// Shares of the interval, %.
    pub wait_pct: f64,
    pub hold_pct: f64,
    pub wait_p50: u64,
    pub hold_p50: u64,
    pub wait_max: u64,
}

/// What a key asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Nothing,
    Redraw,
    Quit,
}

#[derive(Default)]
pub struct App {
    pub title: String,
    pub sort: Option<SortBy>,
    /// Applied filter: threads whose name contains it (case-insensitive).
    pub filter: String,
    /// The filter being typed after `/`.
    pub editing: Option<String>,
    pub paused: bool,
    pub elapsed_ns: u64,
    pub intervals: u64,
    pub rows: Vec<ThreadRow>,
    pub summary: String,
    pub verdict: String,
    pub contended: bool,
    pub sampled: Option<f64>,
    /// Per thread: wait share of each interval, % (oldest first).
    pub wait_history: HashMap<u32, VecDeque<u64>>,
    /// Summed wait of all threads per interval, % of the interval.
    pub gil_wait_history: VecDeque<u64>,
    pub gil_held_history: VecDeque<u64>,
}

fn push(h: &mut VecDeque<u64>, v: u64) {
    if h.len() == HISTORY {
        h.pop_front();
    }
    h.push_back(v);
}

impl App {
    pub fn new(title: String) -> App {
        App {
            title,
            sort: Some(SortBy::Wait),
            ..App::default()
        }
    }

    pub fn sort_by(&self) -> SortBy {
        self.sort.unwrap_or(SortBy::Wait)
    }

    /// A new interval's report (ignored while paused: the screen keeps what it had).
    pub fn update(&mut self, r: &Report, elapsed_ns: u64) {
        if self.paused {
            return;
        }
        self.elapsed_ns = elapsed_ns;
        self.intervals += 1;
        let observed = r.sampling.observed_ns.max(1) as f64;
        let secs = observed / 1e9;
        let share = |ns: u64| ns as f64 * 100.0 / observed;
        self.rows = r
            .threads
            .iter()
            .map(|t| ThreadRow {
                tid: t.tid,
                name: t.name.clone(),
                acquisitions_per_sec: t.acquisitions as f64 / secs,
                wait_pct: share(t.wait_ns.total),
                hold_pct: share(t.hold_ns.total),
                wait_p50: t.wait_ns.p50,
                hold_p50: t.hold_ns.p50,
                wait_max: t.wait_ns.max,
            })
            .collect();
        // Threads quiet this interval get a zero, so every sparkline moves at the same pace.
        let active: HashMap<u32, f64> = self.rows.iter().map(|t| (t.tid, t.wait_pct)).collect();
        for (tid, h) in self.wait_history.iter_mut() {
            if !active.contains_key(tid) {
                push(h, 0);
            }
        }
        // A thread quiet for the whole history (most likely gone) is forgotten: a service that
        // starts threads all day must not grow this map all day.
        self.wait_history
            .retain(|tid, h| active.contains_key(tid) || h.iter().any(|&v| v > 0));
        for (&tid, &w) in &active {
            push(self.wait_history.entry(tid).or_default(), w.round() as u64);
        }
        push(&mut self.gil_wait_history, r.gil.wait_pct.round() as u64);
        push(&mut self.gil_held_history, r.gil.held_pct.round() as u64);
        self.summary = terminal::summary_line(r);
        self.verdict = if r.threads.is_empty() {
            "No GIL activity in this interval.".to_owned()
        } else {
            terminal::verdict(r, &Canvas::PLAIN)
                .lines()
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ")
        };
        self.contended = self.rows.iter().any(|t| t.wait_pct >= SUFFERING_PCT);
        self.sampled = r.sampling.sampled.then_some(r.sampling.coverage);
    }

    /// The rows to show: filtered, sorted (most waiting or most holding first).
    pub fn visible(&self) -> Vec<&ThreadRow> {
        let needle = self
            .editing
            .as_deref()
            .unwrap_or(&self.filter)
            .to_lowercase();
        let mut rows: Vec<&ThreadRow> = self
            .rows
            .iter()
            .filter(|t| needle.is_empty() || t.name.to_lowercase().contains(&needle))
            .collect();
        let key = |t: &ThreadRow| match self.sort_by() {
            SortBy::Wait => (t.wait_pct, t.hold_pct),
            SortBy::Hold => (t.hold_pct, t.wait_pct),
        };
        rows.sort_by(|a, b| {
            key(b)
                .partial_cmp(&key(a))
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.tid.cmp(&b.tid))
        });
        rows
    }

    pub fn key(&mut self, k: KeyEvent) -> Action {
        if k.kind == KeyEventKind::Release {
            return Action::Nothing;
        }
        // Raw mode turns Ctrl-C into a key: it quits, as it would anywhere else.
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        if let Some(text) = self.editing.as_mut() {
            match k.code {
                KeyCode::Enter => {
                    self.filter = self.editing.take().unwrap_or_default();
                }
                KeyCode::Esc => self.editing = None,
                KeyCode::Backspace => {
                    text.pop();
                }
                KeyCode::Char(c) => text.push(c),
                _ => return Action::Nothing,
            }
            return Action::Redraw;
        }
        match k.code {
            KeyCode::Char('q') | KeyCode::Char('Q') => return Action::Quit,
            KeyCode::Char('w') => self.sort = Some(SortBy::Wait),
            KeyCode::Char('h') => self.sort = Some(SortBy::Hold),
            KeyCode::Char(' ') | KeyCode::Char('p') => self.paused = !self.paused,
            KeyCode::Char('/') => self.editing = Some(self.filter.clone()),
            KeyCode::Esc => self.filter.clear(),
            _ => return Action::Nothing,
        }
        Action::Redraw
    }
}

/// A history as a line of block characters (8 levels), scaled to `top` (a share: 100%).
pub fn sparkline(h: &VecDeque<u64>, width: usize, top: u64) -> String {
    const LEVELS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let skip = h.len().saturating_sub(width);
    h.iter()
        .skip(skip)
        .map(|&v| {
            let level = (v.min(top) * 7).div_ceil(top.max(1)) as usize;
            LEVELS[level.min(7)]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(tid: u32, name: &str, wait: f64, hold: f64) -> ThreadRow {
        ThreadRow {
            tid,
            name: name.into(),
            acquisitions_per_sec: 100.0,
            wait_pct: wait,
            hold_pct: hold,
            wait_p50: 0,
            hold_p50: 0,
            wait_max: 0,
        }
    }

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    #[test]
    fn keys_sort_filter_pause_and_quit() {
        let mut app = App::new("t".into());
        app.rows = vec![
            row(1, "cpu-hog", 0.1, 98.0),
            row(2, "io-1", 80.0, 0.1),
            row(3, "io-2", 79.0, 0.2),
        ];
        let names =
            |app: &App| -> Vec<String> { app.visible().iter().map(|r| r.name.clone()).collect() };
        assert_eq!(names(&app), ["io-1", "io-2", "cpu-hog"]);
        assert_eq!(app.key(key(KeyCode::Char('h'))), Action::Redraw);
        assert_eq!(names(&app), ["cpu-hog", "io-2", "io-1"]);
        app.key(key(KeyCode::Char('w')));
        app.key(key(KeyCode::Char('/')));
        app.key(key(KeyCode::Char('I')));
        app.key(key(KeyCode::Char('O')));
        // Applied while typed, kept after Enter; `q` is text while typing.
        assert_eq!(names(&app), ["io-1", "io-2"]);
        app.key(key(KeyCode::Char('q')));
        assert!(names(&app).is_empty());
        app.key(key(KeyCode::Backspace));
        assert_eq!(app.key(key(KeyCode::Enter)), Action::Redraw);
        assert_eq!(app.filter, "IO");
        assert_eq!(names(&app), ["io-1", "io-2"]);
        app.key(key(KeyCode::Esc));
        assert_eq!(names(&app).len(), 3);
        app.key(key(KeyCode::Char(' ')));
        assert!(app.paused);
        assert_eq!(app.key(key(KeyCode::Char('q'))), Action::Quit);
        assert_eq!(
            app.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Action::Quit
        );
    }

    #[test]
    fn sparklines_scale_to_a_share() {
        let h: VecDeque<u64> = [0, 50, 100, 250].into_iter().collect();
        assert_eq!(sparkline(&h, 10, 100), "▁▅██");
        assert_eq!(sparkline(&h, 2, 100), "██");
        assert_eq!(sparkline(&VecDeque::new(), 10, 100), "");
    }
}
