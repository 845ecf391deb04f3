//! Where the human report is drawn: whether it may use colours, and how wide it may be.
//!
//! A pipe or a file gets the plain text, byte for byte what scripts and tests parse; only a
//! terminal gets colours (unless `NO_COLOR` or `--color never`) and tables cut to its width.
use std::{
    io::IsTerminal,
    os::fd::{AsFd, AsRawFd},
};

use anstyle::{AnsiColor, Effects, Style};

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorWhen {
    /// On a terminal, unless NO_COLOR is set (or TERM=dumb).
    Auto,
    Always,
    Never,
}

/// What the renderers may do on the output they write to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Canvas {
    pub color: bool,
    /// Columns of the terminal; None for a pipe or a file (no limit).
    pub width: Option<usize>,
}

/// The styles of the report, one per meaning.
pub mod styles {
    use super::*;

    pub const TITLE: Style = Style::new().effects(Effects::BOLD);
    pub const HEADING: Style = Style::new().effects(Effects::BOLD);
    pub const DIM: Style = Style::new().effects(Effects::DIMMED);
    pub const BAD: Style = Style::new()
        .fg_color(Some(anstyle::Color::Ansi(AnsiColor::Red)))
        .effects(Effects::BOLD);
    pub const WARN: Style = Style::new().fg_color(Some(anstyle::Color::Ansi(AnsiColor::Yellow)));
    pub const GOOD: Style = Style::new().fg_color(Some(anstyle::Color::Ansi(AnsiColor::Green)));
}

impl Canvas {
    /// Plain text with no width limit: pipes, files, tests.
    pub const PLAIN: Canvas = Canvas {
        color: false,
        width: None,
    };

    /// The canvas of a stream gilwatch writes the human report to.
    pub fn of<S: AsFd + IsTerminal>(stream: &S, when: ColorWhen) -> Canvas {
        let tty = stream.is_terminal();
        let color = match when {
            ColorWhen::Never => false,
            ColorWhen::Always => true,
            // The conventions other tools follow: NO_COLOR (no-color.org), CLICOLOR_FORCE,
            // CLICOLOR=0, TERM=dumb.
            ColorWhen::Auto => {
                anstyle_query::clicolor_force()
                    || (tty
                        && !anstyle_query::no_color()
                        && anstyle_query::clicolor() != Some(false)
                        && anstyle_query::term_supports_color())
            }
        };
        let width = if tty { columns(stream) } else { None };
        Canvas { color, width }
    }

    /// `text` with every line wider than the terminal wrapped at word boundaries (continuation
    /// lines indented), so a narrow terminal does not cut words in two; unchanged without a
    /// width. Tables are laid out to fit already and pass through.
    pub fn fit(&self, text: String) -> String {
        let Some(width) = self.width.filter(|&w| w >= 20) else {
            return text;
        };
        if text
            .lines()
            .all(|l| textwrap::core::display_width(l) <= width)
        {
            return text;
        }
        let options = textwrap::Options::new(width).subsequent_indent("  ");
        let mut out = String::with_capacity(text.len() + 64);
        for line in text.lines() {
            if textwrap::core::display_width(line) <= width {
                out.push_str(line);
            } else {
                out.push_str(&textwrap::wrap(line, &options).join("\n"));
            }
            out.push('\n');
        }
        out
    }

    /// `text` in `style`, or as it is without colours.
    pub fn paint(&self, text: &str, style: Style) -> String {
        if self.color {
            format!("{style}{text}{style:#}")
        } else {
            text.to_owned()
        }
    }
}

/// The terminal's width in columns, from the kernel's window size of that terminal.
fn columns<S: AsFd>(stream: &S) -> Option<usize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the struct we own; the fd is borrowed and open.
    let rc = unsafe { libc::ioctl(stream.as_fd().as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_col > 0).then_some(usize::from(ws.ws_col))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paints_nothing_and_colour_resets() {
        assert_eq!(Canvas::PLAIN.paint("Verdict", styles::BAD), "Verdict");
        let c = Canvas {
            color: true,
            width: None,
        };
        let s = c.paint("Verdict", styles::BAD);
        assert!(s.starts_with('\u{1b}') && s.ends_with("\u{1b}[0m"), "{s:?}");
        assert!(s.contains("Verdict"));
    }

    #[test]
    fn long_lines_wrap_at_words_on_a_terminal_only() {
        let text = "GIL held 88% of wall time · threads waited 164% of wall time (summed over threads)\nshort\n".to_owned();
        assert_eq!(Canvas::PLAIN.fit(text.clone()), text);
        let narrow = Canvas {
            color: true,
            width: Some(40),
        };
        let fitted = narrow.fit(text.clone());
        assert!(fitted.lines().count() > 3, "{fitted}");
        for l in fitted.lines() {
            assert!(l.chars().count() <= 40, "{l:?}");
        }
        assert!(fitted.contains("(summed over threads)") || fitted.contains("threads)"));
        // Colour codes take no room.
        let painted = narrow.paint(&"x".repeat(39), styles::BAD);
        assert_eq!(narrow.fit(format!("{painted}\n")).lines().count(), 1);
    }

    #[test]
    fn a_pipe_is_plain() {
        let (r, _w) = std::io::pipe().unwrap();
        let r = std::os::fd::OwnedFd::from(r);
        assert_eq!(Canvas::of(&r, ColorWhen::Auto), Canvas::PLAIN);
        assert!(Canvas::of(&r, ColorWhen::Always).color);
    }
}
