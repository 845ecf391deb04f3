//! Python code objects of a live CPython process, read from outside: a frame's code object
//! address and raw instruction position (as the kernel read them) become `qualname
//! (file:line)`.
//!
//! Offsets: per minor for 3.8–3.12 (below), from `_Py_DebugOffsets` on 3.13+ (static 3.13–3.15
//! values when no table can be read). Either way the object must pass a type check first: its
//! type is named "code" and its `tp_basicsize` is the one this layout expects, so garbage
//! where a code object should be is an error, not a plausible wrong answer.

use std::collections::HashMap;

use anyhow::{Context, Result, bail};

use super::debug_offsets::{CodeOffsets, read_table};
use super::layout::{Layout, OB_TYPE, layout_for, word};
use super::line_table::{self, Format};
use super::memory::{ReadBudget, RemoteMemory};
use super::objects::{Reader, TypeInfo};

/// Where a frame was in its code object, as the kernel read it (raw, version-specific).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InstrPosition {
    /// 3.8–3.9: `PyFrameObject.f_lasti`, a byte offset into `co_code` (-1 = not started).
    LastiBytes(i64),
    /// 3.10: `PyFrameObject.f_lasti`, in 2-byte code units (-1 = not started).
    LastiUnits(i64),
    /// 3.11+: `_PyInterpreterFrame.prev_instr` (3.11–3.12) / `instr_ptr` (3.13+), a pointer
    /// into the code object's own bytecode (`co_code_adaptive`).
    InstrPtr(u64),
    /// Nothing usable was read.
    Unknown,
}

/// A frame's place in Python source.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CodeLocation {
    /// `co_qualname` on 3.11+ (`Class.method`, `outer.<locals>.inner`); 3.8–3.10 code
    /// objects carry only `co_name` (`method`, `inner`).
    pub qualname: String,
    pub filename: String,
    /// The line being executed; None when the position is unknown or the compiler gave the
    /// instruction no line.
    pub line: Option<u32>,
    /// `co_firstlineno`: the `def` line (1 for a module).
    pub first_line: u32,
}

/// Where `PyCodeObject` keeps what we read (x86_64).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CodeLayout {
    /// The code type's `tp_basicsize`: checked against the live type.
    basicsize: u64,
    filename: u64,
    name: u64,
    /// 3.11+.
    qualname: Option<u64>,
    /// `co_lnotab` (3.8–3.9) / `co_linetable`.
    table: u64,
    format: Format,
    /// An int.
    firstlineno: u64,
    bytecode: Bytecode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bytecode {
    /// ≤3.10: a pointer to the `co_code` bytes object at this offset.
    Object(u64),
    /// 3.11+: inline at this offset (`co_code_adaptive`), `ob_size` code units long.
    Inline(u64),
}

/// Per minor, printed live (offsets of `id(code.co_filename)` etc. inside the object, and
/// `type(code).__basicsize__`) on pyenv 3.8.18–3.13.0, Debian's 3.11.2 and sid's 3.13.18,
/// 3.14.10 and 3.15.2; they agree with each build's headers and 3.13+ tables.
fn static_layout(minor: u8) -> Option<CodeLayout> {
    let old = CodeLayout {
        basicsize: 176,
        filename: 104,
        name: 112,
        qualname: None,
        table: 120,
        format: Format::Lnotab,
        firstlineno: 40,
        bytecode: Bytecode::Object(48),
    };
    let new = |firstlineno: u64, adaptive: u64| CodeLayout {
        basicsize: adaptive,
        filename: 112,
        name: 120,
        qualname: Some(128),
        table: 136,
        format: Format::Locations,
        firstlineno,
        bytecode: Bytecode::Inline(adaptive),
    };
    Some(match minor {
        8 | 9 => old,
        10 => CodeLayout {
            format: Format::Linetable310,
            ..old
        },
        11 => new(72, 184),
        12 => new(68, 192),
        13 => new(68, 200),
        14 | 15 => new(68, 208),
        _ => return None,
    })
}

impl CodeLayout {
    fn from_table(t: &CodeOffsets) -> Self {
        CodeLayout {
            basicsize: t.code_adaptive,
            filename: t.filename,
            name: t.name,
            qualname: Some(t.qualname),
            table: t.linetable,
            format: Format::Locations,
            firstlineno: t.firstlineno,
            bytecode: Bytecode::Inline(t.code_adaptive),
        }
    }

    /// Bytes from the object's start that cover every field read.
    fn head_len(&self) -> usize {
        let mut end = [self.filename, self.name, self.table, self.firstlineno]
            .into_iter()
            .chain(self.qualname)
            .max()
            .unwrap_or(0);
        if let Bytecode::Object(at) = self.bytecode {
            end = end.max(at);
        }
        // ob_size (3.11+ code units) sits at +16.
        (end.max(16) + 8) as usize
    }
}

/// `tp_name` of `PyTypeObject`.
const TP_NAME: u64 = 24;
const TP_BASICSIZE: u64 = 32;
/// `PyBytesObject`: `ob_size` at +16, `ob_sval` at +32 in 3.8–3.15 (checked live:
/// `type(b"").__basicsize__` is 33 everywhere).
const BYTES_SIZE: u64 = 16;
const BYTES_DATA: u64 = 32;
const TPFLAGS_BYTES_SUBCLASS: u64 = 1 << 27;
/// Caps: real file names are a few hundred characters, qualnames shorter; tables of the
/// largest generated modules are a few hundred KiB; bytecode is capped by the code units'
/// int-sized index.
const MAX_FILENAME_CHARS: u64 = 4096;
const MAX_QUALNAME_CHARS: u64 = 1024;
const MAX_TABLE_BYTES: u64 = 4 << 20;
const MAX_CODE_BYTES: u64 = 1 << 31;
/// What reading one code object may take from the target (calls, bytes): the head, three
/// strings and a table take about a dozen reads.
const READ_BUDGET: (u64, u64) = (64, MAX_TABLE_BYTES + (1 << 20));
/// Code objects remembered; past this the cache starts over (a process with more live
/// functions than this keeps paying reads, never memory).
const MAX_CACHED: usize = 1 << 16;

/// What a code object says, read once.
struct CodeInfo {
    qualname: String,
    filename: String,
    first_line: u32,
    table: Vec<u8>,
    /// Bytecode length in bytes (positions past it are not this code's).
    code_bytes: u64,
}

/// Turns (code object, position) pairs of one process into source locations.
pub struct Symbolizer<'m> {
    memory: &'m dyn RemoteMemory,
    minor: u8,
    code: CodeLayout,
    /// The string fields of the object layout (sizes of the str headers).
    strings: Layout,
    /// The code type, once one object has passed the check.
    code_type: Option<u64>,
    types: HashMap<u64, TypeInfo>,
    cache: HashMap<u64, CodeInfo>,
}

impl<'m> Symbolizer<'m> {
    /// `runtime_addr` is `_PyRuntime` in the target: on 3.13+ the code object's offsets then
    /// come from its `_Py_DebugOffsets` (required on 3.14+ when given; without it, the values
    /// of the builds listed at `static_layout`). Ignored before 3.13.
    pub fn new(
        memory: &'m dyn RemoteMemory,
        version: (u8, u8),
        runtime_addr: Option<u64>,
    ) -> Result<Self> {
        let (major, minor) = version;
        let unsupported =
            || format!("symbolizing Python {major}.{minor} code is not supported (3.8–3.15 are)");
        if major != 3 {
            bail!(unsupported());
        }
        let mut code = static_layout(minor).with_context(unsupported)?;
        let mut strings = layout_for(minor).with_context(unsupported)?;
        if let (true, Some(runtime)) = (minor >= 13, runtime_addr) {
            match read_table(memory, minor, runtime)? {
                Some(values) => {
                    code = CodeLayout::from_table(&values.code);
                    values.apply(&mut strings);
                }
                // 3.13 builds without the table keep the static layout (as walk.rs does).
                None if minor == 13 => {}
                None => bail!("no _Py_DebugOffsets cookie at _PyRuntime {runtime:#x}"),
            }
        }
        Ok(Self {
            memory,
            minor,
            code,
            strings,
            code_type: None,
            types: HashMap::new(),
            cache: HashMap::new(),
        })
    }

    /// The location of `pos` in the code object at `code`. Cached per code object (code
    /// objects are immutable; an address reused by a new code object after the old one is
    /// freed keeps the old entry: a known limit).
    pub fn locate(&mut self, code: u64, pos: InstrPosition) -> Result<CodeLocation> {
        // 3.14+ frames hold the code as a `_PyStackRef`, whose low two bits are tags.
        let code = if self.minor >= 14 { code & !3 } else { code };
        if !self.cache.contains_key(&code) {
            let info = self
                .read_code(code)
                .with_context(|| format!("reading code object {code:#x}"))?;
            if self.cache.len() >= MAX_CACHED {
                self.cache.clear();
            }
            self.cache.insert(code, info);
        }
        let info = &self.cache[&code];
        let line = self
            .line(code, info, pos)
            .with_context(|| format!("position {pos:?} in {} ({code:#x})", info.qualname))?;
        Ok(CodeLocation {
            qualname: info.qualname.clone(),
            filename: info.filename.clone(),
            line,
            first_line: info.first_line,
        })
    }

    fn line(&self, code: u64, info: &CodeInfo, pos: InstrPosition) -> Result<Option<u32>> {
        let format = self.code.format;
        let addr = match (pos, self.code.bytecode) {
            (InstrPosition::Unknown, _) => return Ok(None),
            (InstrPosition::LastiBytes(b), _) if self.minor <= 9 => b,
            // -1 (not started) stays -1: it is not a unit.
            (InstrPosition::LastiUnits(u), _) if self.minor == 10 => match u {
                -1 => -1,
                u => u.saturating_mul(2),
            },
            (InstrPosition::InstrPtr(p), Bytecode::Inline(at)) => {
                let off = p.wrapping_sub(code.wrapping_add(at)) as i64;
                // 3.11–3.12 point one unit before the first instruction until a frame starts.
                if off == -2 && self.minor <= 12 {
                    -1
                } else if off < 0 {
                    bail!("{p:#x} is before the bytecode of {code:#x}");
                } else {
                    off
                }
            }
            _ => bail!("not a 3.{} instruction position", self.minor),
        };
        let instruction = addr >= 0 && addr % 2 == 0 && (addr as u64) < info.code_bytes;
        if addr != -1 && !instruction {
            bail!(
                "byte {addr} is not an instruction of {} bytes of bytecode",
                info.code_bytes
            );
        }
        let Some(line) = line_table::line_at(format, &info.table, info.first_line.into(), addr)?
        else {
            return Ok(None);
        };
        u32::try_from(line)
            .map(Some)
            .with_context(|| format!("line {line} out of range"))
    }

    fn read_code(&mut self, code: u64) -> Result<CodeInfo> {
        let budget = ReadBudget::new(self.memory, READ_BUDGET.0, READ_BUDGET.1);
        let tp = budget
            .read_u64(code.wrapping_add(OB_TYPE))
            .context("reading ob_type")?;
        if self.code_type != Some(tp) {
            self.check_code_type(&budget, code, tp)?;
            self.code_type = Some(tp);
        }
        let layout = self.code;
        let mut head = vec![0u8; layout.head_len()];
        budget.read(code, &mut head)?;
        let field = |at: u64| u64::from_ne_bytes(word(&head, at as usize));
        let first_line = i32::from_ne_bytes(
            word(&head, layout.firstlineno as usize)[..4]
                .try_into()
                .unwrap_or_default(),
        );
        let first_line =
            u32::try_from(first_line).with_context(|| format!("co_firstlineno is {first_line}"))?;

        let mut reader = Reader {
            mem: &budget,
            layout: self.strings,
            types: std::mem::take(&mut self.types),
        };
        let read = (|| -> Result<CodeInfo> {
            let filename = reader
                .read_str_upto(field(layout.filename), MAX_FILENAME_CHARS)
                .context("co_filename")?;
            let qualname = match layout.qualname {
                Some(at) => reader.read_str_upto(field(at), MAX_QUALNAME_CHARS),
                None => reader.read_str_upto(field(layout.name), MAX_QUALNAME_CHARS),
            }
            .context("co_qualname/co_name")?;
            let table = read_bytes(&mut reader, field(layout.table), MAX_TABLE_BYTES)
                .context("line table")?;
            let code_bytes = match layout.bytecode {
                Bytecode::Object(at) => {
                    bytes_len(&mut reader, field(at), MAX_CODE_BYTES).context("co_code")?
                }
                Bytecode::Inline(_) => {
                    let units = field(16);
                    if units == 0 || units > MAX_CODE_BYTES / 2 {
                        bail!("code object claims {units} code units");
                    }
                    units * 2
                }
            };
            Ok(CodeInfo {
                qualname,
                filename,
                first_line,
                table,
                code_bytes,
            })
        })();
        self.types = std::mem::take(&mut reader.types);
        read
    }

    /// The object's type must be named "code" and have this layout's basic size.
    fn check_code_type(&self, mem: &dyn RemoteMemory, code: u64, tp: u64) -> Result<()> {
        let mut head = [0u8; 40];
        mem.read(tp, &mut head)
            .with_context(|| format!("reading the type object at {tp:#x}"))?;
        let name_at = u64::from_ne_bytes(word(&head, TP_NAME as usize));
        // Exactly "code" and its NUL: a longer read could run off the end of a mapping.
        let mut name = [0u8; 5];
        mem.read(name_at, &mut name)
            .with_context(|| format!("reading tp_name at {name_at:#x}"))?;
        if &name != b"code\0" {
            let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            bail!(
                "object at {code:#x} is not a code object (its type is {:?}…)",
                String::from_utf8_lossy(&name[..end])
            );
        }
        let basicsize = u64::from_ne_bytes(word(&head, TP_BASICSIZE as usize));
        if basicsize != self.code.basicsize {
            bail!(
                "the code type at {tp:#x} has tp_basicsize {basicsize}, expected {} for 3.{}",
                self.code.basicsize,
                self.minor
            );
        }
        Ok(())
    }
}

/// A bytes object's length, after checking it is one.
fn bytes_len(reader: &mut Reader<'_>, obj: u64, max: u64) -> Result<u64> {
    reader.expect_flag(obj, TPFLAGS_BYTES_SUBCLASS, "bytes")?;
    let len = reader.ptr(obj.wrapping_add(BYTES_SIZE))? as i64;
    if !(0..=max as i64).contains(&len) {
        bail!("bytes at {obj:#x} claims {len} bytes");
    }
    Ok(len as u64)
}

fn read_bytes(reader: &mut Reader<'_>, obj: u64, max: u64) -> Result<Vec<u8>> {
    let len = bytes_len(reader, obj, max)?;
    let mut data = vec![0u8; len as usize];
    reader
        .mem
        .read(obj.wrapping_add(BYTES_DATA), &mut data)
        .with_context(|| format!("reading {len} bytes at {obj:#x}"))?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    //! Made-up code objects (FakeMemory) for the readers and their checks, garbage for their
    //! bounds, and live interpreters for the truth (`live_*`, run as root by `cargo xtask test`).
    use super::*;
    use crate::python::fake_memory::{FakeMemory, POOL};
    use crate::python::layout::{TP_FLAGS, TPFLAGS_UNICODE_SUBCLASS, TYPE_HEAD_LEN};
    use proptest::prelude::*;

    const CODE_TYPE: u64 = 0x10_000;
    const STR_TYPE: u64 = 0x11_000;
    const BYTES_TYPE: u64 = 0x12_000;
    const TYPE_NAME: u64 = 0x13_000;
    const CODE: u64 = 0x20_000;

    fn type_object(flags: u64, basicsize: u64, name: u64) -> Vec<u8> {
        let mut t = vec![0u8; TYPE_HEAD_LEN];
        t[TP_NAME as usize..][..8].copy_from_slice(&name.to_ne_bytes());
        t[TP_BASICSIZE as usize..][..8].copy_from_slice(&basicsize.to_ne_bytes());
        t[TP_FLAGS as usize..][..8].copy_from_slice(&flags.to_ne_bytes());
        t
    }

    fn put_str(mem: &mut FakeMemory, at: u64, minor: u8, text: &str) {
        let layout = layout_for(minor).expect("layout");
        let mut s = vec![0u8; layout.ascii_size as usize];
        s[8..16].copy_from_slice(&STR_TYPE.to_ne_bytes());
        s[16..24].copy_from_slice(&(text.len() as u64).to_ne_bytes());
        // ready, compact, ASCII, kind 1.
        s[32..36].copy_from_slice(&0xe4u32.to_ne_bytes());
        s.extend_from_slice(text.as_bytes());
        mem.put(at, &s);
    }

    fn put_bytes(mem: &mut FakeMemory, at: u64, data: &[u8]) {
        let mut b = vec![0u8; BYTES_DATA as usize];
        b[8..16].copy_from_slice(&BYTES_TYPE.to_ne_bytes());
        b[16..24].copy_from_slice(&(data.len() as u64).to_ne_bytes());
        b.extend_from_slice(data);
        mem.put(at, &b);
    }

    /// A 3.`minor` code object at CODE for `def run():` on line 40 of "app.py", 8 code units
    /// long: units 0–3 on line 41, 4–7 on line 43 (the same in every table format).
    fn fake(minor: u8) -> FakeMemory {
        let layout = static_layout(minor).expect("layout");
        let mut mem = FakeMemory::new();
        mem.put(CODE_TYPE, &type_object(0, layout.basicsize, TYPE_NAME))
            .put(TYPE_NAME, b"code\0")
            .put(STR_TYPE, &type_object(TPFLAGS_UNICODE_SUBCLASS, 0, 0))
            .put(BYTES_TYPE, &type_object(TPFLAGS_BYTES_SUBCLASS, 0, 0));
        let (filename, qualname, name, table, bytecode) =
            (0x30_000, 0x31_000, 0x32_000, 0x33_000, 0x34_000);
        let mut obj = vec![0u8; (layout.basicsize + 16) as usize];
        let mut set = |at: u64, v: u64| obj[at as usize..][..8].copy_from_slice(&v.to_ne_bytes());
        set(OB_TYPE, CODE_TYPE);
        set(16, 8);
        set(layout.filename, filename);
        set(layout.name, name);
        if let Some(q) = layout.qualname {
            set(q, qualname);
        }
        set(layout.table, table);
        if let Bytecode::Object(at) = layout.bytecode {
            set(at, bytecode);
        }
        obj[layout.firstlineno as usize..][..4].copy_from_slice(&40i32.to_ne_bytes());
        mem.put(CODE, &obj);
        put_str(&mut mem, filename, minor, "app.py");
        put_str(&mut mem, name, minor, "run");
        put_str(&mut mem, qualname, minor, "Job.run");
        put_bytes(&mut mem, bytecode, &[0; 16]);
        let table_bytes: &[u8] = match layout.format {
            Format::Lnotab => &[0, 1, 8, 2],
            Format::Linetable310 => &[8, 1, 8, 2],
            // Two no-column entries of 4 units: +1, +2.
            Format::Locations => &[0x80 | (13 << 3) | 3, 2, 0x80 | (13 << 3) | 3, 4],
        };
        put_bytes(&mut mem, table, table_bytes);
        mem
    }

    /// The position of code unit `unit` the way the kernel reads it on 3.`minor`.
    fn position(minor: u8, unit: i64) -> InstrPosition {
        let adaptive = static_layout(minor).expect("layout").basicsize;
        match minor {
            8 | 9 => InstrPosition::LastiBytes(if unit == -1 { -1 } else { 2 * unit }),
            10 => InstrPosition::LastiUnits(unit),
            _ => InstrPosition::InstrPtr((CODE + adaptive).wrapping_add((2 * unit) as u64)),
        }
    }

    #[test]
    fn made_up_code_objects_of_every_version() {
        for minor in 8..=15 {
            let mem = fake(minor);
            let mut sym = Symbolizer::new(&mem, (3, minor), None).expect("symbolizer");
            let qualname = if minor >= 11 { "Job.run" } else { "run" };
            for (unit, line) in [(0, 41), (3, 41), (4, 43), (7, 43), (-1, 40)] {
                if unit == -1 && minor >= 13 {
                    continue;
                }
                let got = sym.locate(CODE, position(minor, unit)).expect("locate");
                assert_eq!(
                    got,
                    CodeLocation {
                        qualname: qualname.into(),
                        filename: "app.py".into(),
                        line: Some(line),
                        first_line: 40,
                    },
                    "3.{minor}, unit {unit}"
                );
            }
            let got = sym.locate(CODE, InstrPosition::Unknown).expect("unknown");
            assert_eq!((got.line, got.first_line), (None, 40));
            // Past the bytecode, odd, before it, or another version's kind of position.
            let wrong_kind = if minor >= 11 {
                InstrPosition::LastiBytes(0)
            } else {
                InstrPosition::InstrPtr(CODE)
            };
            for pos in [position(minor, 8), position(minor, -3), wrong_kind] {
                let r = sym.locate(CODE, pos);
                assert!(r.is_err(), "3.{minor}: {pos:?} gave {r:?}");
            }
            if minor >= 13 {
                assert!(sym.locate(CODE, position(minor, -1)).is_err());
            }
            if minor <= 9 {
                assert!(sym.locate(CODE, InstrPosition::LastiBytes(3)).is_err());
            }
        }
    }

    #[test]
    fn a_code_object_is_read_once() {
        let mem = fake(12);
        let mut sym = Symbolizer::new(&mem, (3, 12), None).expect("symbolizer");
        sym.locate(CODE, position(12, 0)).expect("first");
        let reads = mem.reads.get();
        assert!(reads <= 16, "{reads} reads for one code object");
        let again = sym.locate(CODE, position(12, 5)).expect("second");
        assert_eq!(again.line, Some(43));
        assert_eq!(mem.reads.get(), reads, "the second position read memory");
    }

    #[test]
    fn tagged_stack_references_on_3_14() {
        let mem = fake(14);
        let mut sym = Symbolizer::new(&mem, (3, 14), None).expect("symbolizer");
        let plain = sym.locate(CODE, position(14, 4)).expect("plain");
        let tagged = sym.locate(CODE | 1, position(14, 4)).expect("tagged");
        assert_eq!(plain, tagged);
        // Before 3.14 the bits are not tags: an odd address is not an object.
        let mem = fake(13);
        let mut sym = Symbolizer::new(&mem, (3, 13), None).expect("symbolizer");
        assert!(sym.locate(CODE | 1, position(13, 4)).is_err());
    }

    #[test]
    fn only_a_code_type_passes() {
        for (name, basicsize_delta) in [(&b"codex\0"[..], 0i64), (b"cod\0", 0), (b"code\0", 8)] {
            let mut mem = fake(11);
            mem.put(TYPE_NAME, name);
            let basicsize = (184 + basicsize_delta) as u64;
            mem.put(CODE_TYPE, &type_object(0, basicsize, TYPE_NAME));
            let mut sym = Symbolizer::new(&mem, (3, 11), None).expect("symbolizer");
            let r = sym.locate(CODE, position(11, 0));
            assert!(r.is_err(), "{name:?}/{basicsize}: {r:?}");
        }
        // A code object whose strings are not strs.
        let mut mem = fake(11);
        let mut obj = vec![0u8; 200];
        mem.read(CODE, &mut obj).expect("code object");
        obj[112..120].copy_from_slice(&BYTES_TYPE.to_ne_bytes());
        mem.put(CODE, &obj);
        let mut sym = Symbolizer::new(&mem, (3, 11), None).expect("symbolizer");
        assert!(sym.locate(CODE, position(11, 0)).is_err());
    }

    #[test]
    fn unsupported_versions_are_refused() {
        let mem = FakeMemory::new();
        for v in [(3, 7), (3, 16), (2, 7)] {
            assert!(Symbolizer::new(&mem, v, None).is_err(), "{v:?}");
        }
        // 3.14 with a runtime address but no table there.
        let mut mem = FakeMemory::new();
        mem.put(0x1000, &[0u8; 1024]);
        assert!(Symbolizer::new(&mem, (3, 14), Some(0x1000)).is_err());
        assert!(Symbolizer::new(&mem, (3, 13), Some(0x1000)).is_ok());
    }

    fn pool_addr() -> impl Strategy<Value = u64> {
        prop_oneof![
            (0u64..64).prop_map(|k| POOL + k * 0x40),
            any::<u64>(),
            Just(0u64),
            Just(u64::MAX - 7),
        ]
    }

    fn any_position() -> impl Strategy<Value = InstrPosition> {
        prop_oneof![
            any::<i64>().prop_map(InstrPosition::LastiBytes),
            (-2i64..64).prop_map(InstrPosition::LastiUnits),
            pool_addr().prop_map(InstrPosition::InstrPtr),
            Just(InstrPosition::Unknown),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// Garbage everywhere: an error, within the read budget, never a panic.
        #[test]
        fn garbage_is_an_error(seed in any::<u64>(), minor in 8u8..=15, code in pool_addr(),
                               pos in any_position()) {
            let mem = FakeMemory::garbage(seed);
            let mut sym = Symbolizer::new(&mem, (3, minor), None).expect("symbolizer");
            prop_assert!(sym.locate(code, pos).is_err());
            prop_assert!(mem.reads.get() <= READ_BUDGET.0);
        }

        /// A real code type, garbage for the object: the str, bytes and table readers past the
        /// type check get garbage; bounded, and never a panic.
        #[test]
        fn garbage_behind_a_code_type(seed in any::<u64>(), minor in 8u8..=15,
                                      pos in any_position()) {
            let layout = static_layout(minor).expect("layout");
            let mut mem = FakeMemory::garbage(seed);
            mem.put(CODE_TYPE, &type_object(0, layout.basicsize, TYPE_NAME))
                .put(TYPE_NAME, b"code\0")
                .put_u64(POOL + 8, CODE_TYPE);
            let mut sym = Symbolizer::new(&mem, (3, minor), None).expect("symbolizer");
            let _ = sym.locate(POOL, pos);
            prop_assert!(mem.reads.get() <= READ_BUDGET.0);
            prop_assert!(mem.largest_read.get() as u64 <= MAX_TABLE_BYTES);
        }
    }

    /// The sid binaries' `_Py_DebugOffsets` (from the ELF, no process needed) give the code
    /// offsets the static layouts hold.
    #[test]
    fn code_offsets_of_sid_tables() {
        use crate::python::debug_offsets::{DEBUG_TABLE_LEN, debug_table};
        use crate::python::naming::tests::{SID, missing_fixture};
        use object::{Object, ObjectSection};
        for minor in 13..=15u8 {
            let path = format!("{SID}/usr/bin/python3.{minor}");
            let Ok(data) = std::fs::read(&path) else {
                missing_fixture(&path);
                continue;
            };
            let file = object::File::parse(&*data).expect("ELF");
            let raw = file
                .section_by_name(".PyRuntime")
                .and_then(|s| s.data().ok())
                .expect(".PyRuntime");
            let v = debug_table(minor)
                .expect("table")
                .check(&raw[..DEBUG_TABLE_LEN])
                .unwrap_or_else(|e| panic!("{path}: {e:#}"));
            assert_eq!(
                CodeLayout::from_table(&v.code),
                static_layout(minor).expect("layout"),
                "{path}"
            );
        }
    }

    mod live {
        //! A real interpreter parks threads at known lines (scripts/workloads/code_positions.py)
        //! and prints every frame as it sees it; the symbolizer, reading from outside, must
        //! say the same for the position the kernel would have read.
        use super::super::*;
        use crate::python::memory::ProcessMemory;
        use crate::python::naming::tests::{SID, missing_fixture, pyenv, sid};
        use std::io::{BufRead, BufReader};
        use std::process::{Child, Command, Stdio};

        const WORKLOAD: &str = "code_positions.py";

        struct Frame {
            code: u64,
            lasti: i64,
            line: i64,
            first_line: u32,
            qualname: String,
            filename: String,
        }

        struct Workload {
            child: Child,
            frames: Vec<Frame>,
            /// (code, start byte, end byte, line or -1) as `co_lines()` says.
            ranges: Vec<(u64, i64, i64, i64)>,
            basicsize: u64,
            runtime: u64,
            hexversion: u64,
        }

        impl Drop for Workload {
            fn drop(&mut self) {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }

        fn workload_path() -> std::path::PathBuf {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../scripts/workloads")
                .join(WORKLOAD)
        }

        fn unhex(h: &str) -> String {
            let bytes: Vec<u8> = (0..h.len() / 2)
                .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).expect("hex"))
                .collect();
            String::from_utf8(bytes).expect("UTF-8")
        }

        fn start(argv: &[String]) -> Workload {
            let mut child = Command::new(&argv[0])
                .args(&argv[1..])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn python");
            let stdout = child.stdout.take().expect("stdout");
            let mut w = Workload {
                child,
                frames: Vec::new(),
                ranges: Vec::new(),
                basicsize: 0,
                runtime: 0,
                hexversion: 0,
            };
            for line in BufReader::new(stdout).lines() {
                let line = line.expect("line");
                let f: Vec<&str> = line.split(' ').collect();
                match f[0] {
                    "F" => w.frames.push(Frame {
                        code: f[1].parse().expect("code"),
                        lasti: f[2].parse().expect("lasti"),
                        line: f[3].parse().expect("lineno"),
                        first_line: f[4].parse().expect("firstlineno"),
                        qualname: unhex(f[5]),
                        filename: unhex(f[6]),
                    }),
                    "L" => w.ranges.push((
                        f[1].parse().expect("code"),
                        f[2].parse().expect("start"),
                        f[3].parse().expect("end"),
                        f[4].parse().expect("line"),
                    )),
                    "B" => w.basicsize = f[1].parse().expect("basicsize"),
                    "R" => w.runtime = f[1].parse().expect("runtime"),
                    "V" => w.hexversion = f[1].parse().expect("version"),
                    "READY" => break,
                    _ => panic!("unexpected line {line}"),
                }
            }
            assert!(
                !w.frames.is_empty(),
                "{argv:?}: the workload printed no frames"
            );
            w
        }

        /// (qualname, line) of every `# PARK:` line of the workload, and the two generated
        /// functions (their lines as the workload's source string builds them).
        fn parked_at() -> Vec<(String, i64)> {
            let text = std::fs::read_to_string(workload_path()).expect("workload");
            let mut out: Vec<(String, i64)> = text
                .lines()
                .enumerate()
                .filter_map(|(i, l)| {
                    let name = l.split("# PARK: ").nth(1)?;
                    Some((name.trim().to_string(), i as i64 + 1))
                })
                .collect();
            out.push(("far300".into(), 302));
            out.push(("far5000".into(), 303 + 5001));
            out
        }

        /// Where the kernel would find a frame at byte `lasti` of `code` (Python's `f_lasti`
        /// is in bytes in every version).
        fn kernel_position(minor: u8, code: u64, lasti: i64, basicsize: u64) -> InstrPosition {
            match minor {
                8 | 9 => InstrPosition::LastiBytes(lasti),
                10 => InstrPosition::LastiUnits(lasti / 2),
                _ => InstrPosition::InstrPtr(code + basicsize + lasti as u64),
            }
        }

        fn check(argv: Option<Vec<String>>, minor: u8, label: &str) {
            let Some(argv) = argv else {
                missing_fixture(label);
                return;
            };
            let w = start(&argv);
            assert_eq!(
                (w.hexversion >> 16) & 0xffff,
                0x0300 | u64::from(minor),
                "{label}: sys.hexversion {:#x}",
                w.hexversion
            );
            let mem = ProcessMemory::new(w.child.id());
            let mut runtimes = vec![Some(w.runtime)];
            if minor >= 13 {
                // The static offsets must do as well as the table.
                runtimes.push(None);
            }
            for runtime in runtimes {
                let mut sym = Symbolizer::new(&mem, (3, minor), runtime)
                    .unwrap_or_else(|e| panic!("{label}: {e:#}"));
                let mut seen = Vec::new();
                for f in &w.frames {
                    let pos = kernel_position(minor, f.code, f.lasti, w.basicsize);
                    let got = sym
                        .locate(f.code, pos)
                        .unwrap_or_else(|e| panic!("{label}: {} {pos:?}: {e:#}", f.qualname));
                    let want = CodeLocation {
                        qualname: f.qualname.clone(),
                        filename: f.filename.clone(),
                        line: u32::try_from(f.line).ok(),
                        first_line: f.first_line,
                    };
                    assert_eq!(got, want, "{label}: {pos:?} (f_lasti {})", f.lasti);
                    seen.push((got.qualname, i64::from(got.line.unwrap_or(0))));
                }
                for (qualname, line) in parked_at() {
                    // Before 3.11 a code object has only its name.
                    let name = if minor >= 11 {
                        qualname.as_str()
                    } else {
                        qualname.rsplit('.').next().unwrap_or(&qualname)
                    };
                    assert!(
                        seen.iter().any(|(q, l)| q == name && *l == line),
                        "{label}: no frame {name} at line {line}"
                    );
                }
                // Every instruction of every code object on those stacks (threading's included).
                let mut instructions = 0;
                for &(code, start, end, line) in &w.ranges {
                    for at in (start..end).step_by(2) {
                        let pos = kernel_position(minor, code, at, w.basicsize);
                        let got = sym
                            .locate(code, pos)
                            .unwrap_or_else(|e| panic!("{label}: {code:#x} {pos:?}: {e:#}"));
                        let want = u32::try_from(line).ok();
                        assert_eq!(got.line, want, "{label}: {} byte {at}", got.qualname);
                        instructions += 1;
                    }
                }
                assert!(instructions > 300, "{label}: {instructions} instructions");
                // Not a code object, and a position outside the code object.
                assert!(sym.locate(w.runtime, InstrPosition::Unknown).is_err());
                let f = &w.frames[0];
                let outside = match minor {
                    8 | 9 => InstrPosition::LastiBytes(1 << 20),
                    10 => InstrPosition::LastiUnits(1 << 20),
                    _ => InstrPosition::InstrPtr(f.code + w.basicsize + (1 << 20)),
                };
                assert!(sym.locate(f.code, outside).is_err(), "{label}: {outside:?}");
                eprintln!(
                    "{label}: {} frames and {instructions} instructions symbolized exactly \
                     (runtime {runtime:?})",
                    w.frames.len()
                );
            }
        }

        fn check_pyenv(minor: u8) {
            let argv = pyenv(minor).map(|p| vec![p, workload_path().display().to_string()]);
            check(argv, minor, &format!("pyenv Python 3.{minor}"));
        }

        fn check_sid(minor: u8) {
            let argv = sid(minor).map(|mut argv| {
                let dir = std::path::Path::new(SID).join("tmp/gilwatch-workloads");
                std::fs::create_dir_all(&dir).expect("sid workload dir");
                std::fs::copy(workload_path(), dir.join(WORKLOAD)).expect("copy workload");
                argv.push(format!("/tmp/gilwatch-workloads/{WORKLOAD}"));
                argv
            });
            check(argv, minor, &format!("{SID}/usr/bin/python3.{minor}"));
        }

        #[test]
        #[ignore = "needs root and pyenv"]
        fn code_3_8() {
            check_pyenv(8);
        }

        #[test]
        #[ignore = "needs root and pyenv"]
        fn code_3_9() {
            check_pyenv(9);
        }

        #[test]
        #[ignore = "needs root and pyenv"]
        fn code_3_10() {
            check_pyenv(10);
        }

        #[test]
        #[ignore = "needs root and pyenv"]
        fn code_3_11() {
            check_pyenv(11);
        }

        #[test]
        #[ignore = "needs root and pyenv"]
        fn code_3_12() {
            check_pyenv(12);
        }

        #[test]
        #[ignore = "needs root and pyenv"]
        fn code_3_13() {
            check_pyenv(13);
        }

        #[test]
        #[ignore = "needs root and pyenv"]
        fn code_debian_3_11() {
            let bin = "/usr/bin/python3.11";
            let argv = std::path::Path::new(bin)
                .exists()
                .then(|| vec![bin.to_string(), workload_path().display().to_string()]);
            check(argv, 11, bin);
        }

        #[test]
        #[ignore = "needs root and the sid root"]
        fn code_sid_3_13() {
            check_sid(13);
        }

        #[test]
        #[ignore = "needs root and the sid root"]
        fn code_sid_3_14() {
            check_sid(14);
        }

        #[test]
        #[ignore = "needs root and the sid root"]
        fn code_sid_3_15() {
            check_sid(15);
        }
    }
}
