//! Object files mapped by the target: one file under both its names (`file`), ELF layout and
//! symbols (`elf`), the objects of an address space (`mapped`), and where a stripped object's
//! symbols are found (`debuginfo`).
pub mod debuginfo;
pub mod elf;
pub mod file;
#[cfg(test)]
pub mod hostile_elf;
pub mod mapped;
