//! The jobs the `flowlab` command runs, written against the public API like any user's job.

pub mod bench;
pub mod sim;
pub mod watermarks;
pub mod window;
