//! iohub services: the supervisor, the service context, the system boundary (`sys`) and the
//! services themselves. The binaries `iohubd` and `iohubctl` are thin wrappers over this crate.
//!
//! Architecture invariants (checked by `tests/tests/tidy.rs` and `clippy.toml`):
//! - programs run only through [`sys::cmd`];
//! - files under the root or the system root are written only through [`sys::fs::atomic_write`];
//! - a service reaches other services only through the bus (`ctx.bus`), never by calling them.

pub mod admin_api;
pub mod apps;
pub mod config;

pub mod ctx;
pub mod daemon;
pub mod deployer;
pub mod dhcp;
pub mod firewall;
pub mod global_mqtt;
pub mod lifecycle;
pub mod network;
pub mod reconcile;
pub mod registry;
pub mod routes;
pub mod secrets;
pub mod settings;
pub mod shared;
pub mod ssh;
pub mod supervisor;

pub mod system;
pub mod vars;
pub mod watcher;
pub mod wifi;

pub use ctx::{Backend, Paths, ServiceCtx};
