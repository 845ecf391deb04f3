//! A target's memory made up by a test: chosen bytes at chosen addresses, and optionally garbage
//! everywhere else, so the readers of interpreter state can be fed what a hostile or corrupt
//! process would hold.
use std::cell::Cell;
use std::collections::BTreeMap;
use std::io;

use super::memory::RemoteMemory;

/// Where garbage pointers point: a small pool, so garbage structures link to each other (and
/// loop) instead of failing at the first dereference.
pub const POOL: u64 = 0x7f00_0000_0000;
const POOL_SLOTS: u64 = 64;
const SLOT: u64 = 0x40;
/// Two type objects the garbage points at often, so objects pass the readers' type checks and
/// the walks go deep: one claims to be every kind the readers look for (dict, str, int, with a
/// managed dict and inline values), the other the same with its dict at a fixed offset.
const TYPES: [u64; 2] = [POOL + 0x1_0000, POOL + 0x1_0200];

pub struct FakeMemory {
    regions: BTreeMap<u64, Vec<u8>>,
    /// With a seed, every address outside the regions reads as seeded garbage.
    garbage: Option<u64>,
    /// The largest single read asked for (the readers' allocations follow it).
    pub largest_read: Cell<usize>,
    pub reads: Cell<u64>,
}

impl FakeMemory {
    pub fn new() -> Self {
        Self {
            regions: BTreeMap::new(),
            garbage: None,
            largest_read: Cell::new(0),
            reads: Cell::new(0),
        }
    }

    /// Every address readable, holding pointers into `POOL`, zeros, small numbers and noise.
    pub fn garbage(seed: u64) -> Self {
        let mut mem = Self {
            garbage: Some(seed),
            ..Self::new()
        };
        // tp_basicsize +32, tp_flags +168, tp_dictoffset +288 (x86_64, every version).
        let every_kind: u64 = (1 << 2) | (1 << 4) | (1 << 24) | (1 << 28) | (1 << 29);
        for (ty, flags, dictoffset) in [
            (TYPES[0], every_kind, 0u64),
            (TYPES[1], every_kind & !((1 << 2) | (1 << 4)), 16),
        ] {
            let mut t = vec![0u8; 296];
            t[32..40].copy_from_slice(&16u64.to_ne_bytes());
            t[168..176].copy_from_slice(&flags.to_ne_bytes());
            t[288..296].copy_from_slice(&dictoffset.to_ne_bytes());
            mem.put(ty, &t);
        }
        mem
    }

    pub fn put(&mut self, addr: u64, bytes: &[u8]) -> &mut Self {
        self.regions.insert(addr, bytes.to_vec());
        self
    }

    pub fn put_u64(&mut self, addr: u64, v: u64) -> &mut Self {
        self.put(addr, &v.to_ne_bytes())
    }

    /// The byte at `addr` from the regions, if one holds it.
    fn region_byte(&self, addr: u64) -> Option<u8> {
        let (start, bytes) = self.regions.range(..=addr).next_back()?;
        bytes.get(usize::try_from(addr - start).ok()?).copied()
    }

    fn garbage_byte(seed: u64, addr: u64) -> u8 {
        let h = splitmix(seed ^ (addr / 8));
        let word = match h % 8 {
            0..=2 => POOL + (h >> 8) % POOL_SLOTS * SLOT,
            3 => TYPES[((h >> 8) & 1) as usize],
            4 => 0,
            5 => (h >> 8) % 32,
            6 => (h >> 8) & 0xffff_ffff,
            _ => h,
        };
        word.to_ne_bytes()[(addr % 8) as usize]
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl RemoteMemory for FakeMemory {
    fn pid(&self) -> u32 {
        std::process::id()
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
        self.reads.set(self.reads.get() + 1);
        self.largest_read
            .set(self.largest_read.get().max(buf.len()));
        if addr.checked_add(buf.len() as u64).is_none() {
            return Err(io::Error::from_raw_os_error(libc::EFAULT));
        }
        // Fast path: the whole read inside one region.
        if let Some((start, bytes)) = self.regions.range(..=addr).next_back() {
            let from = (addr - start) as usize;
            if let Some(src) = bytes.get(from..from + buf.len()) {
                buf.copy_from_slice(src);
                return Ok(());
            }
        }
        for (i, b) in buf.iter_mut().enumerate() {
            let a = addr + i as u64;
            *b = match (self.region_byte(a), self.garbage) {
                (Some(v), _) => v,
                (None, Some(seed)) => Self::garbage_byte(seed, a),
                (None, None) => return Err(io::Error::from_raw_os_error(libc::EFAULT)),
            };
        }
        Ok(())
    }
}
