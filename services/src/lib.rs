//! iohub services: the supervisor, the service context, the daemon's settings, the services
//! themselves and what they share (`shared`, `vars`, `reconcile`). The binary `iohubd` is a thin
//! wrapper over this crate; the system boundary is the `sys` crate, the CLI the `iohubctl` crate.
//!
//! Architecture invariants (checked by `tests/tests/tidy.rs` and `clippy.toml`):
//! - programs run only through [`sys::cmd`];
//! - file-system effects under the roots go only through [`sys::fs`];
//! - a service reaches other services only through the bus (`ctx.bus`), never by calling or
//!   importing them: what two services need lives in [`shared`] or [`vars`].

pub mod admin_api;
pub mod apps;
pub mod bridge;
pub mod config;

pub mod ctx;
pub mod daemon;
pub mod deployer;
pub mod dhcp;
pub mod firewall;
pub mod firmware;
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
pub mod wireguard;

pub use ctx::{Backend, Paths, ServiceCtx};
