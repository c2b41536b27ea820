//! The wifi service's retained state payload: the `facts` of `iohub/state/wifi`. Never holds a
//! passphrase (the program's output tail is scrubbed of it).

use std::path::PathBuf;

use serde::Serialize;

use super::config::Role;
use crate::ctx::Backend;
use sys::child::ChildStatus;

/// `facts` of `iohub/state/wifi`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WifiFacts {
    pub backend: Backend,
    /// None: WiFi is off.
    pub role: Option<Role>,
    pub device: Option<String>,
    pub ssid: Option<String>,
    /// Wireless interfaces present now (sysfs).
    pub wireless_interfaces: Vec<String>,
    pub config_file: Option<PathBuf>,
    /// wpa_supplicant or hostapd (live backend).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<ChildStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}
