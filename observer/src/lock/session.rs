//! The run for a process without a GIL: wait for the end (duration, Ctrl-C, SIGTERM, target
//! exit), learning thread names on the way (threads may exit before the report). Stop signals
//! and the target's exit come from the same watcher as the GIL session's (`stop.rs`).
use std::{collections::HashMap, time::Duration};

use anyhow::Context as _;
use tokio::time::{Instant, sleep_until};

use crate::{
    ending::EndReason,
    stop::{self, Event, Watcher},
    target::{pidfd::PidFd, process::Process},
};

const POLL: Duration = Duration::from_millis(200);

pub async fn wait(
    process: &Process,
    duration: Option<Duration>,
    names: &mut HashMap<u32, String>,
) -> anyhow::Result<EndReason> {
    stop::block()?;
    let target =
        PidFd::open(process.pid).with_context(|| format!("pidfd_open on PID {}", process.pid))?;
    let mut watcher = Watcher::start(target)?;
    let far = Duration::from_secs(100 * 365 * 24 * 3600);
    let deadline = Instant::now() + duration.unwrap_or(far);
    let mut poll = tokio::time::interval(POLL);
    let ended = loop {
        tokio::select! {
            event = watcher.next() => match event {
                Some(Event::Signal { signo, .. }) if signo == libc::SIGINT => {
                    break EndReason::Interrupted
                }
                Some(Event::Signal { .. }) => break EndReason::Terminated,
                Some(Event::TargetExited) => break EndReason::TargetExited,
                None => anyhow::bail!("the signal and exit watcher stopped"),
            },
            _ = sleep_until(deadline) => break EndReason::Duration,
            _ = poll.tick() => names.extend(process.threads()),
        }
    };
    names.extend(process.threads());
    Ok(ended)
}
