//! The run for a process without a GIL: wait for the end (duration, Ctrl-C, SIGTERM, target
//! exit), learning thread names on the way (threads may exit before the report).
use std::{collections::HashMap, time::Duration};

use anyhow::Context as _;
use tokio::{
    signal::unix::{SignalKind, signal},
    time::{Instant, sleep_until},
};

use crate::{ending::EndReason, target::process::Process};

const POLL: Duration = Duration::from_millis(200);

pub async fn wait(
    process: &Process,
    duration: Option<Duration>,
    names: &mut HashMap<u32, String>,
) -> anyhow::Result<EndReason> {
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let far = Duration::from_secs(100 * 365 * 24 * 3600);
    let deadline = Instant::now() + duration.unwrap_or(far);
    let mut poll = tokio::time::interval(POLL);
    let ended = loop {
        tokio::select! {
            _ = sigint.recv() => break EndReason::Interrupted,
            _ = sigterm.recv() => break EndReason::Terminated,
            _ = sleep_until(deadline) => break EndReason::Duration,
            _ = poll.tick() => {
                if !process.is_alive() {
                    break EndReason::TargetExited;
                }
                names.extend(process.threads());
            }
        }
    };
    names.extend(process.threads());
    Ok(ended)
}
