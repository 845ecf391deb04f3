//! What gilwatch knows about CPython itself: versions, and reading an interpreter's memory
//! (struct `layout`s per version, `debug_offsets` tables, remote `objects`, the interpreter and
//! thread `walk`, thread `naming`, `code` objects to source locations).
pub mod code;
mod debug_offsets;
#[cfg(test)]
pub mod fake_memory;
pub mod frames;
#[cfg(test)]
mod hostile;
mod layout;
mod line_table;
pub mod memory;
pub mod naming;
mod objects;
pub mod version;
pub mod walk;
