//! When an observer's probes are in place, seen from the target's side: the kernel puts a uprobe
//! by writing a breakpoint (int3, 0xCC) at the probed instruction in the process's copy of the
//! page. Reading those bytes in /proc/PID/mem works the same for gilwatch and for bpftrace,
//! whatever each does with its file descriptors.
use std::{fs::File, os::unix::fs::FileExt as _, path::Path, process::Command};

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

/// True when every point has a breakpoint in the process's memory.
pub fn all_armed(pid: u32, points: &[Point]) -> bool {
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return false;
    };
    let Ok(mem) = File::open(format!("/proc/{pid}/mem")) else {
        return false;
    };
    points.iter().all(|p| {
        address(&maps, p).is_some_and(|addr| {
            let mut b = [0u8; 1];
            mem.read_exact_at(&mut b, addr).is_ok() && b[0] == 0xCC
        })
    })
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
