//! Project tasks: `cargo xtask setup | build | demo | test | bench`.
//!
//! `demo` and `test` are the README's two commands: each sets up whatever this machine lacks first,
//! so a fresh clone needs nothing else.
mod bench;
mod demo;
mod setup;
mod shell;
mod sid;
mod test;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "gilwatch's build, setup, demo and test tasks"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building gilwatch needs (Debian packages, bpf-linker, the `debian-bpf`
    /// toolchain). Quick no-op when all is there.
    Setup,
    /// Setup, then build the release binary target/release/gilwatch.
    Build,
    /// Setup, build, start a GIL-contended Python program and show gilwatch's report on it.
    Demo {
        /// How long to observe.
        #[arg(long, default_value = "6s")]
        duration: String,
    },
    /// Setup, build, then all tests: unit tests, then the privileged integration tests (root,
    /// real BPF programs, real interpreters).
    Test {
        /// Only the unit tests (no root needed).
        #[arg(long)]
        unit: bool,
        /// Extra arguments for the integration test run (e.g. a test name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Setup, build, then measure what observing costs the observed process: gilwatch, its
    /// default overhead budget, and an equivalent bpftrace script, side by side (root; writes
    /// bench/results/latest.md and latest.json; about 12 minutes, 5 with --quick).
    Bench {
        /// Repetitions of each configuration (interleaved).
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// Seconds per measured run.
        #[arg(long, default_value_t = 4.0)]
        seconds: f64,
        /// The CPython the workloads run on (needs its symbol table and a shared libpython).
        #[arg(long, default_value = "/root/.pyenv/versions/3.11.7/bin/python3")]
        python: std::path::PathBuf,
        /// Only these cases, comma-separated (prefixes: gil-cycle, gil-cycle-sid, lock,
        /// contended-mix, flask-gunicorn, observer).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// A short run for merge time: 2 repetitions of 2 s.
        #[arg(long)]
        quick: bool,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::setup(),
        Task::Build => {
            setup::setup()?;
            build()
        }
        Task::Demo { duration } => {
            setup::setup()?;
            build()?;
            demo::demo(&duration)
        }
        Task::Bench {
            reps,
            seconds,
            python,
            only,
            quick,
        } => {
            let (reps, seconds) = if quick { (2, 2.0) } else { (reps, seconds) };
            setup::setup()?;
            bench::bench(&bench::Options {
                reps,
                seconds,
                python,
                only,
            })
        }
        Task::Test { unit, args } => {
            setup::setup()?;
            test::test(unit, &args)
        }
    }
}

pub fn build() -> anyhow::Result<()> {
    shell::run(shell::cargo().args(["build", "--release", "--package", "observer"]))
}
