//! The system boundary: every effect iohub has on the machine goes through this crate, and this
//! crate is the only one that depends on bollard, rtnetlink, nftables and reqwest or spawns a
//! process, so the dependency graph keeps the rule (`tests/tests/tidy.rs` checks the manifests).
//!
//! - [`cmd`] is the only place a process is spawned (`tokio::process::Command::new`): each
//!   program runs in its own process group with a timeout, the whole group is killed on timeout
//!   or when the caller gives up, and only a bounded tail of its output is kept. [`child`] keeps
//!   a long-running program running on top of it.
//! - [`fs`] is the only place a file-system entry under the roots is created, replaced, renamed,
//!   removed, linked or has its mode changed: [`fs::atomic_write`] writes a temporary file next
//!   to the target, fsyncs it, renames it over the target and fsyncs the directory, so a reader
//!   (or a power cut) sees the old content or the new one, never half; directory and symlink
//!   swaps work the same way.
//! - [`netlink`] (rtnetlink), [`nft`] (the `nft` binary and the nftables crate), [`docker`]
//!   (bollard) and [`http`] (reqwest) each hold one crate's types; [`wg`] speaks the WireGuard
//!   UAPI to a userspace WireGuard's socket.
//!
//! `clippy.toml` bans the underlying std/tokio calls everywhere else; the `allow`s that lift the
//! bans live only in `cmd.rs` and `fs.rs` (`tests/tests/tidy.rs` checks it). Reading files and
//! listing directories is not an effect and may happen anywhere (off the async workers).

pub mod child;
pub mod clock;
pub mod cmd;
pub mod docker;
pub mod fs;
pub mod http;
pub mod limits;
pub mod mem;
pub mod netlink;
pub mod nft;
pub mod wg;
