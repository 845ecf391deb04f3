//! `cargo xtask bench`: what observing costs the observed process, side by side.
//!
//! Configurations (the target unobserved, gilwatch with its default overhead budget, gilwatch
//! observing everything, and the bpftrace script a user would write) run interleaved, A B C D A B
//! C D, so a machine that gets busier during the run hurts them all alike. Medians and min–max
//! over the repetitions go to bench/results/latest.md and latest.json.
//!
//! Cases: the GIL-cycle loop on pyenv's CPython (symbols) and on the distributions' stripped
//! builds (Debian's python3.11, sid's 3.13–3.15 in the test root), the tight-lock loop (a C
//! program; `--lock`, `--mutexes`, bpftrace), the contended mix, Flask, and gilwatch's own cost.
//! Each row shows gilwatch's estimate of its cost next to the cost measured on the target.
//! `--only gil-cycle,lock` runs a subset (name prefixes), `--quick` 2 repetitions of 2 s.
mod attached;
mod deps;
mod run;
mod table;

use std::{path::PathBuf, time::Instant};

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::shell::{self, workspace_root};

pub use run::Config;

pub struct Options {
    pub reps: usize,
    pub seconds: f64,
    pub python: PathBuf,
    /// Run only the cases whose name starts with one of these (empty: all).
    pub only: Vec<String>,
}

/// One row group of the table: a workload and the configurations it is measured under.
struct Case {
    name: String,
    workload: run::Workload,
    configs: Vec<Config>,
}

/// Every case, in table order. Distribution interpreters missing here are left out (said so).
fn cases(env: &deps::Env) -> Vec<Case> {
    use run::{Interp, Workload};
    let python = [
        Config::None,
        Config::Gilwatch,
        Config::GilwatchFull,
        Config::Bpftrace,
    ];
    let mut v = vec![Case {
        name: "gil-cycle".to_owned(),
        workload: Workload::Cycle(Interp {
            label: format!("pyenv {}", env.python_version),
            exe: env.python.clone(),
            contained: false,
            symbols: true,
        }),
        configs: python.to_vec(),
    }];
    let sid = std::path::Path::new(crate::sid::ROOT);
    let distro = [
        ("gil-cycle-debian-3.11", "/usr/bin/python3.11", false),
        ("gil-cycle-sid-3.13", "/usr/bin/python3.13", true),
        ("gil-cycle-sid-3.14", "/usr/bin/python3.14", true),
        ("gil-cycle-sid-3.15", "/usr/bin/python3.15", true),
    ];
    for (name, exe, contained) in distro {
        let host = if contained {
            sid.join(exe.trim_start_matches('/'))
        } else {
            PathBuf::from(exe)
        };
        if !host.exists() {
            eprintln!("bench: {name}: {} not found, left out", host.display());
            continue;
        }
        v.push(Case {
            name: name.to_owned(),
            workload: Workload::Cycle(Interp {
                label: format!(
                    "{exe}{}",
                    if contained {
                        " (Debian sid root)"
                    } else {
                        " (Debian)"
                    }
                ),
                exe: PathBuf::from(exe),
                contained,
                symbols: false,
            }),
            configs: python.to_vec(),
        });
    }
    // --trace's cost: the same loop, every cycle probed, with and without the ring buffer.
    v.push(Case {
        name: "trace".to_owned(),
        workload: Workload::Cycle(Interp {
            label: format!("pyenv {}", env.python_version),
            exe: env.python.clone(),
            contained: false,
            symbols: true,
        }),
        configs: vec![Config::None, Config::GilwatchFull, Config::GilwatchTrace],
    });
    v.push(Case {
        name: "lock".to_owned(),
        workload: Workload::Lock,
        configs: vec![
            Config::None,
            Config::GilwatchLock,
            Config::GilwatchMutexes,
            Config::Bpftrace,
        ],
    });
    // --py-locks on pyenv's CPython and Debian's stripped 3.11 (3.6–3.12 only: sid's are 3.13+).
    let py_lock_interps = [
        Interp {
            label: format!("pyenv {}", env.python_version),
            exe: env.python.clone(),
            contained: false,
            symbols: true,
        },
        Interp {
            label: "/usr/bin/python3.11 (Debian)".to_owned(),
            exe: PathBuf::from("/usr/bin/python3.11"),
            contained: false,
            symbols: false,
        },
    ];
    for (name, interp) in ["py-lock", "py-lock-debian-3.11"]
        .into_iter()
        .zip(py_lock_interps)
    {
        if !interp.exe.exists() {
            eprintln!(
                "bench: {name}: {} not found, left out",
                interp.exe.display()
            );
            continue;
        }
        v.push(Case {
            name: name.to_owned(),
            workload: Workload::PyLock(interp),
            configs: vec![Config::None, Config::GilwatchPyLocks],
        });
    }
    // The contended mix is where blame works (a CPU-bound thread makes the I/O threads' waits
    // expire): with and without it.
    let mut blame = python.to_vec();
    blame.insert(3, Config::GilwatchNoBlame);
    for (name, workload, configs) in [
        ("contended-mix", Workload::Mix, blame),
        ("flask-gunicorn", Workload::Web, python.to_vec()),
    ] {
        v.push(Case {
            name: name.to_owned(),
            workload,
            configs,
        });
    }
    v
}

/// Whether `--only` selects this case (prefixes: `gil-cycle` selects all its interpreters).
fn selected(only: &[String], name: &str) -> bool {
    only.is_empty() || only.iter().any(|o| name.starts_with(o.as_str()))
}

/// What one measured run produced: named numbers (ns_per_cycle, rps, …).
pub type Metrics = Vec<(&'static str, f64)>;

pub fn bench(opts: &Options) -> anyhow::Result<()> {
    anyhow::ensure!(
        shell::is_root(),
        "the benchmark attaches uprobes: run it as root"
    );
    let started = Instant::now();
    let env = deps::ensure(&opts.python)?;
    let root = workspace_root();
    let load_before = loadavg();
    eprintln!("bench: load average at start: {load_before}");

    let mut results: Vec<Value> = Vec::new();
    for case in cases(&env)
        .into_iter()
        .filter(|c| selected(&opts.only, &c.name))
    {
        let mut runs: Vec<(Config, Metrics)> = Vec::new();
        for rep in 0..opts.reps {
            for &config in &case.configs {
                eprintln!(
                    "bench: {} · {} · repetition {}/{}",
                    case.name,
                    config.name(),
                    rep + 1,
                    opts.reps
                );
                let m = run::once(&env, &case.workload, config, opts.seconds)
                    .with_context(|| format!("{} under {}", case.name, config.name()));
                match m {
                    Ok(m) => runs.push((config, m)),
                    // One observer failing on one interpreter (bpftrace cannot attach, say)
                    // leaves an empty cell, not a lost run.
                    Err(e) => eprintln!("bench: {e:#}"),
                }
            }
        }
        results.push(json!({
            "workload": case.name,
            "interpreter": match &case.workload {
                run::Workload::Cycle(i) | run::Workload::PyLock(i) => json!(i.label),
                _ => Value::Null,
            },
            "configs": case.configs.iter().map(|c| json!({
                "config": c.name(),
                "runs": runs.iter().filter(|(rc, _)| rc == c).map(|(_, m)| {
                    m.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect::<serde_json::Map<_, _>>()
                }).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        }));
    }
    let observer = if selected(&opts.only, "observer") {
        eprintln!("bench: observer-side cost");
        run::observer_cost(&env, opts.seconds.max(5.0))?
    } else {
        Value::Array(Vec::new())
    };
    let load_after = loadavg();
    let doc = json!({
        "machine": machine(),
        "python": env.python_version,
        "gilwatch_commit": shell::output(std::process::Command::new("git").args(["-C"]).arg(&root).args(["rev-parse", "--short", "HEAD"])).map(|s| s.trim().to_owned()),
        "load_average": {"start": load_before, "end": load_after},
        "repetitions": opts.reps,
        "only": opts.only,
        "seconds_per_run": opts.seconds,
        "per_event_streaming_mode": "--trace only (a BPF ring buffer, one record per GIL span, drained every 10 ms: the `trace` case); otherwise none, gilwatch aggregates in the kernel",
        "workloads": results,
        "observer": observer,
        "wall_seconds": started.elapsed().as_secs_f64(),
    });
    let dir = root.join("bench/results");
    std::fs::create_dir_all(&dir).context("creating bench/results")?;
    let json_path = dir.join("latest.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&doc)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    let md = table::markdown(&doc);
    let md_path = dir.join("latest.md");
    std::fs::write(&md_path, &md).with_context(|| format!("writing {}", md_path.display()))?;
    println!("{md}");
    eprintln!(
        "bench: wrote {} and {} in {:.0} s",
        md_path.display(),
        json_path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The 1-, 5- and 15-minute load averages: numbers taken under load are noise, so every result
/// says what the load was.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned());
    let uname = |flag: &str| {
        shell::output(std::process::Command::new("uname").arg(flag)).map(|s| s.trim().to_owned())
    };
    json!({
        "cpu": model,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "kernel": uname("-r"),
        "virtualized": shell::output(&mut std::process::Command::new("systemd-detect-virt")).map(|s| s.trim().to_owned()),
    })
}
