//! Slices → a Perfetto trace file (the `Trace` protobuf: a stream of `TracePacket`s), which
//! ui.perfetto.dev opens.
//!
//! Tracks: the process; under it one per thread (a thread track, so the UI names it with the
//! thread's name and tid) with `GIL wait` and `GIL hold` slices; and a `GIL` track whose slices
//! are the holds, named after the holder, with gaps while nobody holds it. Timestamps are the
//! kernel's CLOCK_MONOTONIC: every packet says so, and a clock snapshot ties that clock to
//! BOOTTIME, the trace's default, so the trace processor can place them.
use std::{collections::HashMap, io::Write};

use anyhow::Context as _;
use prost::Message as _;

use super::{
    schema::{
        BUILTIN_CLOCK_BOOTTIME, BUILTIN_CLOCK_MONOTONIC, Clock, ClockSnapshot, ProcessDescriptor,
        SEQ_INCREMENTAL_STATE_CLEARED, TYPE_SLICE_BEGIN, TYPE_SLICE_END, ThreadDescriptor,
        TracePacket, TrackDescriptor, TrackEvent,
    },
    timeline::{Slice, SliceKind},
};

/// Every packet comes from one writer: one sequence.
const SEQUENCE: u32 = 1;
/// `Trace.packet`'s key: field 1, length-delimited. A trace file is a `Trace` message, so it can
/// be written one packet at a time: each is this key, its length, its bytes.
const TRACE_PACKET_KEY: u8 = (1 << 3) | 2;
const PROCESS_UUID: u64 = 1;
const GIL_UUID: u64 = 2;

pub const WAIT_SLICE: &str = "GIL wait";
pub const HOLD_SLICE: &str = "GIL hold";
pub const GIL_TRACK: &str = "GIL";

fn thread_uuid(tid: u32) -> u64 {
    (1 << 32) | tid as u64
}

/// What the trace names.
pub struct Process<'a> {
    pub pid: u32,
    pub name: &'a str,
    /// tid → thread name (the Python name where known).
    pub threads: &'a HashMap<u32, String>,
}

/// Writes the trace; returns the number of slices written (thread and GIL tracks).
pub fn write(out: &mut dyn Write, process: &Process<'_>, slices: &[Slice]) -> anyhow::Result<u64> {
    let mut buf = Vec::with_capacity(64);
    let mut put = |p: TracePacket| -> anyhow::Result<()> {
        buf.clear();
        buf.push(TRACE_PACKET_KEY);
        p.encode_length_delimited(&mut buf)
            .context("encoding a trace packet")?;
        out.write_all(&buf).context("writing the trace")
    };
    put(TracePacket {
        sequence_flags: Some(SEQ_INCREMENTAL_STATE_CLEARED),
        clock_snapshot: Some(clock_snapshot()),
        ..packet()
    })?;
    put(descriptor(TrackDescriptor {
        uuid: Some(PROCESS_UUID),
        process: Some(ProcessDescriptor {
            pid: Some(process.pid as i32),
            process_name: Some(process.name.to_owned()),
        }),
        ..Default::default()
    }))?;

    let mut tids: Vec<u32> = slices.iter().map(|s| s.tid).collect();
    tids.sort_unstable();
    tids.dedup();
    let name = |tid: u32| {
        process
            .threads
            .get(&tid)
            .cloned()
            .unwrap_or_else(|| format!("thread {tid}"))
    };
    for &tid in &tids {
        put(descriptor(TrackDescriptor {
            uuid: Some(thread_uuid(tid)),
            parent_uuid: Some(PROCESS_UUID),
            thread: Some(ThreadDescriptor {
                pid: Some(process.pid as i32),
                tid: Some(tid as i32),
                thread_name: Some(name(tid)),
            }),
            ..Default::default()
        }))?;
    }
    put(descriptor(TrackDescriptor {
        uuid: Some(GIL_UUID),
        parent_uuid: Some(PROCESS_UUID),
        name: Some(GIL_TRACK.to_owned()),
        ..Default::default()
    }))?;

    let mut written = 0;
    for s in slices {
        let label = match s.kind {
            SliceKind::Wait => WAIT_SLICE,
            SliceKind::Hold => HOLD_SLICE,
        };
        put(event(
            s.start_ns,
            thread_uuid(s.tid),
            TYPE_SLICE_BEGIN,
            Some(label),
        ))?;
        put(event(s.end_ns, thread_uuid(s.tid), TYPE_SLICE_END, None))?;
        written += 1;
    }
    let names: HashMap<u32, String> = tids
        .iter()
        .map(|&tid| (tid, format!("{} ({tid})", name(tid))))
        .collect();
    for (start, end, tid) in gil_holds(slices) {
        put(event(start, GIL_UUID, TYPE_SLICE_BEGIN, Some(&names[&tid])))?;
        put(event(end, GIL_UUID, TYPE_SLICE_END, None))?;
        written += 1;
    }
    out.flush().context("writing the trace")?;
    Ok(written)
}

/// The GIL track: every hold in time order, none overlapping the one before (slices on a track
/// must nest; holds of one GIL do not overlap, except by the nanoseconds between one thread's
/// drop and the next one's timestamp, or with subinterpreters that have a GIL each).
fn gil_holds(slices: &[Slice]) -> Vec<(u64, u64, u32)> {
    let mut holds: Vec<(u64, u64, u32)> = slices
        .iter()
        .filter(|s| s.kind == SliceKind::Hold)
        .map(|s| (s.start_ns, s.end_ns, s.tid))
        .collect();
    holds.sort_unstable();
    let mut last_end = 0;
    holds
        .into_iter()
        .filter_map(|(start, end, tid)| {
            let start = start.max(last_end);
            (end > start).then(|| {
                last_end = end;
                (start, end, tid)
            })
        })
        .collect()
}

fn packet() -> TracePacket {
    TracePacket {
        trusted_packet_sequence_id: Some(SEQUENCE),
        ..Default::default()
    }
}

fn descriptor(d: TrackDescriptor) -> TracePacket {
    TracePacket {
        track_descriptor: Some(d),
        ..packet()
    }
}

fn event(ts: u64, track: u64, kind: i32, name: Option<&str>) -> TracePacket {
    TracePacket {
        timestamp: Some(ts),
        timestamp_clock_id: Some(BUILTIN_CLOCK_MONOTONIC),
        track_event: Some(TrackEvent {
            r#type: Some(kind),
            track_uuid: Some(track),
            name: name.map(str::to_owned),
        }),
        ..packet()
    }
}

/// MONOTONIC and BOOTTIME now, MONOTONIC the trace's clock.
fn clock_snapshot() -> ClockSnapshot {
    let read = |id| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the timespec we own; both clocks always exist.
        unsafe { libc::clock_gettime(id, &mut ts) };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    };
    let clocks = [
        (libc::CLOCK_MONOTONIC, BUILTIN_CLOCK_MONOTONIC),
        (libc::CLOCK_BOOTTIME, BUILTIN_CLOCK_BOOTTIME),
    ]
    .into_iter()
    .map(|(id, clock)| Clock {
        clock_id: Some(clock),
        timestamp: Some(read(id)),
    })
    .collect();
    ClockSnapshot {
        clocks,
        primary_trace_clock: Some(BUILTIN_CLOCK_MONOTONIC),
    }
}

#[cfg(test)]
mod tests {
    use super::{super::schema::Trace, *};

    #[test]
    fn the_gil_track_never_overlaps() {
        let s = |tid, start, end| Slice {
            tid,
            kind: SliceKind::Hold,
            start_ns: start,
            end_ns: end,
        };
        let holds = gil_holds(&[s(1, 10, 20), s(2, 19, 30), s(3, 22, 25), s(1, 40, 50)]);
        assert_eq!(holds, vec![(10, 20, 1), (20, 30, 2), (40, 50, 1)]);
    }

    #[test]
    fn the_file_decodes_as_a_trace_with_named_thread_tracks() {
        let threads = HashMap::from([(7, "worker".to_owned())]);
        let slices = [
            Slice {
                tid: 7,
                kind: SliceKind::Wait,
                start_ns: 100,
                end_ns: 150,
            },
            Slice {
                tid: 7,
                kind: SliceKind::Hold,
                start_ns: 150,
                end_ns: 400,
            },
        ];
        let mut buf = Vec::new();
        let n = write(
            &mut buf,
            &Process {
                pid: 5,
                name: "python3",
                threads: &threads,
            },
            &slices,
        )
        .unwrap();
        assert_eq!(n, 3);
        let trace = Trace::decode(buf.as_slice()).unwrap();
        let named = trace.packet.iter().any(|p| {
            p.track_descriptor
                .as_ref()
                .and_then(|d| d.thread.as_ref())
                .is_some_and(|t| t.thread_name.as_deref() == Some("worker") && t.tid == Some(7))
        });
        assert!(named, "no track for thread 7 named worker");
        let begins = trace
            .packet
            .iter()
            .filter(|p| {
                p.track_event
                    .as_ref()
                    .is_some_and(|e| e.r#type == Some(TYPE_SLICE_BEGIN))
            })
            .count();
        assert_eq!(begins, 3);
    }
}
