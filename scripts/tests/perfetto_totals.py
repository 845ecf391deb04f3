"""Decodes a gilwatch --trace file with Perfetto's own schema (PyPI `perfetto`'s
perfetto_trace_pb2) and prints, as JSON, what its tracks hold: per thread track (by tid) its
name and the summed durations and counts of its `GIL wait` and `GIL hold` slices; for the `GIL`
track its slices, their summed duration and whether any two overlap; and every event that did
not pair up (an END without a BEGIN, a BEGIN never ended).

Usage: perfetto_totals.py TRACE_FILE
"""
import json
import sys

from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

BEGIN = pb.TrackEvent.Type.TYPE_SLICE_BEGIN
END = pb.TrackEvent.Type.TYPE_SLICE_END
MONOTONIC = pb.BuiltinClock.BUILTIN_CLOCK_MONOTONIC

trace = pb.Trace()
with open(sys.argv[1], "rb") as f:
    trace.ParseFromString(f.read())

threads = {}  # uuid -> {"tid", "name", ...}
gil_uuid = None
process = None
clocks = []
open_slices = {}  # uuid -> stack of (name, ts)
slices = {}  # uuid -> list of (name, start, end)
problems = []
for p in trace.packet:
    if p.HasField("clock_snapshot"):
        clocks = sorted(c.clock_id for c in p.clock_snapshot.clocks)
    if p.HasField("track_descriptor"):
        d = p.track_descriptor
        if d.HasField("thread"):
            threads[d.uuid] = {"tid": d.thread.tid, "pid": d.thread.pid, "name": d.thread.thread_name}
        elif d.HasField("process"):
            process = {"pid": d.process.pid, "name": d.process.process_name}
        elif d.name == "GIL":
            gil_uuid = d.uuid
    if p.HasField("track_event"):
        e = p.track_event
        if p.timestamp_clock_id != MONOTONIC:
            problems.append("event at %d not on CLOCK_MONOTONIC" % p.timestamp)
        stack = open_slices.setdefault(e.track_uuid, [])
        if e.type == BEGIN:
            stack.append((e.name, p.timestamp))
        elif e.type == END:
            if not stack:
                problems.append("END without BEGIN on track %d at %d" % (e.track_uuid, p.timestamp))
                continue
            name, start = stack.pop()
            if p.timestamp < start:
                problems.append("slice %s ends before it begins" % name)
            slices.setdefault(e.track_uuid, []).append((name, start, p.timestamp))
for uuid, stack in open_slices.items():
    if stack:
        problems.append("%d slices never ended on track %d" % (len(stack), uuid))

out = {"process": process, "clocks": clocks, "threads": [], "gil": None, "problems": problems}
for uuid, t in threads.items():
    mine = slices.get(uuid, [])
    row = dict(t)
    for label, key in (("GIL wait", "wait"), ("GIL hold", "hold")):
        picked = [s for s in mine if s[0] == label]
        row[key + "_ns"] = sum(e - s for _, s, e in picked)
        row[key + "_slices"] = len(picked)
    row["other_slices"] = len([s for s in mine if s[0] not in ("GIL wait", "GIL hold")])
    out["threads"].append(row)
if gil_uuid is not None:
    g = sorted(slices.get(gil_uuid, []), key=lambda s: s[1])
    overlaps = sum(1 for a, b in zip(g, g[1:]) if b[1] < a[2])
    holders = sorted({s[0] for s in g})
    out["gil"] = {
        "slices": len(g),
        "held_ns": sum(e - s for _, s, e in g),
        "overlaps": overlaps,
        "holders": holders,
    }
json.dump(out, sys.stdout)
