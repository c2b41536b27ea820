//! The firmware service's retained facts, its events and the trial record kept on the data
//! partition across the reboot into a trial slot.

use std::collections::BTreeMap;
use std::path::Path;

use bus_schema::BusError;
use serde::{Deserialize, Serialize};

use super::grubenv::{Boot, Slot};
use super::slot::SlotInfo;

/// `facts` of `iohub/state/firmware`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Facts {
    /// The slot this boot runs from (`iohub.slot=` on the kernel command line).
    pub booted: Option<Slot>,
    /// The running firmware version.
    pub version: String,
    /// What each slot holds.
    pub slots: BTreeMap<Slot, SlotInfo>,
    /// GRUB's A/B variables.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot: Option<Boot>,
    /// This boot is a trial of a new slot: committed when healthy before `deadline_ms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trial: Option<TrialFacts>,
    /// The operation in progress (`installing <bundle>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub busy: Option<String>,
    /// The outcome of the last operation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<Event>,
    /// Trusted keys by id, and the revoked ids.
    pub keys: Vec<String>,
    pub revoked: Vec<String>,
    /// The last poll of the HTTPS source (`IOHUBOS_UPGRADER_URL`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrader: Option<super::poll::PollFacts>,
    /// An armed trial waiting for the maintenance window to reboot (`HH:MM-HH:MM`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reboot_waits_for: Option<String>,
    /// Key files that could not be used, and other problems of the layout.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrialFacts {
    pub slot: Slot,
    pub deadline_ms: u64,
    /// Services not yet applied or disabled.
    pub waiting_for: Vec<String>,
}

/// `iohub/event/firmware/<kind>`; the same line goes to the console as
/// `iohub-firmware <event> key=value ...`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub version: u32,
    pub event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bundle: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot: Option<Slot>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firmware_version: Option<String>,
    /// Progress: compressed bytes of the bundle read so far, of `bytes_total`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_done: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<BusError>,
    pub at_ms: u64,
}

impl Event {
    pub fn new(event: &'static str) -> Event {
        Event {
            version: bus_schema::PAYLOAD_VERSION,
            event,
            bundle: None,
            slot: None,
            firmware_version: None,
            bytes_done: None,
            bytes_total: None,
            error: None,
            at_ms: crate::ctx::now_ms(),
        }
    }

    /// The console line (distro/README.md): `iohub-firmware <event> slot=B version=0.2.0 ...`.
    pub fn console_line(&self) -> String {
        let mut line = format!("iohub-firmware {}", self.event);
        if let Some(s) = self.slot {
            line.push_str(&format!(" slot={s}"));
        }
        if let Some(v) = &self.firmware_version {
            line.push_str(&format!(" version={v}"));
        }
        if let Some(b) = &self.bundle {
            line.push_str(&format!(" bundle={b}"));
        }
        if let (Some(d), Some(t)) = (self.bytes_done, self.bytes_total) {
            line.push_str(&format!(" bytes={d}/{t}"));
        }
        if let Some(e) = &self.error {
            line.push_str(&format!(" reason={:?}", e.message));
        }
        line
    }
}

/// The trial armed before a reboot (`runtime/firmware/trial.json`): after the reboot it tells
/// a trial boot (the slot booted is the one armed) from a rollback by GRUB (it is not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrialRecord {
    pub slot: Slot,
    pub version: String,
    /// The slot that was booted when the trial was armed (the last good one).
    pub from: Slot,
}

impl TrialRecord {
    pub fn load(path: &Path) -> Option<TrialRecord> {
        let text = std::fs::read(path).ok()?;
        serde_json::from_slice(&text)
            .inspect_err(|e| tracing::warn!(path = %path.display(), error = %e, "firmware: bad trial record ignored"))
            .ok()
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            sys::fs::ensure_dir(dir)?;
        }
        let bytes = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        sys::fs::atomic_write(path, &bytes, 0o644)
    }

    pub fn clear(path: &Path) -> std::io::Result<()> {
        sys::fs::remove_file(path).map(drop)
    }
}
