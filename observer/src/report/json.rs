//! The JSON output: one compact object per line, GIL or lock report (docs/json.md).
use std::io::Write;

use anyhow::Context as _;
use serde::Serialize;

pub fn write_line(out: &mut dyn Write, report: &impl Serialize) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, report).context("encoding the JSON report")?;
    out.write_all(b"\n").context("writing the JSON report")?;
    out.flush().context("writing the JSON report")
}
