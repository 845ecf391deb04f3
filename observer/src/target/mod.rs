//! The observed process: what /proc says about it, a pidfd on it, and starting one for
//! `gilwatch -- CMD`.
pub mod launch;
pub mod maps;
pub mod pidfd;
pub mod process;
