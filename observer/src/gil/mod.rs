//! Finding the GIL in a target: which object holds the interpreter, and where its functions are.
pub mod address;
pub mod exports;
pub mod libc;
pub mod locate;
pub mod plan;
pub mod prepare;
pub mod symbols;
