//! What gilwatch knows about CPython itself: versions, and reading an interpreter's memory.
pub mod memory;
pub mod threads;
pub mod version;
