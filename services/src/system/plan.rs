//! The system service's plan: pure and deterministic (snapshot-tested), published on
//! `iohub/plan/system` in both backends.
//!
//! The timezone becomes the `<system root>/etc/localtime` symlink to
//! `/usr/share/zoneinfo/<name>` (the path on the box; `dpkg-reconfigure tzdata` of the original
//! is not needed: glibc reads the link) and `<system root>/etc/timezone` (`<name>\n`, 0644, what
//! Debian tools read). The host name is only published: the network service writes it.

use std::path::PathBuf;

use serde::Serialize;

use super::config::{SystemDesired, ZONEINFO};
use crate::ctx::Paths;
use crate::shared::files::PlannedFile;

/// Where the system service's files are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SystemLayout {
    pub localtime: PathBuf,
    pub timezone: PathBuf,
}

impl SystemLayout {
    pub fn new(paths: &Paths) -> SystemLayout {
        SystemLayout {
            localtime: paths.system("/etc/localtime"),
            timezone: paths.system("/etc/timezone"),
        }
    }
}

/// The timezone part of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimezonePlan {
    pub name: String,
    /// The symlink...
    pub link: PathBuf,
    /// ...and where it points.
    pub target: PathBuf,
    pub file: PlannedFile,
}

/// What the system service does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SystemPlan {
    /// None: the timezone is left alone (`IOHUBOS_TIMEZONE` empty).
    pub timezone: Option<TimezonePlan>,
    /// The host name the network service applies (published only).
    pub hostname: Option<String>,
    pub version: String,
}

pub fn plan(desired: &SystemDesired, layout: &SystemLayout) -> SystemPlan {
    SystemPlan {
        timezone: desired.timezone.as_ref().map(|name| TimezonePlan {
            name: name.clone(),
            link: layout.localtime.clone(),
            target: PathBuf::from(ZONEINFO).join(name),
            file: PlannedFile::new(layout.timezone.clone(), 0o644, format!("{name}\n")),
        }),
        hostname: desired.hostname.clone(),
        version: desired.version.clone(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::shared::testenv::config_from_envvars;

    fn plan_of(envvars: &str) -> String {
        let c = config_from_envvars(envvars).unwrap();
        let desired = SystemDesired {
            timezone: c.system.timezone.clone(),
            version: c.system.version.clone(),
            hostname: c.network.hostname.clone(),
        };
        let p = plan(&desired, &SystemLayout::new(&Paths::new("/iohub", "/")));
        serde_json::to_string_pretty(&p).unwrap()
    }

    #[test]
    fn the_timezone_becomes_a_localtime_link_and_etc_timezone() {
        expect_test::expect![[r#"
            {
              "timezone": {
                "name": "Europe/Rome",
                "link": "/etc/localtime",
                "target": "/usr/share/zoneinfo/Europe/Rome",
                "file": {
                  "path": "/etc/timezone",
                  "mode": "0644",
                  "content": "Europe/Rome\n"
                }
              },
              "hostname": "box-7",
              "version": "1.1.3"
            }"#]]
        .assert_eq(&plan_of(
            "IOHUBOS_TIMEZONE=Europe/Rome\nIOHUBOS_HOSTNAME=box-7\n",
        ));
        expect_test::expect![[r#"
            {
              "timezone": null,
              "hostname": null,
              "version": "1.1.3"
            }"#]]
        .assert_eq(&plan_of("IOHUBOS_TIMEZONE=\n"));
    }
}
