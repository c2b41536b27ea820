//! The bus contract of iohub: every topic string, every payload, the envvars model and the errors.
//!
//! Architecture invariant: this crate does no I/O and knows nothing of tokio or of the broker. It is
//! pure data and pure functions, so every other crate (and external tools) can depend on it.

pub mod control;
pub mod envelope;
pub mod envvars;
pub mod error;
pub mod events;
pub mod facts;
pub mod files;
pub mod schema;
pub mod secret;
pub mod sections;
pub mod state;
pub mod topic;

pub use envelope::{Reply, Request};
pub use error::{BusError, ErrorCode, LineError};
pub use secret::Secret;
pub use state::{Phase, ServiceState};
pub use topic::{EventKind, Section, ServiceName, Topic, TopicError, Verb};

/// Version of every JSON payload on the bus. Bumped on an incompatible change.
pub const PAYLOAD_VERSION: u32 = 1;
