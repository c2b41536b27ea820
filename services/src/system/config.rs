//! The system service's validated desired config, from the `system` and `network` sections.
//!
//! The timezone is checked against the tz database: a name made only of `Area/City` parts
//! (letters, digits, `_ - +`; no `.`, so no `..`; never absolute), naming a regular TZif file
//! inside the zoneinfo directory (after resolving links, it must stay inside). The database is
//! `<system root>/usr/share/zoneinfo` when that directory exists, else the host's
//! `/usr/share/zoneinfo` (a scratch system root in demos and tests has none).

use std::io::Read;
use std::path::{Path, PathBuf};

use bus_schema::sections::{Network, System};
use bus_schema::{BusError, ErrorCode};

use crate::ctx::Paths;

pub const TIMEZONE_VAR: &str = "IOHUBOS_TIMEZONE";
/// Where the tz database lives on a box.
pub const ZONEINFO: &str = "/usr/share/zoneinfo";

/// What the system service must make true.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemDesired {
    /// None leaves the timezone alone.
    pub timezone: Option<String>,
    /// The firmware version (published as a fact).
    pub version: String,
    /// `IOHUBOS_HOSTNAME`, owned (written) by the network service; only published here.
    pub hostname: Option<String>,
}

/// The tz database to check names against.
pub fn zoneinfo_dir(paths: &Paths) -> PathBuf {
    let inside = paths.system(ZONEINFO);
    if inside.is_dir() {
        inside
    } else {
        PathBuf::from(ZONEINFO)
    }
}

/// The form of a tz name (no I/O): the rule of the `system` section, in bus-schema.
pub fn check_name(name: &str) -> Result<(), String> {
    bus_schema::sections::parse_timezone(name).map(|_| ())
}

/// `name` is a TZif file of the database `db`.
pub fn check_in_database(db: &Path, name: &str) -> Result<(), String> {
    check_name(name)?;
    let path = db.join(name);
    let missing = || format!("`{name}` is not in the tz database ({})", db.display());
    let real = path.canonicalize().map_err(|_| missing())?;
    let db_real = db.canonicalize().map_err(|_| missing())?;
    if !real.starts_with(&db_real) || !real.is_file() {
        return Err(missing());
    }
    let mut magic = [0u8; 4];
    std::fs::File::open(&real)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map_err(|_| missing())?;
    if &magic != b"TZif" {
        return Err(format!("`{name}` in {} is not a TZif file", db.display()));
    }
    Ok(())
}

impl SystemDesired {
    /// Check the sections (reads the tz database: call off the async workers).
    pub fn from_sections(
        system: &System,
        network: Option<&Network>,
        zoneinfo: &Path,
    ) -> Result<SystemDesired, BusError> {
        if let Some(tz) = &system.timezone {
            check_in_database(zoneinfo, tz)
                .map_err(|m| BusError::new(ErrorCode::InvalidValue, m).with_field(TIMEZONE_VAR))?;
        }
        Ok(SystemDesired {
            timezone: system.timezone.clone(),
            version: system.version.clone(),
            hostname: network.and_then(|n| n.hostname.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_outside_the_database_or_not_tzif_are_refused() {
        let db = Path::new(ZONEINFO);
        if !db.join("Europe/Rome").is_file() {
            assert!(std::env::var("CI").is_err(), "tzdata is required under CI");
            return;
        }
        assert_eq!(check_in_database(db, "Europe/Rome"), Ok(()));
        assert_eq!(check_in_database(db, "UTC"), Ok(()));
        let refused: Vec<String> = [
            "../../etc/passwd",
            "/etc/passwd",
            "Europe",
            "Mars/Olympus_Mons",
            "Europe/./Rome",
            "",
        ]
        .iter()
        .map(|n| check_in_database(db, n).unwrap_err())
        .collect();
        expect_test::expect![[r#"
            [
                "`../../etc/passwd` is not a timezone name (like `Europe/Rome` or `UTC`)",
                "`/etc/passwd` is not a timezone name (like `Europe/Rome` or `UTC`)",
                "`Europe` is not in the tz database (/usr/share/zoneinfo)",
                "`Mars/Olympus_Mons` is not in the tz database (/usr/share/zoneinfo)",
                "`Europe/./Rome` is not a timezone name (like `Europe/Rome` or `UTC`)",
                "`` is not a timezone name (like `Europe/Rome` or `UTC`)",
            ]
        "#]]
        .assert_debug_eq(&refused);
    }
}
