//! CPython's tables from bytecode position to source line, decoded from their raw bytes.
//!
//! Three formats (Objects/codeobject.c and Objects/lnotab_notes.txt of each version):
//! - 3.8–3.9 `co_lnotab`: (bytecode delta u8, line delta i8) pairs; a position after the last
//!   pair keeps the last line.
//! - 3.10 `co_linetable`: (byte length u8, line delta i8) pairs, one per address range; line
//!   delta -128 marks a range without a line.
//! - 3.11+ location table `co_linetable` (PEP 626/657): entries of a first byte `1 code:4
//!   length-1:3` (length in code units) and, by code, varints for the line delta and columns.
//!
//! A table comes from another process's memory and may be garbage: every read is bounds
//! checked, and a table that does not cover the position, or whose entries do not parse, is
//! an error, never a guess.

use anyhow::{Result, bail};

/// Which table a code object carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Format {
    Lnotab,
    Linetable310,
    Locations,
}

/// A position's line: `Ok(None)` when the table says the instruction has no line (compiler
/// artefacts such as the implicit `return None` of some 3.10+ code).
///
/// `addr` is in bytes from the start of the bytecode, the unit `PyCode_Addr2Line` takes; a
/// negative one (a frame that has not started) is on the first line, as CPython has it.
pub(super) fn line_at(
    format: Format,
    table: &[u8],
    first_line: i64,
    addr: i64,
) -> Result<Option<i64>> {
    let line = match format {
        _ if addr < 0 => Some(first_line),
        Format::Lnotab => Some(lnotab(table, first_line, addr)?),
        Format::Linetable310 => linetable_310(table, first_line, addr)?,
        // Entries count 2-byte code units.
        Format::Locations => locations(table, first_line, addr / 2)?,
    };
    match line {
        Some(l) if l < 0 => bail!("line table gives line {l} at byte {addr}"),
        _ => Ok(line),
    }
}

fn lnotab(table: &[u8], first_line: i64, addr: i64) -> Result<i64> {
    let mut line = first_line;
    let mut at = 0i64;
    for pair in table.chunks_exact(2) {
        at += i64::from(pair[0]);
        if at > addr {
            break;
        }
        line += i64::from(pair[1] as i8);
    }
    Ok(line)
}

fn linetable_310(table: &[u8], first_line: i64, addr: i64) -> Result<Option<i64>> {
    let mut computed = first_line;
    let mut end = 0i64;
    for pair in table.chunks_exact(2) {
        end += i64::from(pair[0]);
        let delta = pair[1] as i8;
        let line = if delta == -128 {
            None
        } else {
            computed += i64::from(delta);
            Some(computed)
        };
        // Ranges are contiguous from 0, so the first that ends past `addr` holds it.
        if end > addr {
            return Ok(line);
        }
    }
    bail!(
        "3.10 line table ({} bytes) ends before byte {addr}",
        table.len()
    )
}

// Location entry codes (Include/cpython/code.h, `_PyCodeLocationInfoKind`).
const NONE: u8 = 15;
const LONG: u8 = 14;
const NO_COLUMNS: u8 = 13;
const ONE_LINE0: u8 = 10;
const ONE_LINE2: u8 = 12;

fn locations(table: &[u8], first_line: i64, unit: i64) -> Result<Option<i64>> {
    let mut line = first_line;
    let mut start = 0i64;
    let mut i = 0;
    while i < table.len() {
        let head = table[i];
        if head & 0x80 == 0 {
            bail!("location table: byte {i} should start an entry ({head:#x})");
        }
        let code = (head >> 3) & 15;
        let len = i64::from(head & 7) + 1;
        let mut next = i + 1;
        line += match code {
            LONG | NO_COLUMNS => signed_varint(table, &mut next)?,
            ONE_LINE0..=ONE_LINE2 => i64::from(code - ONE_LINE0),
            _ => 0,
        };
        if unit < start + len {
            return Ok((code != NONE).then_some(line));
        }
        start += len;
        // Columns follow; only an entry's first byte has the top bit set.
        i = next;
        while i < table.len() && table[i] & 0x80 == 0 {
            i += 1;
        }
    }
    bail!(
        "location table ({} bytes) ends before code unit {unit}",
        table.len()
    )
}

/// 6-bit chunks, least significant first, bit 6 set on all but the last.
fn varint(table: &[u8], at: &mut usize) -> Result<u64> {
    let mut value = 0u64;
    let mut shift = 0;
    loop {
        let Some(&b) = table.get(*at) else {
            bail!("location table: varint runs past the end");
        };
        *at += 1;
        // Line deltas fit in an int: more than six chunks is not a table CPython wrote.
        if shift > 30 {
            bail!("location table: varint too long");
        }
        value |= u64::from(b & 63) << shift;
        if b & 64 == 0 {
            return Ok(value);
        }
        shift += 6;
    }
}

/// Zig-zag-like: the low bit is the sign.
fn signed_varint(table: &[u8], at: &mut usize) -> Result<i64> {
    let v = varint(table, at)?;
    let magnitude = (v >> 1) as i64;
    Ok(if v & 1 != 0 { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What a location entry says, for the test encoder.
    #[derive(Clone, Debug)]
    enum Entry {
        /// `len` code units on `line` (absolute), encoded in the form `form` picks.
        Line {
            len: u8,
            line: i64,
            form: u8,
        },
        NoLine {
            len: u8,
        },
    }

    fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 64 {
            out.push(64 | (v & 63) as u8);
            v >>= 6;
        }
        out.push(v as u8);
    }

    fn put_svarint(out: &mut Vec<u8>, v: i64) {
        put_varint(
            out,
            if v < 0 {
                (v.unsigned_abs() << 1) | 1
            } else {
                (v as u64) << 1
            },
        );
    }

    /// Encodes entries the way CPython's assembler can (Python/assemble.c `write_location_info_entry`),
    /// each in the requested form when that form can express it.
    fn encode(entries: &[Entry], first_line: i64) -> (Vec<u8>, Vec<Option<i64>>) {
        let mut out = Vec::new();
        let mut per_unit = Vec::new();
        let mut line = first_line;
        for e in entries {
            match *e {
                Entry::NoLine { len } => {
                    out.push(0x80 | (NONE << 3) | (len - 1));
                    per_unit.extend(std::iter::repeat_n(None, len.into()));
                }
                Entry::Line {
                    len,
                    line: to,
                    form,
                } => {
                    let delta = to - line;
                    let head = |code: u8| 0x80 | (code << 3) | (len - 1);
                    match form % 4 {
                        0 if delta == 0 => {
                            // Short form: column group 3, one byte of columns.
                            out.push(head(3));
                            out.push(0x25);
                        }
                        1 if (0..=2).contains(&delta) => {
                            out.push(head(ONE_LINE0 + delta as u8));
                            out.extend([4, 9]);
                        }
                        2 => {
                            out.push(head(NO_COLUMNS));
                            put_svarint(&mut out, delta);
                        }
                        _ => {
                            out.push(head(LONG));
                            put_svarint(&mut out, delta);
                            put_varint(&mut out, 3);
                            put_varint(&mut out, 200);
                            put_varint(&mut out, 7);
                        }
                    }
                    line = to;
                    per_unit.extend(std::iter::repeat_n(Some(to), len.into()));
                }
            }
        }
        (out, per_unit)
    }

    #[test]
    fn lnotab_of_a_known_function() {
        // def f():        (line 10)
        //     a = 1       bytes 0..4 on line 11
        //     <200 lines>
        //     b = 2       bytes 4..8 on line 212: the jump takes two pairs (127 + 74)
        //     return b    bytes 8..12 on line 213 (after the last pair: keeps 213)
        let table = [0, 1, 4, 127, 0, 74, 4, 1];
        let at = |a| line_at(Format::Lnotab, &table, 10, a).unwrap();
        assert_eq!(at(-1), Some(10));
        assert_eq!(at(0), Some(11));
        assert_eq!(at(2), Some(11));
        assert_eq!(at(4), Some(212));
        assert_eq!(at(8), Some(213));
        assert_eq!(at(400), Some(213));
        // A line going back (a loop's jump is attributed to the loop line).
        assert_eq!(
            line_at(Format::Lnotab, &[0, 3, 6, 0xfe], 1, 6).unwrap(),
            Some(2)
        );
    }

    #[test]
    fn linetable_310_of_a_known_function() {
        // 4 bytes on line 6, 2 bytes without a line, 0-length range moving +200 in two steps,
        // 4 bytes on 206.
        let table = [4, 1, 2, 0x80, 0, 127, 4, 73];
        let at = |a| line_at(Format::Linetable310, &table, 5, a);
        assert_eq!(at(-2).unwrap(), Some(5));
        assert_eq!(at(0).unwrap(), Some(6));
        assert_eq!(at(3).unwrap(), Some(6));
        assert_eq!(at(4).unwrap(), None);
        assert_eq!(at(6).unwrap(), Some(206));
        assert_eq!(at(9).unwrap(), Some(206));
        assert!(at(10).is_err(), "past the table");
    }

    #[test]
    fn locations_of_every_form() {
        let entries = [
            Entry::Line {
                len: 1,
                line: 7,
                form: 3,
            },
            Entry::Line {
                len: 8,
                line: 7,
                form: 0,
            },
            Entry::Line {
                len: 3,
                line: 9,
                form: 1,
            },
            Entry::NoLine { len: 2 },
            Entry::Line {
                len: 2,
                line: 5000,
                form: 2,
            },
            Entry::Line {
                len: 4,
                line: 3,
                form: 3,
            },
        ];
        let (table, want) = encode(&entries, 7);
        for (unit, want) in want.iter().enumerate() {
            let got = line_at(Format::Locations, &table, 7, 2 * unit as i64).unwrap();
            assert_eq!(got, *want, "unit {unit}");
        }
        assert_eq!(line_at(Format::Locations, &table, 7, -2).unwrap(), Some(7));
        assert!(line_at(Format::Locations, &table, 7, 2 * want.len() as i64).is_err());
    }

    #[test]
    fn malformed_locations_are_errors() {
        // A first byte without the entry bit.
        assert!(line_at(Format::Locations, &[0x05], 1, 0).is_err());
        // A long entry whose varint runs off the end.
        assert!(line_at(Format::Locations, &[0x80 | (LONG << 3), 0x41], 1, 0).is_err());
        // A line delta that goes below zero.
        let mut t = vec![0x80 | (NO_COLUMNS << 3)];
        put_svarint(&mut t, -50);
        assert!(line_at(Format::Locations, &t, 10, 0).is_err());
        // Endless continuation bits.
        let t = [
            0x80 | (LONG << 3),
            0x7f,
            0x7f,
            0x7f,
            0x7f,
            0x7f,
            0x7f,
            0x7f,
            0x01,
        ];
        assert!(line_at(Format::Locations, &t, 1, 0).is_err());
    }

    fn entry() -> impl Strategy<Value = Entry> {
        prop_oneof![
            (1u8..=8).prop_map(|len| Entry::NoLine { len }),
            (1u8..=8, 0i64..100_000, any::<u8>()).prop_map(|(len, line, form)| Entry::Line {
                len,
                line,
                form
            }),
            (1u8..=8, any::<u8>()).prop_map(|(len, form)| Entry::Line {
                len,
                line: 20,
                form
            }),
        ]
    }

    proptest! {
        /// Whatever CPython could have written decodes back to the lines it encoded.
        #[test]
        fn locations_round_trip(
            first in 0i64..100_000,
            entries in proptest::collection::vec(entry(), 0..40),
        ) {
            let (table, want) = encode(&entries, first);
            for (unit, want) in want.iter().enumerate() {
                let got = line_at(Format::Locations, &table, first, 2 * unit as i64).unwrap();
                prop_assert_eq!(got, *want, "unit {}", unit);
            }
            prop_assert!(line_at(Format::Locations, &table, first, 2 * want.len() as i64).is_err());
        }

        /// Any bytes, any position, any format: a line, no line or an error, never a panic.
        #[test]
        fn garbage_tables_never_panic(
            table in proptest::collection::vec(any::<u8>(), 0..256),
            first in any::<i32>(),
            addr in prop_oneof![any::<i64>(), -2i64..600],
        ) {
            for format in [Format::Lnotab, Format::Linetable310, Format::Locations] {
                if let Ok(Some(line)) = line_at(format, &table, i64::from(first), addr) {
                    prop_assert!(line >= 0);
                }
            }
        }
    }
}
