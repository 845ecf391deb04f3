//! The Prometheus exporter, live: scraped over HTTP by the test, and by a real Prometheus server
//! (Debian's package) whose query API must give the workload's rates.
//!
//! The workload is `spinners.py` with three CPU-bound threads: at every moment one of them holds
//! the GIL, whatever the machine's load (a thread keeps holding while the scheduler has it off
//! the CPU; gilwatch's own report says 99%), so the pool `spinner-*` holds at 1 s/s: −15%/+5%
//! (hand-overs are not holds). The other two want the GIL all the time, but under load a thread
//! that has just dropped it may be off the CPU before it asks again (gilwatch's report: 147%
//! summed wait at load average 7, 190%+ on an idle machine), so the wait rate is only bounded:
//! at least one waiter (1 s/s −15%), at most two (2 s/s +5%).
mod support;

use std::{
    collections::HashMap,
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use support::*;

fn python() -> Option<Python> {
    let py = pythons().into_iter().find(|p| p.version == (3, 12));
    if py.is_none() {
        missing_fixture("pyenv CPython 3.12");
    }
    py
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// GET http://127.0.0.1:PORT/PATH → (status line and headers, body).
fn get(port: u16, path: &str) -> Option<(String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((head.to_owned(), body.to_owned()))
}

/// gilwatch exporting for `pid`, killed (SIGINT) when dropped.
struct Exporter {
    child: Child,
    port: u16,
}

impl Exporter {
    fn start(pid: u32) -> Exporter {
        let port = free_port();
        let child = gilwatch_command(&[
            "-p",
            &pid.to_string(),
            "-q",
            "--prometheus",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting gilwatch");
        let e = Exporter { child, port };
        let start = Instant::now();
        while get(port, "/metrics").is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the exporter never answered on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        e
    }

    fn scrape(&self) -> (String, HashMap<String, f64>) {
        let (head, body) = get(self.port, "/metrics").expect("scrape");
        assert!(
            head.lines().next().is_some_and(|l| l.ends_with(" 200 OK")),
            "{head}"
        );
        assert!(head.contains("application/openmetrics-text"), "{head}");
        assert!(body.ends_with("# EOF\n"), "{body}");
        let samples = body
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect();
        (body, samples)
    }

    /// SIGINT, then the exit code.
    fn stop(mut self) -> i32 {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let out = wait_output(
            std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap()),
            Duration::from_secs(20),
        );
        out.status.code().unwrap_or(-1)
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

fn sample(samples: &HashMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key} among {:?}", samples.keys()))
}

#[test]
#[ignore = "needs root: cargo xtask test"]
fn scraped_counters_grow_at_the_workloads_rates_and_histograms_are_consistent() {
    require_root();
    let Some(py) = python() else { return };
    let target = Target::launch(&py, "spinners.py", &["60", "3"]);
    let pid = target.pid();
    let exporter = Exporter::start(pid);
    std::thread::sleep(Duration::from_secs(1));
    let (_, a) = exporter.scrape();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(4));
    let (body, b) = exporter.scrape();
    let secs = t0.elapsed().as_secs_f64();
    let l = format!("{{pid=\"{pid}\",thread=\"spinner-*\"}}");
    let rate = |name: &str| {
        let k = format!("{name}{l}");
        (sample(&b, &k) - sample(&a, &k)) / secs
    };
    let hold = rate("gilwatch_gil_hold_seconds_total");
    let wait = rate("gilwatch_gil_wait_seconds_total");
    let acq = rate("gilwatch_gil_acquisitions_total");
    eprintln!("spinner-*: hold {hold:.3} s/s, wait {wait:.3} s/s, {acq:.0} acquisitions/s");
    // The exporter reads the kernel every 0.5 s: each scrape may be up to that old, so the
    // measured span is off by up to ±0.5 s of 4 s on top of the workload's own tolerance.
    assert!(
        (0.85 * 0.87..=1.05 * 1.13).contains(&hold),
        "hold rate {hold}"
    );
    assert!(
        (0.85 * 0.87..=2.1 * 1.13).contains(&wait),
        "wait rate {wait}"
    );
    // A forced switch every 5 ms at most: ≈ 200/s; at least some dozens under load.
    assert!((20.0..=400.0).contains(&acq), "acquisitions rate {acq}");
    // Only the pool and (maybe) the main thread: the pool is one label set.
    assert!(
        !body.contains("spinner-1"),
        "pool names must be collapsed:\n{body}"
    );

    // Histograms: cumulative buckets never decrease, +Inf equals _count, the count equals the
    // acquisitions counter (every acquisition is one wait), and _sum (completed waits) is at most
    // the wait counter (which also counts waits under way).
    for h in [
        "gilwatch_gil_wait_duration_seconds",
        "gilwatch_gil_hold_duration_seconds",
    ] {
        let mut buckets: Vec<(f64, f64)> = b
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{h}_bucket{{")) && k.contains("spinner-*"))
            .map(|(k, v)| {
                let le = k.split("le=\"").nth(1).unwrap().split('"').next().unwrap();
                (le.parse::<f64>().unwrap_or(f64::INFINITY), *v)
            })
            .collect();
        buckets.sort_by(|x, y| x.0.total_cmp(&y.0));
        assert!(buckets.len() > 10, "{h}: {buckets:?}");
        assert!(
            buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "{h}: {buckets:?}"
        );
        let count = sample(&b, &format!("{h}_count{l}"));
        assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, count), "{h}");
        assert!(count > 0.0, "{h}");
    }
    let waits = sample(&b, &format!("gilwatch_gil_wait_duration_seconds_count{l}"));
    let acqs = sample(&b, &format!("gilwatch_gil_acquisitions_total{l}"));
    assert_eq!(waits, acqs);
    let wait_sum = sample(&b, &format!("gilwatch_gil_wait_duration_seconds_sum{l}"));
    let wait_total = sample(&b, &format!("gilwatch_gil_wait_seconds_total{l}"));
    assert!(wait_sum <= wait_total + 1e-9, "{wait_sum} > {wait_total}");
    assert_eq!(
        sample(&b, &format!("gilwatch_lost_events_total{{pid=\"{pid}\"}}")),
        0.0
    );
    // Ctrl-C ends the exporter like any run: exit 0, no probe left, the port closed.
    let programs = bpf_prog_ids_of(exporter.child.id());
    let port = exporter.port;
    assert_eq!(exporter.stop(), 0);
    assert_unloaded(&programs, "gilwatch --prometheus after SIGINT");
    assert!(get(port, "/metrics").is_none(), "port {port} still answers");
}

#[test]
#[ignore = "needs root: cargo xtask test"]
fn non_loopback_addresses_are_refused_without_prometheus_public() {
    require_root();
    let out = gilwatch(&["-p", "1", "--prometheus", "0.0.0.0:9464"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--prometheus-public"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// `rate(...)` of one series, from Prometheus's HTTP API.
fn query(port: u16, promql: &str) -> Option<f64> {
    let encoded: String = promql
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (_, body) = get(port, &format!("/api/v1/query?query={encoded}"))?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[test]
#[ignore = "needs root: cargo xtask test"]
fn a_real_prometheus_server_scrapes_the_rates_of_the_workload() {
    require_root();
    let Some(py) = python() else { return };
    let Some(prometheus) = ["/usr/bin/prometheus"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
    else {
        return missing_fixture("Debian's prometheus package (/usr/bin/prometheus)");
    };
    let target = Target::launch(&py, "spinners.py", &["60", "3"]);
    let pid = target.pid();
    let exporter = Exporter::start(pid);
    let dir = std::env::temp_dir().join(format!("gilwatch-prometheus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: gilwatch\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            exporter.port
        ),
    )
    .unwrap();
    let web = free_port();
    let mut server = Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting prometheus");
    let series = format!("{{pid=\"{pid}\",thread=\"spinner-*\"}}");
    let hold_q = format!("rate(gilwatch_gil_hold_seconds_total{series}[5s])");
    let wait_q = format!("rate(gilwatch_gil_wait_seconds_total{series}[5s])");
    // The rate once Prometheus has scraped for longer than its window: a series younger than
    // the window is extrapolated over part of it only, which reads low.
    let filled = format!("count_over_time(gilwatch_gil_hold_seconds_total{series}[8s])");
    let start = Instant::now();
    let mut rates = None;
    while start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_secs(1));
        if query(web, &filled).is_none_or(|n| n < 7.0) {
            continue;
        }
        if let (Some(h), Some(w)) = (query(web, &hold_q), query(web, &wait_q)) {
            rates = Some((h, w));
            break;
        }
    }
    server.kill().ok();
    server.wait().ok();
    std::fs::remove_dir_all(&dir).ok();
    let (hold, wait) = rates.expect("Prometheus never had the rates (did it scrape?)");
    eprintln!("Prometheus: {hold_q} = {hold:.3}, {wait_q} = {wait:.3}");
    assert!(
        (0.85..=1.05).contains(&hold),
        "hold rate {hold} s/s, expected 1 (−15%/+5%)"
    );
    assert!(
        (0.85..=2.1).contains(&wait),
        "wait rate {wait} s/s, expected 1 to 2 (−15%/+5%)"
    );
    assert_eq!(exporter.stop(), 0);
}

/// Days of running, compressed: 400 threads that live a few milliseconds each. Their numbers
/// must all reach the counters (every 1 ms sleep is one GIL acquisition when it returns: at
/// least 400 × 5), while what is tracked per thread is freed as they exit and the label sets
/// stay a handful (Python's `Thread-N (work)` names collapse; threads that ended before their
/// Python name was read keep the OS name, or `?` when even that was gone: two more label sets).
#[test]
#[ignore = "needs root: cargo xtask test"]
fn threads_that_come_and_go_are_counted_and_freed() {
    require_root();
    let Some(py) = python() else { return };
    let go = std::env::temp_dir().join(format!("gilwatch-churn-{}", std::process::id()));
    std::fs::remove_file(&go).ok();
    let target = Target::launch(&py, "churn.py", &[go.to_str().unwrap(), "400", "5"]);
    let pid = target.pid();
    let exporter = Exporter::start(pid);
    std::fs::write(&go, b"").unwrap();
    let acquisitions = |s: &HashMap<String, f64>| -> f64 {
        s.iter()
            .filter(|(k, _)| k.starts_with("gilwatch_gil_acquisitions_total{"))
            .map(|(_, v)| v)
            .sum()
    };
    // Until the count stops moving but for the idle main thread's one sleep a second (the churn
    // is over), at most 60 s.
    let start = Instant::now();
    let mut last = -1.0;
    let (body, samples) = loop {
        std::thread::sleep(Duration::from_secs(2));
        let (body, s) = exporter.scrape();
        let n = acquisitions(&s);
        if n - last < 10.0 || start.elapsed() > Duration::from_secs(60) {
            break (body, s);
        }
        last = n;
    };
    std::fs::remove_file(&go).ok();
    let n = acquisitions(&samples);
    let labels: std::collections::BTreeSet<&str> = samples
        .keys()
        .filter(|k| k.starts_with("gilwatch_gil_acquisitions_total{"))
        .map(|k| k.split("thread=\"").nth(1).unwrap().trim_end_matches("\"}"))
        .collect();
    let tracked = sample(
        &samples,
        &format!("gilwatch_tracked_threads{{pid=\"{pid}\"}}"),
    );
    eprintln!("{n} acquisitions, label sets {labels:?}, {tracked} threads tracked");
    assert!(
        n >= 2000.0,
        "{n} acquisitions for 400 threads × 5 sleeps:\n{body}"
    );
    // Each thread also takes the GIL to start and to end, and the main thread on every join.
    assert!(n <= 400.0 * 12.0, "{n} acquisitions:\n{body}");
    assert!(labels.len() <= 4, "{labels:?}");
    assert!(
        tracked <= 4.0,
        "{tracked} threads still tracked after the churn"
    );
    assert_eq!(
        sample(
            &samples,
            &format!("gilwatch_lost_events_total{{pid=\"{pid}\"}}")
        ),
        0.0
    );
    assert_eq!(exporter.stop(), 0);
}
