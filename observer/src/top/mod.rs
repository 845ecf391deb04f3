//! `gilwatch top -p PID`: the run's interval reports as a live full-screen view (ratatui on
//! crossterm), driven by the session like the live tables are. Keys sort, filter and pause; `q`
//! ends the run through the same path as Ctrl-C does in a plain run, so the probes are removed
//! and the final report is printed once the screen is given back.
pub mod app;
pub mod draw;

use std::{
    io::IsTerminal,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use ratatui::{
    DefaultTerminal,
    crossterm::event::{self, Event},
};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use self::app::{Action, App};
use crate::{
    error::{Exit, user},
    report::Report,
};

/// How often the input thread looks whether the view has ended.
const INPUT_POLL: Duration = Duration::from_millis(100);

pub struct Top {
    terminal: DefaultTerminal,
    app: App,
    /// Terminal events, from a thread started at the first wait for them (see `next_event`).
    events: Option<UnboundedReceiver<Event>>,
    stop: Arc<AtomicBool>,
}

/// `gilwatch top` draws on a terminal or not at all.
pub fn require_terminal() -> anyhow::Result<()> {
    if std::io::stdout().is_terminal() {
        return Ok(());
    }
    Err(user(
        Exit::Usage,
        "top needs a terminal (its output is not one): for a log, run gilwatch -p PID -i 1s (with --json - for JSON lines)",
    ))
}

impl Top {
    /// Takes over the terminal (raw mode, alternate screen; ratatui's panic hook gives it back).
    pub fn start(title: String) -> anyhow::Result<Top> {
        let terminal = ratatui::try_init().context("setting up the terminal for gilwatch top")?;
        let mut top = Top {
            terminal,
            app: App::new(title),
            events: None,
            stop: Arc::new(AtomicBool::new(false)),
        };
        top.draw()?;
        Ok(top)
    }

    fn draw(&mut self) -> anyhow::Result<()> {
        let app = &self.app;
        self.terminal
            .draw(|f| draw::draw(f, app))
            .context("drawing gilwatch top")?;
        Ok(())
    }

    /// One interval's report.
    pub fn interval(&mut self, r: &Report, elapsed_ns: u64) -> anyhow::Result<()> {
        self.app.update(r, elapsed_ns);
        self.draw()
    }

    /// The next key or resize. The reading thread starts here, inside the session, after the
    /// session blocked SIGINT/SIGTERM: a thread started before would inherit them unblocked, and
    /// a SIGTERM delivered to it would kill gilwatch without its cleanup (see `stop`).
    pub async fn next_event(&mut self) -> Event {
        if self.events.is_none() {
            let (tx, rx) = unbounded_channel();
            let stop = self.stop.clone();
            std::thread::Builder::new()
                .name("top-input".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match event::poll(INPUT_POLL) {
                            Ok(true) => {
                                let sent = event::read().ok().is_some_and(|e| tx.send(e).is_ok());
                                if !sent {
                                    return;
                                }
                            }
                            Ok(false) => {}
                            Err(_) => return,
                        }
                    }
                })
                .ok();
            self.events = Some(rx);
        }
        match self.events.as_mut() {
            Some(rx) => match rx.recv().await {
                Some(e) => e,
                // No more input (the thread could not read the terminal): keep running.
                None => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }

    /// Handles a key or resize; true when the user asked to quit.
    pub fn input(&mut self, e: Event) -> anyhow::Result<bool> {
        match e {
            Event::Key(k) => match self.app.key(k) {
                Action::Quit => return Ok(true),
                Action::Redraw => self.draw()?,
                Action::Nothing => {}
            },
            Event::Resize(..) => self.draw()?,
            _ => {}
        }
        Ok(false)
    }
}

impl Drop for Top {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        ratatui::restore();
    }
}

/// For the session's select: the next terminal event of a view, never for a run without one.
pub async fn next_event(top: Option<&mut Top>) -> Event {
    match top {
        Some(t) => t.next_event().await,
        None => std::future::pending().await,
    }
}
