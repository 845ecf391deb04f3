//! `--trace`: the timeline file, decoded with Perfetto's own schema (PyPI `perfetto`'s
//! `perfetto_trace_pb2`, installed into a venv under target/ on first use), against the JSON
//! report of the same run.
//!
//! The criterion (issue 15): per thread, the summed `GIL hold` and `GIL wait` slices equal the
//! report's hold and wait totals within 1%. Both come from the same kernel records cut to the
//! same window, so they differ only by a span that ends while the last snapshot is read: the
//! tolerance is 1% of the total, or 200 µs for totals under 20 ms (an uncontended thread's
//! handful of short waits, where one span is more than 1%).
mod support;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;
use support::*;

const OBSERVE: &str = "3s";

/// The venv with PyPI's `perfetto` (its `perfetto_trace_pb2` is the schema's official Python
/// binding), made once like the bench's venv.
fn perfetto_python() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/perfetto-venv");
    let python = venv.join("bin/python");
    let has = |p: &Path| {
        Command::new(p)
            .args([
                "-c",
                "import perfetto.protos.perfetto.trace.perfetto_trace_pb2",
            ])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has(&python) {
        let ok = Command::new("/usr/bin/python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "perfetto"])
                .status()
                .is_ok_and(|s| s.success());
        assert!(
            ok && has(&python),
            "could not install PyPI's perfetto into {}",
            venv.display()
        );
    }
    python
}

/// What the trace file holds, per scripts/tests/perfetto_totals.py.
fn decode(trace: &Path) -> Value {
    let out = Command::new(perfetto_python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/tests/perfetto_totals.py"))
        .arg(trace)
        .output()
        .expect("running perfetto_totals.py");
    assert!(
        out.status.success(),
        "decoding {}: {}",
        trace.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("perfetto_totals.py prints JSON")
}

fn trace_path(label: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/trace-tests");
    std::fs::create_dir_all(&dir).expect("target/trace-tests");
    dir.join(format!("{}.pftrace", label.replace([' ', '(', ')'], "_")))
}

fn close(trace_ns: f64, report_ns: f64) -> bool {
    (trace_ns - report_ns).abs()
        <= (report_ns * 0.01).max(if report_ns < 20e6 { 200e3 } else { 0.0 })
}

/// Observes `target` with --trace; checks the file against the report; returns both.
fn traced_run(py: &Python, target: &Target, workload: &str) -> (Value, Value) {
    let file = trace_path(&format!("{}-{workload}", py.label));
    let file_s = file.display().to_string();
    let mut extra = py.strategy_args().to_vec();
    extra.extend(["--trace", &file_s]);
    let r = observe_with(target.pid(), OBSERVE, &extra);
    let label = format!("{} {workload}", py.label);
    assert_eq!(r["interpreter"]["strategy"], py.expect_strategy, "{label}");
    let summary = &r["trace"];
    assert_eq!(summary["file"], file_s.as_str(), "{label}: {summary}");
    assert_eq!(
        summary["lost"], 0,
        "{label}: records were lost (ring buffer full), the totals cannot be compared: {summary}"
    );
    let t = decode(&file);
    assert_eq!(
        t["problems"],
        serde_json::json!([]),
        "{label}: {}",
        t["problems"]
    );
    assert_eq!(
        t["clocks"],
        serde_json::json!([3, 6]),
        "{label}: clock snapshot"
    );
    assert_eq!(t["process"]["pid"], r["pid"], "{label}");
    for th in threads(&r) {
        let tid = &th["tid"];
        let track = t["threads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| &x["tid"] == tid)
            .unwrap_or_else(|| panic!("{label}: no track for thread {tid} ({})", th["name"]));
        assert_eq!(track["name"], th["name"], "{label}: track of {tid}");
        for (field, slice) in [("wait_ns", "wait_ns"), ("hold_ns", "hold_ns")] {
            let (traced, reported) = (ns(&track[slice]), ns(&th[field]["total"]));
            eprintln!(
                "{label}: {} {field}: trace {:.3} ms, report {:.3} ms ({} slices)",
                th["name"],
                traced / 1e6,
                reported / 1e6,
                track[slice.replace("_ns", "_slices")]
            );
            assert!(
                close(traced, reported),
                "{label}: {} {field}: trace {traced} ns vs report {reported} ns",
                th["name"]
            );
        }
    }
    let gil = &t["gil"];
    assert_eq!(gil["overlaps"], 0, "{label}: GIL track {gil}");
    let held: f64 = threads(&r).iter().map(|x| ns(&x["hold_ns"]["total"])).sum();
    assert!(
        ns(&gil["held_ns"]) <= held * 1.0001 && ns(&gil["held_ns"]) >= held * 0.99,
        "{label}: GIL track holds {} ns vs threads' {held} ns",
        gil["held_ns"]
    );
    (r, t)
}

/// The cases: the three kernel designs and the three strategies (pyenv 3.6: three traps, 3.8:
/// take_gil's clone, 3.12: two traps; 3.11 with libc forced; Debian's stripped 3.11 and sid's
/// 3.14 in a container: exports).
fn cases() -> Vec<Python> {
    let mut v: Vec<Python> = pythons()
        .into_iter()
        .filter(|p| [(3, 6), (3, 8), (3, 12)].contains(&p.version))
        .collect();
    v.extend(pythons_libc().into_iter().filter(|p| p.version == (3, 11)));
    v.extend(
        distro_pythons()
            .into_iter()
            .filter(|p| p.version == (3, 11) || p.version == (3, 14)),
    );
    v
}

#[test]
#[ignore = "needs root: cargo xtask test"]
fn trace_slices_add_up_to_the_report_per_thread() {
    require_root();
    perfetto_python();
    for py in cases() {
        let target = Target::launch(&py, "contended.py", &["60", "2"]);
        let (r, t) = traced_run(&py, &target, "contended");
        drop(target);
        let expected = ["cpu-hog", "io-1", "io-2"];
        if has_python_names(&py) {
            for n in expected {
                thread(&r, n);
            }
            let holders = t["gil"]["holders"].to_string();
            for n in expected {
                assert!(
                    holders.contains(n),
                    "{}: GIL track holders {holders}",
                    py.label
                );
            }
        }
        // The I/O threads wait a switch interval at every wake-up: hundreds of wait slices.
        for th in t["threads"].as_array().unwrap() {
            if th["name"].as_str().is_some_and(|n| n.starts_with("io-")) {
                assert!(
                    th["wait_slices"].as_u64().unwrap() > 100,
                    "{}: {th}",
                    py.label
                );
            }
        }

        let target = Target::launch(&py, "spinners.py", &["60", "3"]);
        let (r, _) = traced_run(&py, &target, "spinners");
        assert!(threads(&r).len() >= 3, "{}: {}", py.label, names(&r));
    }
}

/// A ring buffer too small for the rate: the lost records are counted, in the JSON and on the
/// terminal, and the file is still a valid trace.
#[test]
#[ignore = "needs root: cargo xtask test"]
fn a_full_ring_buffer_is_counted_and_said() {
    require_root();
    let py = pythons()
        .into_iter()
        .find(|p| p.version == (3, 12))
        .expect("pyenv 3.12");
    let file = trace_path("lost");
    let file_s = file.display().to_string();
    let exe = py.exe.display().to_string();
    let out = gilwatch_command(&[
        "-q",
        "--json",
        "-",
        "--max-overhead",
        "none",
        "--trace",
        &file_s,
        "--",
        &exe,
        "-c",
        "import os\nfd = os.open(os.devnull, os.O_WRONLY)\nfor _ in range(300000): os.write(fd, b'x')",
    ])
    // One page: about a hundred records between two polls of the reader.
    .env("GILWATCH_DEBUG_MAP_ENTRIES", "TRACE_EVENTS=4096")
    .output()
    .expect("gilwatch");
    let r = final_report(&out);
    let lost = r["trace"]["lost"].as_u64().expect("trace.lost");
    assert!(
        lost > 0,
        "nothing lost with a one-page ring: {}",
        r["trace"]
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{lost} of")) && stderr.contains("ring buffer full"),
        "the terminal report does not say so: {stderr}"
    );
    let t = decode(&file);
    assert_eq!(t["problems"], serde_json::json!([]), "{}", t["problems"]);
}

/// Ctrl-C ends a traced run like any other: the report and the trace are written (the reader
/// thread must not take the signal).
#[test]
#[ignore = "needs root: cargo xtask test"]
fn ctrl_c_writes_the_trace_and_the_report() {
    require_root();
    let py = pythons()
        .into_iter()
        .find(|p| p.version == (3, 12))
        .expect("pyenv 3.12");
    let target = Target::launch(&py, "contended.py", &["60", "2"]);
    let file = trace_path("ctrl-c");
    let _ = std::fs::remove_file(&file);
    let file_s = file.display().to_string();
    let pid = target.pid().to_string();
    let child = gilwatch_command(&["-p", &pid, "-q", "--json", "-", "--trace", &file_s])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("gilwatch");
    // Attached, then into the session (which blocks the stop signals), and tracing a while.
    programs_of_run(child.id(), 2);
    std::thread::sleep(std::time::Duration::from_secs(2));
    // SAFETY: kill(2) on our own child, not yet waited for.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = wait_output(child, std::time::Duration::from_secs(20));
    let r = final_report(&out);
    assert_eq!(r["ended"], "interrupted", "{r}");
    assert!(
        r["trace"]["slices"].as_u64().unwrap_or(0) > 100,
        "{}",
        r["trace"]
    );
    let t = decode(&file);
    assert_eq!(t["problems"], serde_json::json!([]), "{}", t["problems"]);
}

/// Past gilwatch's memory cap (lowered here to 200 records) the timeline stops, the report says
/// how many spans it left out, and the file is still a valid trace.
#[test]
#[ignore = "needs root: cargo xtask test"]
fn past_the_memory_cap_the_timeline_stops_and_says_so() {
    require_root();
    let py = pythons()
        .into_iter()
        .find(|p| p.version == (3, 12))
        .expect("pyenv 3.12");
    let target = Target::launch(&py, "contended.py", &["60", "2"]);
    let file = trace_path("cap");
    let file_s = file.display().to_string();
    let pid = target.pid().to_string();
    let out = gilwatch_command(&[
        "-p", &pid, "-d", "2s", "-q", "--json", "-", "--trace", &file_s,
    ])
    .env("GILWATCH_DEBUG_TRACE_RECORDS", "200")
    .output()
    .expect("gilwatch");
    let r = final_report(&out);
    let t = &r["trace"];
    let over = t["over_cap"].as_u64().expect("trace.over_cap");
    // contended.py: about 3 × 200 GIL spans a second.
    assert!(over > 200, "{t}");
    assert_eq!(t["records"].as_u64(), Some(200 + over), "{t}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{over} later spans are not in it")),
        "the terminal report does not say so: {stderr}"
    );
    let d = decode(&file);
    assert_eq!(d["problems"], serde_json::json!([]), "{}", d["problems"]);
    let slices: u64 = d["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["wait_slices"].as_u64().unwrap() + x["hold_slices"].as_u64().unwrap())
        .sum();
    assert!(slices <= 400, "{slices} thread slices from 200 records");
}
