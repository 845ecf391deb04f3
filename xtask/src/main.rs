//! Project tasks: `cargo xtask setup | build | demo | test`.
//!
//! `demo` and `test` are the README's two commands: each sets up whatever this machine lacks first,
//! so a fresh clone needs nothing else.
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
        Task::Test { unit, args } => {
            setup::setup()?;
            test::test(unit, &args)
        }
    }
}

pub fn build() -> anyhow::Result<()> {
    shell::run(shell::cargo().args(["build", "--release", "--package", "observer"]))
}
