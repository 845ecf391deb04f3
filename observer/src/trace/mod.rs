//! `--trace FILE`: a timeline of every GIL wait and hold, for Perfetto.
//!
//! The kernel writes one record per span into a ring buffer only in a traced run
//! (observer-ebpf/src/trace.rs); `events` drains it while the run goes on, `timeline` cuts the
//! records to the report's window, `perfetto` writes the file when the run ends (thread names
//! are best known then).
pub mod events;
pub mod perfetto;
pub mod schema;
pub mod timeline;

use std::{
    collections::HashMap,
    fs::File,
    io::BufWriter,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use aya::Ebpf;
use observer_common::ThreadGilState;
use serde::Serialize;

use crate::error::{Exit, user};

/// The ring buffer's size: at 32 bytes a record plus an 8-byte header, 16 MiB hold 400,000
/// spans, what a target cycling the GIL 10^6 times a second writes in more than the reader's
/// 10 ms poll.
pub const RING_BYTES: u32 = 16 << 20;

/// What one record costs the target's thread beyond the probe's trap (`bpf_ringbuf_output` of
/// 32 bytes, no wake-up), for the overhead estimate: measured by `cargo xtask bench` (the
/// `trace` case: ns per GIL cycle with and without --trace, docs/performance.md).
pub const RECORD_COST_NS: f64 = 150.0;

/// What the report says about the trace (JSON `trace`).
#[derive(Debug, Clone, Serialize)]
pub struct TraceSummary {
    /// The file written.
    pub file: String,
    /// Span records the kernel wrote (the whole run, window or not).
    pub records: u64,
    /// Records lost because the ring buffer was full: 0 means the timeline is complete.
    pub lost: u64,
    /// Records read after gilwatch's memory cap (8,388,608 records) and left out: the timeline
    /// stops there.
    pub over_cap: u64,
    /// Slices in the file (per-thread waits and holds, and the GIL track's holds).
    pub slices: u64,
    /// Ring buffer size, bytes.
    pub ring_bytes: u32,
}

/// A traced run in progress.
pub struct Tracer {
    path: PathBuf,
    file: File,
    reader: events::Reader,
    /// Records at the last [`Tracer::new_records`].
    seen: u64,
}

impl Tracer {
    /// Creates the file (so a path that cannot be written fails before the run) and starts
    /// draining the kernel's records.
    pub fn start(path: &Path, ebpf: &mut Ebpf) -> anyhow::Result<Tracer> {
        let file = File::create(path).map_err(|e| {
            user(
                Exit::Usage,
                format!("cannot write --trace {}: {e}", path.display()),
            )
        })?;
        Ok(Tracer {
            path: path.to_owned(),
            file,
            reader: events::Reader::start(ebpf)?,
            seen: 0,
        })
    }

    /// Records read so far.
    pub fn records(&self) -> u64 {
        self.reader.records()
    }

    /// Records read since the last call (for the duty cycle's judgements).
    pub fn new_records(&mut self) -> u64 {
        let now = self.reader.records();
        let new = now.saturating_sub(self.seen);
        self.seen = now;
        new
    }

    /// What the records read so far cost the target, ns.
    pub fn cost_ns(records: u64) -> f64 {
        records as f64 * RECORD_COST_NS
    }

    /// Writes the timeline of the report's window [t0, t1]; `open`: the kernel's per-thread
    /// state read with the last snapshot (none when the target is gone: its last spans ended at
    /// an unknown moment, as the report has it).
    pub fn finish(
        self,
        ebpf: &Ebpf,
        window: (u64, u64),
        open: &[(u32, ThreadGilState)],
        process: &perfetto::Process<'_>,
    ) -> anyhow::Result<TraceSummary> {
        let read = self.reader.finish()?;
        let lost = events::lost(ebpf)?;
        // Past the cap, the spans still open at the end would float after a gap: left out.
        let open = if read.over_cap == 0 { open } else { &[] };
        let slices = timeline::slices(&read.spans, open, window.0, window.1);
        let mut out = BufWriter::new(self.file);
        let written = perfetto::write(&mut out, process, &slices)
            .with_context(|| format!("writing --trace {}", self.path.display()))?;
        Ok(TraceSummary {
            file: self.path.display().to_string(),
            records: read.spans.len() as u64 + read.over_cap,
            lost,
            over_cap: read.over_cap,
            slices: written,
            ring_bytes: RING_BYTES,
        })
    }
}

/// The process's name for the trace: its `comm`, or `python`.
pub fn process_name(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "python".to_owned())
}

/// tid → name, from the report's threads.
pub fn thread_names<'a>(threads: impl Iterator<Item = (u32, &'a str)>) -> HashMap<u32, String> {
    threads.map(|(t, n)| (t, n.to_owned())).collect()
}
