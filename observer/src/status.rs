//! The one-line progress note on a terminal while gilwatch locates the interpreter and attaches:
//! reading symbols of a large libpython, disassembling and calibrating take long enough that a
//! silent terminal looks hung. It rewrites one line of stderr, and is gone before the report;
//! on a pipe or a file it writes nothing, so logs and parsers see what they always saw.
use std::io::{IsTerminal, Write};

use crate::report::{canvas::ColorWhen, format::truncate};

pub struct Status {
    tty: bool,
    shown: bool,
}

impl Status {
    /// A status line on stderr if stderr is a terminal.
    pub fn stderr() -> Status {
        Status {
            tty: std::io::stderr().is_terminal(),
            shown: false,
        }
    }

    /// Replaces the line with `what` (a step under way, e.g. `attaching probes`).
    pub fn say(&mut self, what: &str) {
        if !self.tty {
            return;
        }
        let err = std::io::stderr();
        // One line at most: a wrapped line would not be erased by the next \r.
        let width = crate::report::canvas::Canvas::of(&err, ColorWhen::Never)
            .width
            .unwrap_or(80);
        let line = truncate(&format!("gilwatch: {what}…"), width.saturating_sub(1));
        let mut err = err.lock();
        // \r and "erase line": the previous step's text does not show through a shorter one.
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
        self.shown = true;
    }

    /// Removes the line (before the report or an error message is written).
    pub fn clear(&mut self) {
        if self.shown {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.shown = false;
        }
    }
}

impl Drop for Status {
    fn drop(&mut self) {
        self.clear();
    }
}
