//! The few messages of Perfetto's trace schema (perfetto/protos/perfetto/trace/…, v51) that a
//! GIL timeline uses, declared for prost with Perfetto's own field numbers. Every other field
//! is left out: a decoder skips fields it does not know, and the test decodes the files with
//! the official schema (PyPI `perfetto`'s `perfetto_trace_pb2`).
//!
//! Why not a crate of generated bindings: `perfetto_protos` (rust-protobuf) generates the whole
//! schema, 226 modules and 14 MB of Rust, a 137 MB rlib that took over 12 minutes per build
//! profile on this 2-CPU machine; the Perfetto SDK crates bind the C++ SDK. This file is the
//! dozen fields written.

/// trace.proto: the file is one `Trace`, a stream of packets (written a packet at a time, so
/// only the tests decode one whole).
#[cfg(test)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct Trace {
    #[prost(message, repeated, tag = "1")]
    pub packet: Vec<TracePacket>,
}

/// trace_packet.proto (the fields used; `data` is a oneof there, one of them set here).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TracePacket {
    #[prost(uint64, optional, tag = "8")]
    pub timestamp: Option<u64>,
    #[prost(uint32, optional, tag = "58")]
    pub timestamp_clock_id: Option<u32>,
    #[prost(uint32, optional, tag = "10")]
    pub trusted_packet_sequence_id: Option<u32>,
    #[prost(uint32, optional, tag = "13")]
    pub sequence_flags: Option<u32>,
    #[prost(message, optional, tag = "6")]
    pub clock_snapshot: Option<ClockSnapshot>,
    #[prost(message, optional, tag = "11")]
    pub track_event: Option<TrackEvent>,
    #[prost(message, optional, tag = "60")]
    pub track_descriptor: Option<TrackDescriptor>,
}

/// clock_snapshot.proto.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ClockSnapshot {
    #[prost(message, repeated, tag = "1")]
    pub clocks: Vec<Clock>,
    /// A `BuiltinClock`.
    #[prost(uint32, optional, tag = "2")]
    pub primary_trace_clock: Option<u32>,
}

/// ClockSnapshot.Clock.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Clock {
    #[prost(uint32, optional, tag = "1")]
    pub clock_id: Option<u32>,
    #[prost(uint64, optional, tag = "2")]
    pub timestamp: Option<u64>,
}

/// builtin_clock.proto.
pub const BUILTIN_CLOCK_MONOTONIC: u32 = 3;
pub const BUILTIN_CLOCK_BOOTTIME: u32 = 6;

/// track_event/track_descriptor.proto.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TrackDescriptor {
    #[prost(uint64, optional, tag = "1")]
    pub uuid: Option<u64>,
    #[prost(uint64, optional, tag = "5")]
    pub parent_uuid: Option<u64>,
    #[prost(string, optional, tag = "2")]
    pub name: Option<String>,
    #[prost(message, optional, tag = "3")]
    pub process: Option<ProcessDescriptor>,
    #[prost(message, optional, tag = "4")]
    pub thread: Option<ThreadDescriptor>,
}

/// track_event/process_descriptor.proto.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProcessDescriptor {
    #[prost(int32, optional, tag = "1")]
    pub pid: Option<i32>,
    #[prost(string, optional, tag = "6")]
    pub process_name: Option<String>,
}

/// track_event/thread_descriptor.proto.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ThreadDescriptor {
    #[prost(int32, optional, tag = "1")]
    pub pid: Option<i32>,
    #[prost(int32, optional, tag = "2")]
    pub tid: Option<i32>,
    #[prost(string, optional, tag = "5")]
    pub thread_name: Option<String>,
}

/// track_event/track_event.proto.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TrackEvent {
    /// A [`TrackEvent`] type: `TYPE_SLICE_BEGIN` or `TYPE_SLICE_END`.
    #[prost(int32, optional, tag = "9")]
    pub r#type: Option<i32>,
    #[prost(uint64, optional, tag = "11")]
    pub track_uuid: Option<u64>,
    #[prost(string, optional, tag = "23")]
    pub name: Option<String>,
}

/// TrackEvent.Type.
pub const TYPE_SLICE_BEGIN: i32 = 1;
pub const TYPE_SLICE_END: i32 = 2;

/// TracePacket.SequenceFlags: SEQ_INCREMENTAL_STATE_CLEARED (nothing interned before).
pub const SEQ_INCREMENTAL_STATE_CLEARED: u32 = 1;
