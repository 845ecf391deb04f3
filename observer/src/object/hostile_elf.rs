//! Real ELF files and corrupted copies of them, for the property tests of every parser of the
//! target's files: a target can map any bytes, and a debug directory can hold any file.
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use proptest::prelude::*;

/// The seeds: a stripped system binary with build-id and `.gnu_debuglink`, and a small program
/// compiled here, once with its `.symtab` and once stripped with that symtab as MiniDebugInfo.
pub struct Seeds {
    pub stripped: Vec<u8>,
    pub with_symtab: Vec<u8>,
    pub with_minidebuginfo: Vec<u8>,
    /// The xz stream inside `with_minidebuginfo`.
    pub xz: Vec<u8>,
}

pub fn seeds() -> &'static Seeds {
    static SEEDS: OnceLock<Seeds> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("gilwatch-hostile-elf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let src = dir.join("prog.c");
        std::fs::write(
            &src,
            "static int take_gil(int x) { return x * 3; }\n\
             int drop_gil_count;\n\
             int main(int argc, char **argv) { drop_gil_count = take_gil(argc); return 0; }\n",
        )
        .expect("write prog.c");
        let full = dir.join("full");
        let stripped = dir.join("stripped");
        let xz = dir.join("full.xz");
        let mini = dir.join("mini");
        let run = |cmd: &mut Command| {
            let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
            assert!(
                out.status.success(),
                "{cmd:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        };
        run(Command::new("cc")
            .args(["-O1", "-Wl,--build-id", "-o"])
            .arg(&full)
            .arg(&src));
        run(Command::new("strip").arg("-o").arg(&stripped).arg(&full));
        let xz_data = run(Command::new("xz").arg("-c").arg(&full));
        std::fs::write(&xz, &xz_data).expect("write xz");
        let mut section = std::ffi::OsString::from(".gnu_debugdata=");
        section.push(&xz);
        run(Command::new("objcopy")
            .arg("--add-section")
            .arg(section)
            .arg(&stripped)
            .arg(&mini));
        let read = |p: &Path| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let seeds = Seeds {
            stripped: read(Path::new("/usr/bin/true")),
            with_symtab: read(&full),
            with_minidebuginfo: read(&mini),
            xz: xz_data,
        };
        std::fs::remove_dir_all(&dir).ok();
        seeds
    })
}

/// One of the seeds with a few bytes overwritten (mostly in the headers, where the lengths and
/// offsets are) and perhaps cut short.
pub fn corrupted() -> impl Strategy<Value = Vec<u8>> {
    (
        0usize..3,
        proptest::collection::vec((0u8..4, any::<usize>(), any::<u8>()), 1..24),
        prop_oneof![3 => Just(None), 1 => any::<usize>().prop_map(Some)],
    )
        .prop_map(|(which, edits, cut)| {
            let s = seeds();
            let mut data = [&s.stripped, &s.with_symtab, &s.with_minidebuginfo][which].clone();
            corrupt(&mut data, &edits, cut);
            data
        })
}

/// Overwrites bytes: in the ELF and program headers, in the section headers (at the end), or
/// anywhere, or a whole aligned header word with one repeated byte (0xff… is the top of the
/// address space); then cuts the file at `cut` (modulo its length).
pub fn corrupt(data: &mut Vec<u8>, edits: &[(u8, usize, u8)], cut: Option<usize>) {
    let len = data.len();
    if len == 0 {
        return;
    }
    for &(region, at, byte) in edits {
        let pos = match region {
            0 | 3 => at % len.min(0x400),
            1 => len - 1 - at % len.min(0x800),
            _ => at % len,
        };
        if region == 3 {
            let word = pos & !7;
            let end = (word + 8).min(len);
            // Half of them all-ones: the largest address, size or offset a header can say.
            data[word..end].fill(if byte & 1 == 0 { 0xff } else { byte });
        } else {
            data[pos] = byte;
        }
    }
    if let Some(cut) = cut {
        data.truncate(cut % len);
    }
}
