//! The system boundary: every effect iohub has on the machine goes through here.
//!
//! - [`cmd`] is the only place a process is spawned (`tokio::process::Command::new`): each
//!   program runs in its own process group with a timeout, the whole group is killed on timeout
//!   or when the caller gives up, and only a bounded tail of its output is kept.
//! - [`fs`] is the only place a file is opened for writing: [`fs::atomic_write`] writes a
//!   temporary file next to the target, fsyncs it, renames it over the target and fsyncs the
//!   directory, so a reader (or a power cut) sees the old content or the new one, never half.
//!
//! `clippy.toml` bans the underlying std/tokio calls everywhere else; the `allow`s that lift the
//! bans live only in these two files (`tests/tests/tidy.rs` checks it). Reading files and
//! listing directories is not an effect and may happen anywhere (off the async workers).

pub mod child;
pub mod cmd;
pub mod docker;
pub mod fs;
pub mod http;
pub mod netlink;
pub mod nft;
