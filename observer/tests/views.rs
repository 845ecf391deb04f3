//! The views a person looks at rather than reads: the `--html` page in a real headless
//! Chromium, and `gilwatch top` in a real terminal (tmux), both on a live contended workload.
//!
//! Privileged (real BPF): `cargo test -p observer --test views -- --ignored --test-threads=1`.
mod support;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use support::*;

/// Thread names that would be markup if a page pasted them in: they must show as text.
const HOG: &str = r#"hog <b>&"bold"</b>"#;
const SCRIPT: &str = r#"<script>console.error("pwned")</script>"#;
const IO2: &str = "io-2 ünïcødé";

/// The newest pyenv interpreter (Python thread names need 3.7+).
fn python() -> Python {
    pythons().pop().expect("a pyenv CPython")
}

fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gilwatch-{what}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn chromium() -> Option<&'static str> {
    let found = Command::new("chromium").arg("--version").output();
    if found.is_ok_and(|o| o.status.success()) {
        Some("chromium")
    } else {
        missing_fixture("chromium (Debian package `chromium`)");
        None
    }
}

/// Headless Chromium on a local page, with the renderer's console on stderr (as
/// `INFO:CONSOLE(…)` lines: any console message, error or not, would be a page misbehaving).
fn headless(browser: &str, profile: &Path, page: &Path, args: &[&str]) -> Output {
    Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .args(["--enable-logging=stderr", "--v=0"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("running chromium")
}

fn console_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_owned)
        .collect()
}

/// The share of `observed` a total is, as the report prints it.
fn pct(total: f64, observed: f64) -> String {
    let x = total * 100.0 / observed;
    if x >= 10.0 {
        format!("{x:.0}%")
    } else {
        format!("{x:.1}%")
    }
}

#[test]
#[ignore = "needs root: loads eBPF programs, runs headless Chromium"]
fn html_report_renders_in_chromium() {
    require_root();
    let Some(browser) = chromium() else { return };
    let dir = temp_dir("html");
    let profile = dir.join("profile");

    // The console check can fail: a page with a script error is seen.
    let control = dir.join("control.html");
    std::fs::write(
        &control,
        "<!doctype html><body><script>console.error('x'); nope();</script>",
    )
    .unwrap();
    let out = headless(browser, &profile, &control, &["--dump-dom"]);
    assert!(
        !console_lines(&out).is_empty(),
        "chromium reported no console message for a page with a script error: the check below would prove nothing\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let py = python();
    let target = Target::start(&py.exe, &workload("named.py"), &["60", HOG, SCRIPT, IO2]);
    let page = dir.join("report.html");
    let report = observe_with(target.pid(), "3s", &["--html", page.to_str().unwrap()]);
    drop(target);
    let html = std::fs::read_to_string(&page).expect("the --html file");
    assert!(html.len() > 2000, "a page of {} bytes", html.len());

    // What the browser made of it: the names as text (no element came out of them).
    let out = headless(browser, &profile, &page, &["--dump-dom"]);
    assert!(out.status.success(), "chromium --dump-dom failed");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        !dom.contains("<script"),
        "a thread name became a script element"
    );
    assert!(!dom.contains("hog <b>"), "a thread name became markup");
    for escaped in [
        r#"&lt;script&gt;console.error("pwned")&lt;/script&gt;"#,
        r#"hog &lt;b&gt;&amp;"bold"&lt;/b&gt;"#,
        IO2,
    ] {
        assert!(dom.contains(escaped), "{escaped} not in the DOM");
    }
    // The figures: every thread's wait share, as the JSON report of the same run has it.
    let observed = ns(&report["sampling"]["observed_ns"]);
    for t in threads(&report) {
        let tid = t["tid"].as_u64().unwrap().to_string();
        assert!(
            dom.contains(&format!("<td>{tid}</td>")),
            "tid {tid} not in the DOM"
        );
        let wait = pct(ns(&t["wait_ns"]["total"]), observed);
        assert!(
            dom.contains(&format!(">{wait}</td>")),
            "wait share {wait} of tid {tid} not in the DOM"
        );
    }
    let io = thread(&report, SCRIPT);
    assert!(
        share(&report, io, "wait_ns") > 30.0,
        "the I/O thread waited {:.0}% (a contended run waits ~80%)",
        share(&report, io, "wait_ns")
    );
    assert!(dom.contains("Verdict: GIL contention"), "no verdict");
    assert!(
        dom.matches("<svg").count() > 2 * 3,
        "want a share chart and wait and hold histograms of 3 threads"
    );
    // The blame section is there whatever the run found (a table, "no hold at or over the
    // threshold", or why blame is unavailable), and the timeline's place is kept.
    assert!(
        dom.contains(r#"id="blame""#) && dom.contains("Blame: which code held the GIL"),
        "no blame section"
    );
    assert!(
        dom.contains(r#"id="timeline""#),
        "no place kept for the timeline"
    );
    let console = console_lines(&out);
    assert!(console.is_empty(), "console messages: {console:?}");

    // A screenshot with the charts in it: the wait and hold colours are on screen.
    let png = dir.join("report.png");
    let out = headless(
        browser,
        &profile,
        &page,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1200,1600",
        ],
    );
    assert!(out.status.success(), "chromium --screenshot failed");
    let console = console_lines(&out);
    assert!(console.is_empty(), "console messages: {console:?}");
    let colours = colours(&png);
    assert!(colours.len() > 16, "{} colours: blank", colours.len());
    for (what, rgb) in [("wait", [0xd6, 0x45, 0x45]), ("hold", [0x2f, 0x6f, 0xd6])] {
        assert!(
            colours.iter().any(|c| near(*c, rgb)),
            "no {what} colour {rgb:?} on the screenshot"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The distinct RGB colours of a PNG.
fn colours(png: &Path) -> std::collections::HashSet<[u8; 3]> {
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(png).expect("the screenshot"),
    ));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("PNG size")];
    let info = reader.next_frame(&mut buf).expect("a PNG frame");
    let step = info.color_type.samples();
    assert!(step >= 3, "a colour screenshot, got {:?}", info.color_type);
    buf[..info.buffer_size()]
        .chunks(step)
        .map(|p| [p[0], p[1], p[2]])
        .collect()
}

fn near(a: [u8; 3], b: [u8; 3]) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= 8)
}

/// A detached tmux session, killed when the test ends.
struct Tmux(String);

impl Tmux {
    fn start(command: &str, width: u32, height: u32) -> Option<Tmux> {
        let name = format!("gilwatch-test-{}", std::process::id());
        let started = Command::new("tmux")
            .args(["new-session", "-d", "-s", &name])
            .args(["-x", &width.to_string(), "-y", &height.to_string()])
            .arg(command)
            .status();
        match started {
            Ok(s) if s.success() => Some(Tmux(name)),
            _ => {
                missing_fixture("tmux (Debian package `tmux`)");
                None
            }
        }
    }

    fn capture(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.0])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The pane with its scrollback (what scrolled off the top too).
    fn capture_all(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-S", "-", "-t", &self.0])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let ok = Command::new("tmux")
            .args(["send-keys", "-t", &self.0])
            .args(keys)
            .status()
            .expect("tmux send-keys");
        assert!(ok.success(), "tmux send-keys {keys:?}");
    }

    /// The process the pane runs (its shell).
    fn pane_pid(&self) -> u32 {
        let out = Command::new("tmux")
            .args(["list-panes", "-t", &self.0, "-F", "#{pane_pid}"])
            .output()
            .expect("tmux list-panes");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a pane PID")
    }

    /// Captures until `ok` holds for the screen (within 15 s); returns that screen.
    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let start = std::time::Instant::now();
        loop {
            let screen = self.capture();
            if ok(&screen) {
                return screen;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(15),
                "no {what} on the screen after 15 s:\n{screen}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status()
            .ok();
    }
}

/// The thread names of the table's rows, top to bottom.
fn table_names(screen: &str) -> Vec<String> {
    screen
        .lines()
        .skip_while(|l| !l.contains("THREAD"))
        .skip(1)
        .map_while(|l| {
            let mut words = l.split_whitespace();
            let tid = words.next()?;
            tid.parse::<u32>().ok()?;
            words.next().map(str::to_owned)
        })
        .collect()
}

/// The `· 12s ·` clock of the header.
fn clock(screen: &str) -> String {
    screen
        .lines()
        .next()
        .and_then(|l| {
            l.split(" · ")
                .find(|p| p.ends_with('s') && p[..p.len() - 1].parse::<u64>().is_ok())
        })
        .unwrap_or_default()
        .to_owned()
}

#[test]
#[ignore = "needs root: loads eBPF programs, runs gilwatch top in tmux"]
fn top_sorts_filters_pauses_and_quits_cleanly() {
    require_root();
    let py = python();
    let target = Target::start(
        &py.exe,
        &workload("named.py"),
        &["60", "cpu-hog", "io-a", "io-b"],
    );
    let command = format!(
        "{GILWATCH} top -p {} -i 300ms; echo EXIT=$?; sleep 60",
        target.pid()
    );
    let Some(tmux) = Tmux::start(&command, 140, 30) else {
        return;
    };
    // Sorted by wait: the I/O threads (waiting ~80% of each interval) above the CPU hog.
    let screen = tmux.wait_for("three threads sorted by wait", |s| {
        s.contains("WAIT%▼") && table_names(s).len() == 3
    });
    let names = table_names(&screen);
    assert_eq!(names[2], "cpu-hog", "sorted by wait:\n{screen}");
    assert!(screen.contains("Verdict: GIL contention"), "{screen}");
    let shell = tmux.pane_pid();
    let gilwatch: u32 = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children"))
        .expect("the pane's children")
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("gilwatch's PID");
    let programs = programs_of_run(gilwatch, 2);

    tmux.keys(&["h"]);
    let screen = tmux.wait_for("threads sorted by hold", |s| {
        s.contains("HOLD%▼") && table_names(s).first().is_some_and(|n| n == "cpu-hog")
    });
    assert_eq!(table_names(&screen).len(), 3, "{screen}");

    tmux.keys(&["/"]);
    tmux.keys(&["-l", "io-b"]);
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("the filter applied", |s| {
        s.contains("filter: io-b") && table_names(s) == ["io-b"]
    });
    assert!(screen.contains("1 shown of 3"), "{screen}");

    tmux.keys(&["Space"]);
    let paused = tmux.wait_for("PAUSED", |s| s.contains("PAUSED"));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let later = tmux.capture();
    assert!(!clock(&paused).is_empty(), "no clock in:\n{paused}");
    assert_eq!(
        clock(&paused),
        clock(&later),
        "the screen moved while paused:\n{later}"
    );
    tmux.keys(&["Space"]);
    tmux.wait_for("the clock running again", |s| {
        !s.contains("PAUSED") && clock(s) != clock(&later)
    });

    // q: the screen is given back, the run's report printed, the probes gone.
    tmux.keys(&["q"]);
    let screen = tmux.wait_for("gilwatch's exit", |s| s.contains("EXIT="));
    assert!(screen.contains("EXIT=0"), "{screen}");
    assert!(
        screen.contains("kernel memory:"),
        "no final report:\n{screen}"
    );
    let all = tmux.capture_all();
    assert!(all.contains("ended: quit (gilwatch top)"), "{all}");
    assert_unloaded(&programs, "gilwatch top after q");
    drop(target);
}

#[test]
#[ignore = "needs root: loads eBPF programs, runs headless Chromium"]
fn html_report_of_a_lock_only_run_has_the_lock_tables() {
    use std::io::{BufRead as _, BufReader, Write as _};
    require_root();
    let Some(browser) = chromium() else { return };
    let dir = temp_dir("html-locks");
    let exe = dir.join("two_locks");
    let built = Command::new("gcc")
        .args(["-O1", "-g", "-fno-omit-frame-pointer", "-pthread", "-o"])
        .arg(&exe)
        .arg(workload("locks/two_locks.c"))
        .status()
        .expect("gcc (cargo xtask setup installs it)");
    assert!(built.success(), "gcc failed");
    // Held at its gate (a line on stdin) until gilwatch has attached.
    let mut program = Command::new(&exe)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("starting two_locks");
    let mut ready = String::new();
    BufReader::new(program.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "ready");
    let page = dir.join("locks.html");
    let pid = program.id().to_string();
    let run = gilwatch_command(&[
        "-p",
        &pid,
        "--mutexes",
        "-d",
        "3s",
        "--json",
        "-",
        "--html",
        page.to_str().unwrap(),
    ])
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("starting gilwatch");
    programs_of_run(run.id(), 2);
    writeln!(program.stdin.take().unwrap(), "go").unwrap();
    let report = final_report(&wait_output(run, std::time::Duration::from_secs(60)));
    program.kill().ok();
    program.wait().ok();
    assert_eq!(report["kind"], "locks", "{report}");

    let out = headless(browser, &dir.join("profile"), &page, &["--dump-dom"]);
    assert!(out.status.success(), "chromium --dump-dom failed");
    let dom = String::from_utf8_lossy(&out.stdout);
    let locks = report["locks"].as_array().expect("locks");
    assert!(locks.len() >= 2, "{report}");
    for lock in locks {
        let symbol = lock["symbol"].as_str().expect("a symbol");
        assert!(dom.contains(symbol), "{symbol} not in the DOM");
        for t in lock["threads"].as_array().unwrap() {
            let tid = t["tid"].as_u64().unwrap();
            assert!(
                dom.contains(&format!("<td>{tid}</td>")),
                "tid {tid} of {symbol} not in the DOM"
            );
        }
    }
    assert!(
        dom.contains("g_hot_lock") && dom.contains("g_cool_lock"),
        "{dom}"
    );
    assert!(
        dom.matches("<svg").count() >= 2 * 2,
        "wait and hold charts of two locks"
    );
    let console = console_lines(&out);
    assert!(console.is_empty(), "console messages: {console:?}");
    std::fs::remove_dir_all(&dir).ok();
}
