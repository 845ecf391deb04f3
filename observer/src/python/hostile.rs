//! The readers of interpreter state fed garbage: whatever the target's memory holds, no panic,
//! no read larger than the caps, no walk past the read budget; and the checks that turn
//! garbage where an interpreter or a thread list should be into an error.
use std::collections::HashMap;

use proptest::prelude::*;

use super::debug_offsets::debug_table;
use super::layout::{
    MD_DICT, TP_DICTOFFSET, TP_FLAGS, TPFLAGS_DICT_SUBCLASS, TPFLAGS_LONG_SUBCLASS,
    TPFLAGS_UNICODE_SUBCLASS, TYPE_HEAD_LEN, layout_for,
};
use super::memory::{ReadBudget, RemoteMemory};
use super::naming::{READ_BUDGET, thread_names};
use super::objects::{MAX_DICT_ENTRIES, Reader};
use super::walk::main_interpreter;
use crate::python::fake_memory::{FakeMemory, POOL};

/// The largest single read any reader may ask for: dict entries at `MAX_DICT_ENTRIES`.
const LARGEST_READ: usize = 24 * MAX_DICT_ENTRIES as usize;

fn pool_addr() -> impl Strategy<Value = u64> {
    prop_oneof![
        (0u64..64).prop_map(|k| POOL + k * 0x40),
        any::<u64>(),
        Just(0u64),
        Just(u64::MAX - 7),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Garbage everywhere, pointers into a small pool so structures link and loop.
    #[test]
    fn thread_names_survive_garbage(
        seed in any::<u64>(),
        minor in 7u8..=15,
        runtime in pool_addr(),
        tstates in proptest::collection::hash_map(any::<u32>(), pool_addr(), 0..4),
    ) {
        let mem = FakeMemory::garbage(seed);
        let _ = thread_names(&mem, (3, minor), runtime, &tstates);
        prop_assert!(mem.largest_read.get() <= LARGEST_READ, "read of {}", mem.largest_read.get());
        prop_assert!(mem.reads.get() <= READ_BUDGET.0, "{} reads", mem.reads.get());
        let _ = main_interpreter(&mem, (3, minor), runtime);
    }

    /// The object readers past the interpreter checks (which garbage rarely passes), each
    /// minor's layout, starting anywhere in the garbage.
    #[test]
    fn object_readers_survive_garbage(
        seed in any::<u64>(),
        minor in 7u8..=15,
        at in pool_addr(),
    ) {
        let mem = FakeMemory::garbage(seed);
        let budget = ReadBudget::new(&mem, READ_BUDGET.0, READ_BUDGET.1);
        let mut reader = Reader {
            mem: &budget,
            layout: layout_for(minor).expect("layout"),
            types: HashMap::new(),
        };
        let _ = reader.active_thread_names(at);
        let _ = reader.walk_threads(at, 160);
        let _ = reader.dict_items(at);
        let _ = reader.read_str(at);
        let _ = reader.read_ident(at);
        let _ = reader.thread_name(at);
        prop_assert!(mem.largest_read.get() <= LARGEST_READ, "read of {}", mem.largest_read.get());
        prop_assert!(mem.reads.get() <= READ_BUDGET.0);
    }

    /// `_Py_DebugOffsets` of any content and length: an error or values inside their structs.
    #[test]
    fn debug_table_check_survives_garbage(
        minor in 13u8..=15,
        words in proptest::collection::vec(
            prop_oneof![Just(0u64), 0u64..1024, any::<u64>(), Just(u64::MAX)], 0..120),
    ) {
        let raw: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let table = debug_table(minor).expect("table");
        if let Ok(v) = table.check(&raw) {
            prop_assert!(v.tstate_thread_id < 64 << 10 && v.interp_threads_head < 16 << 20);
        }
    }
}

/// A 3.12-shaped runtime whose `interpreters.main` points at `interp`, whose first thread state
/// says it belongs to `owner`.
fn runtime_3_12(interp: u64, owner: u64) -> FakeMemory {
    let layout = layout_for(12).expect("3.12");
    let (runtime, tstate) = (0x1000, 0x9000);
    let mut mem = FakeMemory::new();
    mem.put_u64(runtime + layout.runtime_interp_main, interp)
        .put_u64(interp + layout.interp_threads_head, tstate)
        .put_u64(tstate + 16, owner);
    mem
}

#[test]
fn main_interpreter_must_own_its_first_thread() {
    let mem = runtime_3_12(0x5000, 0x5000);
    assert_eq!(main_interpreter(&mem, (3, 12), 0x1000).unwrap(), 0x5000);
    let mem = runtime_3_12(0x5000, 0x6000);
    let e = main_interpreter(&mem, (3, 12), 0x1000).unwrap_err();
    assert!(format!("{e:#}").contains("is not an interpreter"), "{e:#}");
    // No thread state at all: not a running interpreter either.
    let mem = runtime_3_12(0x5000, 0x5000);
    let mut empty = FakeMemory::new();
    empty.put_u64(0x1000 + 48, 0x5000).put_u64(0x5000 + 72, 0);
    drop(mem);
    assert!(main_interpreter(&empty, (3, 12), 0x1000).is_err());
}

#[test]
fn thread_walk_refuses_a_foreign_thread_state() {
    let layout = layout_for(11).expect("3.11");
    let interp = 0x5000;
    let mut mem = FakeMemory::new();
    // interp → ts1 (ours, tid 11) → ts2 (another interpreter's).
    mem.put_u64(interp + layout.interp_threads_head, 0x8000)
        .put_u64(0x8000 + 16, interp)
        .put_u64(0x8000 + 8, 0x8800)
        .put_u64(0x8000 + 160, 11)
        .put_u64(0x8000 + 152, 0xabc)
        .put_u64(0x8800 + 16, 0x7777)
        .put_u64(0x8800 + 8, 0)
        .put_u64(0x8800 + 160, 12)
        .put_u64(0x8800 + 152, 0xdef);
    let reader = Reader {
        mem: &mem,
        layout,
        types: HashMap::new(),
    };
    let e = reader.walk_threads(interp, 160).unwrap_err();
    assert!(format!("{e:#}").contains("belongs to interpreter"), "{e:#}");
    // The same list without the stranger walks.
    mem.put_u64(0x8000 + 8, 0);
    let reader = Reader {
        mem: &mem,
        layout,
        types: HashMap::new(),
    };
    assert_eq!(reader.walk_threads(interp, 160).unwrap(), vec![(11, 0xabc)]);
}

#[test]
fn a_looping_thread_list_ends() {
    let layout = layout_for(11).expect("3.11");
    let interp = 0x5000;
    let mut mem = FakeMemory::new();
    mem.put_u64(interp + layout.interp_threads_head, 0x8000);
    for (ts, next) in [(0x8000u64, 0x8800u64), (0x8800, 0x8000)] {
        mem.put_u64(ts + 8, next)
            .put_u64(ts + 16, interp)
            .put_u64(ts + 152, ts)
            .put_u64(ts + 160, ts >> 8);
    }
    let reader = Reader {
        mem: &mem,
        layout,
        types: HashMap::new(),
    };
    assert_eq!(reader.walk_threads(interp, 160).unwrap().len(), 2);
}

#[test]
fn exhausting_the_read_budget_is_an_error() {
    // Readable garbage everywhere, every dict claiming the most entries allowed: the walk
    // would read for hours without the budget.
    let mem = FakeMemory::garbage(7);
    let budget = ReadBudget::new(&mem, 10, 1 << 20);
    for _ in 0..10 {
        budget.read_u64(POOL).unwrap();
    }
    assert!(!budget.exhausted());
    assert!(budget.read_u64(POOL).is_err());
    assert!(budget.exhausted());
    let budget = ReadBudget::new(&mem, 10, 16);
    assert!(budget.read(POOL, &mut [0u8; 17]).is_err());
    assert!(budget.exhausted());
}

/// A 3.10 target built to make the naming walk quadratic: `threading._active` holds 100,000
/// entries, each a "thread" whose instance dict is `_active` itself. Without the read budget
/// that is 10^10 reads; with it, an error after at most `READ_BUDGET` reads.
#[test]
fn a_quadratic_object_graph_ends_in_an_error() {
    const N: u64 = 100_000;
    let layout = layout_for(10).expect("3.10");
    let (runtime, interp, tstate) = (0x1000u64, 0x2000u64, 0x3000u64);
    let (t_dict, t_str, t_int, t_thread) = (0x10_000u64, 0x11_000, 0x12_000, 0x13_000);
    let (modules, threading, md_dict) = (0x20_000u64, 0x21_000, 0x22_000);
    // Far above the rest: its 2.4 MB of entries must not cover the other objects.
    let active = 0x100_0000u64;
    let (s_threading, s_active, ident, thread) = (0x30_000u64, 0x31_000, 0x32_000, 0x33_000);
    let keys_at = |d: u64| d + 0x100;
    let mut mem = FakeMemory::new();
    let ty = |flags: u64, dictoffset: u64| {
        let mut t = vec![0u8; TYPE_HEAD_LEN];
        t[TP_FLAGS as usize..][..8].copy_from_slice(&flags.to_ne_bytes());
        t[TP_DICTOFFSET as usize..][..8].copy_from_slice(&dictoffset.to_ne_bytes());
        t
    };
    mem.put(t_dict, &ty(TPFLAGS_DICT_SUBCLASS, 0))
        .put(t_str, &ty(TPFLAGS_UNICODE_SUBCLASS, 0))
        .put(t_int, &ty(TPFLAGS_LONG_SUBCLASS, 0))
        .put(t_thread, &ty(0, 16));
    // A dict with `entries` (key, value) at `d` (3.10: dk_size, then 8-byte indices, entries).
    let dict = |mem: &mut FakeMemory, d: u64, entries: &[(u64, u64)], n: u64| {
        let size = n.next_power_of_two().max(8);
        let mut head = vec![0u8; 48];
        head[8..16].copy_from_slice(&t_dict.to_ne_bytes());
        head[16..24].copy_from_slice(&n.to_ne_bytes());
        head[32..40].copy_from_slice(&keys_at(d).to_ne_bytes());
        mem.put(d, &head);
        let width = if size <= 0xff {
            1
        } else if size <= 0xffff {
            2
        } else {
            4
        };
        let mut keys = vec![0u8; 40 + (size * width) as usize];
        keys[8..16].copy_from_slice(&size.to_ne_bytes());
        keys[32..40].copy_from_slice(&n.to_ne_bytes());
        for i in 0..n as usize {
            let (k, v) = entries[i % entries.len()];
            keys.extend_from_slice(&0u64.to_ne_bytes());
            keys.extend_from_slice(&k.to_ne_bytes());
            keys.extend_from_slice(&v.to_ne_bytes());
        }
        mem.put(keys_at(d), &keys);
    };
    let string = |mem: &mut FakeMemory, at: u64, text: &str| {
        let mut s = vec![0u8; 48];
        s[8..16].copy_from_slice(&t_str.to_ne_bytes());
        s[16..24].copy_from_slice(&(text.len() as u64).to_ne_bytes());
        s[32..36].copy_from_slice(&0xe4u32.to_ne_bytes()); // ready, compact ASCII, kind 1
        s.extend_from_slice(text.as_bytes());
        mem.put(at, &s);
    };
    mem.put_u64(runtime + layout.runtime_interp_main, interp)
        .put_u64(interp + layout.interp_threads_head, tstate)
        .put_u64(tstate + 16, interp)
        .put_u64(interp + layout.interp_modules, modules)
        .put_u64(threading + MD_DICT, md_dict);
    string(&mut mem, s_threading, "threading");
    string(&mut mem, s_active, "_active");
    dict(&mut mem, modules, &[(s_threading, threading)], 1);
    dict(&mut mem, md_dict, &[(s_active, active)], 1);
    dict(&mut mem, active, &[(ident, thread)], N);
    let mut int = vec![0u8; 64];
    int[8..16].copy_from_slice(&t_int.to_ne_bytes());
    int[16..24].copy_from_slice(&1u64.to_ne_bytes());
    int[24..28].copy_from_slice(&7u32.to_ne_bytes());
    mem.put(ident, &int);
    let mut obj = vec![0u8; 24];
    obj[8..16].copy_from_slice(&t_thread.to_ne_bytes());
    obj[16..24].copy_from_slice(&active.to_ne_bytes());
    mem.put(thread, &obj);

    let started = std::time::Instant::now();
    let r = thread_names(&mem, (3, 10), runtime, &HashMap::new());
    let e = r.expect_err("the walk must give up");
    assert!(format!("{e:#}").contains("look corrupt"), "{e:#}");
    assert!(
        mem.reads.get() <= READ_BUDGET.0,
        "{} reads",
        mem.reads.get()
    );
    eprintln!(
        "quadratic graph: refused after {} reads in {:?}",
        mem.reads.get(),
        started.elapsed()
    );
}
