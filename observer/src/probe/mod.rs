//! Steps 3–4: loading the kernel programs, attaching them to the target, checking we may, and
//! what the probes cost.
pub mod attach;
pub mod budget;
pub mod calibrate;
pub mod cost;
pub mod cpu_time;
pub mod preflight;
pub mod site;
