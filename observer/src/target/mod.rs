//! The observed process: what /proc says about it, and starting one for `gilwatch -- CMD`.
pub mod launch;
pub mod maps;
pub mod process;
