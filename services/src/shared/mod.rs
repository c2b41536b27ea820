//! What more than one service needs. A service never imports another service (`tests/tests/
//! tidy.rs` fails on `crate::<other service>::` in a service's files); a helper two of them use
//! lives here, named after what it is, not after the service that had it first.
//!
//! - [`files`]: planned files and directories, and their async effects through [`sys::fs`];
//! - [`process`]: a supervised program remembered with the spec it was started from;
//! - [`apps`]: the app folder contract (SPEC §4.5) the apps, deployer and admin API services share;
//! - [`reconcile`](crate::reconcile) is the service loop's own shared module.

pub mod apps;
pub mod files;
pub mod process;
#[cfg(test)]
pub(crate) mod testenv;
