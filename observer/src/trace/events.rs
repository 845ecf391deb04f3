//! Drains the kernel's `--trace` ring buffer on a thread of its own.
//!
//! The kernel writes without waking the reader (a wake-up per GIL cycle would cost the target
//! more than the record), so the reader polls: every POLL it takes everything there is. The ring
//! must hold what the target writes in one POLL; what does not fit is counted in `TRACE_LOST`.
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context as _, anyhow};
use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray, RingBuf},
};
use observer_common::{GilSpan, names::map};

/// How often the ring buffer is emptied.
const POLL: Duration = Duration::from_millis(10);
/// Records kept until the end at most (32 bytes each: 256 MiB of gilwatch's memory, a trace
/// file of about 1 GB): a run tracing a busy target for long stops its timeline there rather
/// than exhausting memory; what follows is counted.
pub const MAX_RECORDS: usize = 8 << 20;
/// Test and debugging knob: a lower cap than [`MAX_RECORDS`], so that reaching it can be
/// provoked on purpose.
pub const MAX_RECORDS_ENV: &str = "GILWATCH_DEBUG_TRACE_RECORDS";

/// What the reader read.
pub struct Read {
    /// The records kept, in the order the kernel committed them.
    pub spans: Vec<GilSpan>,
    /// Records read after [`MAX_RECORDS`] and not kept.
    pub over_cap: u64,
}

/// The reader thread and what it has read so far.
pub struct Reader {
    stop: Arc<AtomicBool>,
    records: Arc<AtomicU64>,
    thread: JoinHandle<Read>,
}

impl Reader {
    /// Takes the ring buffer out of the loaded object and starts draining it.
    pub fn start(ebpf: &mut Ebpf) -> anyhow::Result<Reader> {
        let data = ebpf
            .take_map(map::TRACE_EVENTS)
            .with_context(|| format!("{} map missing", map::TRACE_EVENTS))?;
        let mut ring = RingBuf::try_from(data).context("opening the trace ring buffer")?;
        let stop = Arc::new(AtomicBool::new(false));
        let records = Arc::new(AtomicU64::new(0));
        let (stop_r, records_r) = (stop.clone(), records.clone());
        let cap = std::env::var(MAX_RECORDS_ENV)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .map_or(MAX_RECORDS, |n| n.min(MAX_RECORDS));
        let thread = std::thread::Builder::new()
            .name("gilwatch-trace".into())
            .spawn(move || {
                block_signals();
                let mut read = Read {
                    spans: Vec::new(),
                    over_cap: 0,
                };
                loop {
                    // Read the flag first: a last full drain follows the stop.
                    let last = stop_r.load(Ordering::Acquire);
                    while let Some(item) = ring.next() {
                        match decode(&item) {
                            Some(_) if read.spans.len() >= cap => read.over_cap += 1,
                            Some(span) => read.spans.push(span),
                            None => {}
                        }
                    }
                    records_r.store(read.spans.len() as u64 + read.over_cap, Ordering::Relaxed);
                    if last {
                        return read;
                    }
                    std::thread::sleep(POLL);
                }
            })
            .context("starting the trace reader thread")?;
        Ok(Reader {
            stop,
            records,
            thread,
        })
    }

    /// Records read so far (for the cost estimate while running).
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    /// Stops the reader after a last drain; everything it read.
    pub fn finish(self) -> anyhow::Result<Read> {
        self.stop.store(true, Ordering::Release);
        self.thread
            .join()
            .map_err(|_| anyhow!("the trace reader thread panicked"))
    }
}

/// Keeps every signal away from this thread: SIGINT and SIGTERM are read from a signalfd
/// (stop.rs), which sees a signal only while every thread blocks it; a thread started before
/// the session blocks them would take the signal's default action, ending gilwatch unreported.
fn block_signals() {
    // SAFETY: sigfillset fills the set we own; pthread_sigmask changes this thread's mask only.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
    }
}

/// One record, as the kernel wrote it (ring buffer records are 8-byte aligned, but the slice
/// type does not say so: read it unaligned).
fn decode(bytes: &[u8]) -> Option<GilSpan> {
    if bytes.len() < size_of::<GilSpan>() {
        return None;
    }
    // SAFETY: the slice holds at least size_of::<GilSpan>() bytes, and GilSpan is plain
    // integers (any bit pattern is valid).
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<GilSpan>()) })
}

/// Records the kernel could not write because the ring buffer was full.
pub fn lost(ebpf: &Ebpf) -> anyhow::Result<u64> {
    let counters: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(
        ebpf.map(map::TRACE_LOST)
            .with_context(|| format!("{} map missing", map::TRACE_LOST))?,
    )?;
    Ok(counters
        .get(&0, 0)
        .map(|per_cpu| per_cpu.iter().sum())
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_record_and_refuses_a_short_one() {
        let span = GilSpan {
            wait_start_ns: 1,
            acquired_ns: 2,
            released_ns: 3,
            tid: 4,
            flags: 0,
        };
        // SAFETY: viewing a plain repr(C) struct as its bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts((&span as *const GilSpan).cast::<u8>(), size_of::<GilSpan>())
        };
        assert_eq!(decode(bytes), Some(span));
        assert_eq!(decode(&bytes[..size_of::<GilSpan>() - 1]), None);
    }
}
