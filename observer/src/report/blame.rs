//! The blame section of the report: which Python code held the GIL while others waited for
//! it, and which code waited (built by blame/mod.rs, rendered by blame_terminal.rs and json.rs).
use serde::Serialize;

use crate::python::code::CodeLocation;

#[derive(Debug, Clone, Serialize)]
pub struct BlameReport {
    /// False: `unavailable` says why (strategy, version, --no-blame, GIL not found).
    pub available: bool,
    pub unavailable: Option<String>,
    /// Stacks whose longest hold (wait) is shorter are not listed (--blame-min; default the
    /// GIL's switch interval).
    pub min_ns: u64,
    /// Which native frames are in the stacks (none yet) and why.
    pub native_frames: String,
    /// All hold time of the run (every thread), and the part blamed on sampled stacks: holds
    /// during which some waiter's timed wait expired.
    pub hold_total_ns: u64,
    pub hold_blamed_ns: u64,
    pub wait_total_ns: u64,
    /// Waits that timed out at least once.
    pub wait_blamed_ns: u64,
    /// Holder stacks sampled (one per expired timed wait).
    pub samples: u64,
    /// Blame events the kernel could not record (a blame map full) or stacks it could not read.
    pub lost: u64,
    /// Ranked by total hold time.
    pub holds: Vec<BlamedStack>,
    /// Ranked by total wait time.
    pub waits: Vec<BlamedStack>,
}

/// One Python frame; None fields when the code object could not be read.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct BlamedFrame {
    pub qualname: String,
    pub filename: String,
    pub line: Option<u32>,
    pub first_line: Option<u32>,
}

impl BlamedFrame {
    /// A frame from its location, or (unreadable code object) from its address, so that
    /// different unreadable frames stay apart.
    pub fn located(l: Option<CodeLocation>, code: u64) -> Self {
        match l {
            Some(l) => BlamedFrame {
                qualname: l.qualname,
                filename: l.filename,
                line: l.line,
                first_line: Some(l.first_line),
            },
            None => BlamedFrame {
                qualname: "?".to_owned(),
                filename: format!("code object {code:#x}"),
                line: None,
                first_line: None,
            },
        }
    }
}

impl BlamedFrame {
    /// `qualname (file:line)`.
    pub fn label(&self) -> String {
        match self.line {
            Some(l) => format!("{} ({}:{l})", self.qualname, self.filename),
            None => format!("{} ({})", self.qualname, self.filename),
        }
    }
}

/// A stack and the time attributed to it, summed over threads.
#[derive(Debug, Clone, Serialize)]
pub struct BlamedStack {
    /// Innermost first.
    pub frames: Vec<BlamedFrame>,
    /// The chain went on past the frames kept (32, innermost) or could not be read to its end.
    pub truncated: bool,
    /// Holds whose last sample was this stack / waits that first timed out here.
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    /// Expired timed waits that sampled it.
    pub samples: u64,
    /// total_ns over all hold (wait) time of the run, %.
    pub share_pct: f64,
    /// Holds: waiting of the timed waits that expired while this stack held the GIL.
    pub caused_wait_ns: u64,
    /// Threads involved, most time first.
    pub threads: Vec<BlamedThread>,
    /// The frame the verdict names: the innermost outside the standard library (the culprit's
    /// own code, e.g. the line calling `json.dumps`), else the innermost.
    pub headline: Option<BlamedFrame>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BlamedThread {
    /// 0 when the holder's thread state was never paired with a TID.
    pub tid: u32,
    pub name: String,
    pub total_ns: u64,
}

impl BlamedStack {
    /// The frame a reader looks at first: the innermost frame outside the standard library
    /// (the culprit's own code), else the innermost.
    pub fn find_headline(&self) -> Option<&BlamedFrame> {
        let stdlib = |f: &&BlamedFrame| {
            f.filename.contains("/lib/python3") && !f.filename.contains("-packages/")
        };
        self.frames
            .iter()
            .find(|f| !stdlib(f) && f.qualname != "?")
            .or(self.frames.first())
    }
}
