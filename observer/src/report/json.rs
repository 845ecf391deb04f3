//! The JSON snapshot: one compact object per line (README, "JSON output").
use std::io::Write;

use anyhow::Context as _;

use super::Report;

pub fn write_line(out: &mut dyn Write, report: &Report) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, report).context("encoding the JSON report")?;
    out.write_all(b"\n").context("writing the JSON report")?;
    out.flush().context("writing the JSON report")
}
