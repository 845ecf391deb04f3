//! What a runbook step needs from gilwatch: a saved report read back (`saved`), its figures per
//! process and thread group (`figures`), two of them compared (`diff`), and conditions that make
//! the step fail (`condition`).
pub mod condition;
pub mod diff;
pub mod figures;
pub mod saved;
