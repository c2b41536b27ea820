//! `BusError {code, message, field}`: the one error shape on the bus, with stable codes.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A stable, machine-readable error code. The wire spelling never changes once released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A value does not have the expected form (address, port, boolean, ...).
    InvalidValue,
    /// A variable or field that is not known.
    UnknownVariable,
    /// A required value is missing.
    Missing,
    /// Values that are each valid but conflict with each other.
    Conflict,
    /// A line of a config file could not be parsed.
    Syntax,
    /// A file or payload asked to execute something (`$(...)`, a command).
    Forbidden,
    /// A payload is not valid JSON of the expected type.
    BadPayload,
    /// The topic is not part of the tree or not addressed to this service.
    BadTopic,
    /// Authentication or authorization failed.
    Unauthorized,
    /// The target of a command does not exist.
    NotFound,
    /// The service cannot do that in its current state or backend.
    Unavailable,
    /// A deadline passed.
    Timeout,
    /// An I/O or system call failed.
    Io,
    /// A service task panicked.
    Panic,
    /// Anything else; the message says what.
    Internal,
}

impl ErrorCode {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidValue => "invalid_value",
            ErrorCode::UnknownVariable => "unknown_variable",
            ErrorCode::Missing => "missing",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Syntax => "syntax",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::BadPayload => "bad_payload",
            ErrorCode::BadTopic => "bad_topic",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Io => "io",
            ErrorCode::Panic => "panic",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error as published on the bus. `field` names what was wrong: a variable
/// (`IOHUBOS_ETH0_IP`), a file and line (`forwards-tcp:3`), or a payload field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, thiserror::Error)]
#[serde(deny_unknown_fields)]
#[error("{code}: {message}{}", field.as_ref().map(|f| format!(" ({f})")).unwrap_or_default())]
pub struct BusError {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl BusError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> BusError {
        BusError {
            code,
            message: message.into(),
            field: None,
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> BusError {
        self.field = Some(field.into());
        self
    }
}

/// A problem on one line of a config file (`envvars`, `forwards-tcp`, `routes`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LineError {
    /// File name relative to the root, e.g. `forwards-udp` or `envvars.d/1.1.1-envvars`.
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// The offending line as written (secrets are never echoed: the caller redacts them).
    pub text: String,
    pub reason: String,
    pub code: ErrorCode,
}

impl From<LineError> for BusError {
    fn from(e: LineError) -> BusError {
        BusError::new(e.code, format!("{}: `{}`", e.reason, e.text))
            .with_field(format!("{}:{}", e.file, e.line))
    }
}
