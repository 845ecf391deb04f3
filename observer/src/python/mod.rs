//! What gilwatch knows about CPython itself: versions, and reading an interpreter's memory.
#[cfg(test)]
pub mod fake_memory;
pub mod memory;
pub mod naming;
pub mod version;
