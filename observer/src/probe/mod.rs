//! Steps 3–4: loading the kernel programs, attaching them to the target, checking we may.
pub mod attach;
pub mod budget;
pub mod preflight;
