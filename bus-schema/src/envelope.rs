//! The request/reply envelope used on `iohub/cmd/<service>/<verb>`.
//!
//! A request carries its own `reply_to` topic (for MQTT 3.1.1 clients,
//! `iohub/reply/<client>/<id>`) and an `id` echoed in the reply, so any MQTT client can
//! correlate. The body is the typed command of the target service, as JSON.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::BusError;

/// A command request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Correlation id chosen by the client, echoed in the reply.
    pub id: String,
    /// Topic the reply is published to (`iohub/reply/<client>/<id>`); no reply when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// The command body; its type depends on the service and verb.
    #[serde(default)]
    pub body: serde_json::Value,
}

/// The reply to a [`Request`]: exactly one of `result` and `error` is present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    /// The id of the request.
    pub id: String,
    /// Whether the command succeeded.
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// Every problem found, when `ok` is false.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<BusError>,
}

impl Reply {
    pub fn ok(id: impl Into<String>, result: serde_json::Value) -> Reply {
        Reply {
            id: id.into(),
            ok: true,
            result: Some(result),
            errors: Vec::new(),
        }
    }

    pub fn err(id: impl Into<String>, errors: Vec<BusError>) -> Reply {
        Reply {
            id: id.into(),
            ok: false,
            result: None,
            errors,
        }
    }
}
