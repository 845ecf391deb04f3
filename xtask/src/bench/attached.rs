//! When an observer's probes are in place, seen from the target's side: the kernel puts a uprobe
//! by writing a breakpoint (int3, 0xCC) at the probed instruction in the process's copy of the
//! page. Reading those bytes in /proc/PID/mem works the same for gilwatch and for bpftrace,
//! whatever each does with its file descriptors.
use std::{
    fs::File,
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// A probed instruction: the object's file name and the file offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    pub object: String,
    pub offset: u64,
}

/// gilwatch's plan for a process, from `gilwatch doctor` (lines like
/// `  probe      take_gil             at libpython3.11.so.1.0+0x24f7b0 → take_gil_tentative_arg0`).
pub fn gilwatch_points(gilwatch: &Path, pid: u32) -> anyhow::Result<Vec<Point>> {
    let out = Command::new(gilwatch)
        .args(["doctor", "-p", &pid.to_string()])
        .output()
        .context("running gilwatch doctor")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut points: Vec<Point> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("probe "))
        .filter_map(|l| parse_point(l.split(" at ").nth(1)?.split_whitespace().next()?))
        .collect();
    points.dedup();
    if points.is_empty() {
        bail!(
            "gilwatch doctor lists no probes: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(points)
}

fn parse_point(s: &str) -> Option<Point> {
    let (object, off) = s.rsplit_once("+0x")?;
    Some(Point {
        object: object.to_owned(),
        offset: u64::from_str_radix(off, 16).ok()?,
    })
}

/// The libc a process maps (its path as the process sees it: bpftrace -p resolves it in the
/// process's root) and the entries of its pthread_mutex_lock and pthread_mutex_unlock, where
/// bpftrace puts its probes.
pub fn libc_mutex_points(pid: u32) -> anyhow::Result<(PathBuf, Vec<Point>)> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .with_context(|| format!("reading /proc/{pid}/maps"))?;
    let path = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libc.so.6"))
        .with_context(|| format!("PID {pid} maps no libc.so.6"))?;
    // A path in /proc/PID/maps is as the reader sees it when it can see the process's root
    // (then /proc/PID/root reads as that directory), else as the process does: made relative
    // to the process's root either way, and read through /proc/PID/root.
    let root = std::fs::read_link(format!("/proc/{pid}/root")).unwrap_or_else(|_| "/".into());
    let inside = match Path::new(path).strip_prefix(&root) {
        Ok(rel) if root != Path::new("/") => Path::new("/").join(rel),
        _ => PathBuf::from(path),
    };
    let lib = PathBuf::from(format!("/proc/{pid}/root{}", inside.display()));
    let text = |cmd: &mut Command| -> anyhow::Result<String> {
        let out = cmd.output().context("running binutils")?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let symbols = text(Command::new("nm").args(["-D", "--defined-only"]).arg(&lib))?;
    let segments = text(Command::new("readelf").args(["-lW"]).arg(&lib))?;
    // LOAD lines: Offset VirtAddr PhysAddr FileSiz MemSiz Flg Align.
    let loads: Vec<(u64, u64, u64)> = segments
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.first() != Some(&"LOAD") {
                return None;
            }
            let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
            Some((hex(f.get(1)?)?, hex(f.get(2)?)?, hex(f.get(5)?)?))
        })
        .collect();
    let object = path.rsplit('/').next().unwrap_or(path).to_owned();
    let mut points = Vec::new();
    for name in ["pthread_mutex_lock", "pthread_mutex_unlock"] {
        let vaddr = symbols
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let sym = f.get(2)?.split('@').next()?;
                (sym == name).then(|| u64::from_str_radix(f[0], 16).ok())?
            })
            .with_context(|| format!("{} exports no {name}", lib.display()))?;
        let (off, va, _) = loads
            .iter()
            .find(|(_, va, mem)| (*va..va + mem).contains(&vaddr))
            .with_context(|| format!("{name} is in no LOAD segment of {}", lib.display()))?;
        points.push(Point {
            object: object.clone(),
            offset: vaddr - va + off,
        });
    }
    Ok((inside, points))
}

/// The probed instructions of one process, resolved to addresses once: watching for the
/// breakpoints then reads a byte each, not the maps of a process with 1000 threads' stacks
/// every time (which slowed what it measures).
pub struct Armed {
    mem: Option<File>,
    addrs: Vec<u64>,
}

impl Armed {
    pub fn new(pid: u32, points: &[Point]) -> anyhow::Result<Armed> {
        if points.is_empty() {
            return Ok(Armed {
                mem: None,
                addrs: Vec::new(),
            });
        }
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .with_context(|| format!("reading /proc/{pid}/maps"))?;
        let addrs = points
            .iter()
            .map(|p| {
                address(&maps, p)
                    .with_context(|| format!("{}+{:#x} is not mapped in {pid}", p.object, p.offset))
            })
            .collect::<anyhow::Result<Vec<u64>>>()?;
        let mem = File::open(format!("/proc/{pid}/mem"))
            .with_context(|| format!("opening /proc/{pid}/mem"))?;
        Ok(Armed {
            mem: Some(mem),
            addrs,
        })
    }

    /// True when every point has a breakpoint in the process's memory.
    pub fn all(&self) -> bool {
        let Some(mem) = &self.mem else { return true };
        self.addrs.iter().all(|&addr| {
            let mut b = [0u8; 1];
            mem.read_exact_at(&mut b, addr).is_ok() && b[0] == 0xCC
        })
    }
}

/// Virtual address of a file offset, from the mapping that covers it.
fn address(maps: &str, p: &Point) -> Option<u64> {
    maps.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let path = *f.get(5)?;
        if !path.ends_with(&format!("/{}", p.object)) {
            return None;
        }
        let (start, end) = f.first()?.split_once('-')?;
        let start = u64::from_str_radix(start, 16).ok()?;
        let end = u64::from_str_radix(end, 16).ok()?;
        let file_off = u64::from_str_radix(f.get(2)?, 16).ok()?;
        let addr = start + p.offset.checked_sub(file_off)?;
        (addr < end).then_some(addr)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_a_file_offset_to_its_address() {
        let maps = "7f0000000000-7f0000100000 r--p 00000000 08:01 1 /usr/lib/libpython3.11.so.1.0\n\
                    7f0000100000-7f0000400000 r-xp 00100000 08:01 1 /usr/lib/libpython3.11.so.1.0\n";
        let p = parse_point("libpython3.11.so.1.0+0x24f7b0").expect("point");
        assert_eq!(p.offset, 0x24f7b0);
        assert_eq!(address(maps, &p), Some(0x7f000024f7b0));
        let outside = Point {
            object: p.object.clone(),
            offset: 0x500000,
        };
        assert_eq!(address(maps, &outside), None);
    }
}
