//! Adding one sample to a histogram kept in a hash map: how the GIL and the lock programs
//! aggregate in the kernel.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap},
};
use observer_common::{HIST_BUCKETS, Histogram, bucket_index};

/// One all-zero histogram: the initial value of new entries, which are too big for the 512-byte
/// BPF stack.
#[map]
static ZERO_HIST: Array<Histogram> = Array::with_max_entries(1, 0);

/// The map is full: the sample was not recorded (callers count it, so it is never silent).
pub(crate) struct MapFull;

/// Adds `ns` to `map[key]`, creating the entry on first use.
///
/// Each key is updated only by the thread it names, and one thread never runs on two CPUs at
/// once, so plain (non-atomic) updates are enough.
#[inline(always)]
pub(crate) fn add<K>(map: &HashMap<K, Histogram>, key: &K, ns: u64) -> Result<(), MapFull> {
    let mut h = map.get_ptr_mut(key);
    if h.is_none() {
        let Some(zero) = ZERO_HIST.get_ptr(0) else {
            return Ok(());
        };
        // SAFETY: ZERO_HIST's slot is a valid Histogram that nothing ever writes.
        if map.insert(key, unsafe { &*zero }, 0).is_err() {
            return Err(MapFull);
        }
        h = map.get_ptr_mut(key);
    }
    let Some(h) = h else { return Ok(()) };
    // The mask keeps the index provably inside the array for the verifier.
    let idx = bucket_index(ns) & (HIST_BUCKETS - 1);
    // SAFETY: `h` points at this key's map value, which only the current thread updates.
    unsafe {
        (*h).count += 1;
        (*h).total_ns += ns;
        if ns > (*h).max_ns {
            (*h).max_ns = ns;
        }
        *(*h).buckets.as_mut_ptr().add(idx) += 1;
    }
    Ok(())
}
