//! The daemon's own settings: where iohubd runs and how, as opposed to the box's configuration
//! (the `IOHUBOS_*` variables under the data root, which are the config service's).
//!
//! One typed [`Settings`], loaded with the `config` crate from, lowest precedence first:
//! 1. the defaults below;
//! 2. the file `/etc/iohub/iohubd.toml` if it exists (or the file given with `--config`, which
//!    must exist);
//! 3. `IOHUBD_*` environment variables (`IOHUBD_METRICS_LISTEN=127.0.0.1:9883`; lists are
//!    comma-separated: `IOHUBD_ONLY=config,watcher`);
//! 4. command-line flags.
//!
//! | key (`IOHUBD_<KEY>`) | default | meaning |
//! |---|---|---|
//! | `root` | `/iohub` | the writable data root |
//! | `system_root` | `/` | where effects outside the data root land (a scratch dir to try iohubd) |
//! | `apply` | `false` | apply plans to the system (`false`: plan-only, nothing changes) |
//! | `control_listen` | `127.0.0.1:1884` | the control listener (loopback only) |
//! | `global_mqtt_listen` | `127.0.0.1:1883` live, `127.0.0.1:0` plan-only | the apps' broker on the host |
//! | `metrics_listen` | `127.0.0.1:9883` live, `127.0.0.1:0` plan-only | Prometheus `GET /metrics` |
//! | `log_format` | `auto` | `text`, `json`, or `auto` (text; journald's plain form under systemd) |
//! | `only`, `without` | empty | run only / every service but these |
//! | `shutdown_timeout_secs` | `10` | upper bound on a clean shutdown |
//! | `wireguard_interface` | `wg0` | the WireGuard tunnel's interface (its UAPI socket is `/var/run/wireguard/<name>.sock`, shared by every network namespace: tests give each iohubd its own) |
//!
//! Unknown keys, in the file or as `IOHUBD_*` variables, are errors (a typo never goes unseen).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bus_schema::ServiceName;
use serde::{Deserialize, Serialize};

use crate::ctx::{Backend, Paths};

/// Where the settings file is looked for when `--config` is not given.
pub const DEFAULT_FILE: &str = "/etc/iohub/iohubd.toml";
/// The prefix of the settings' environment variables.
pub const ENV_PREFIX: &str = "IOHUBD";

/// How the log is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Text; without timestamps and colours when journald reads it (`JOURNAL_STREAM` is set).
    #[default]
    Auto,
    Text,
    /// One JSON object per line.
    Json,
}

/// Every daemon setting (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub root: PathBuf,
    pub system_root: PathBuf,
    pub apply: bool,
    pub control_listen: SocketAddr,
    pub global_mqtt_listen: Option<SocketAddr>,
    pub metrics_listen: Option<SocketAddr>,
    pub log_format: LogFormat,
    pub only: Vec<ServiceName>,
    pub without: Vec<ServiceName>,
    pub shutdown_timeout_secs: u64,
    pub wireguard_interface: String,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            root: PathBuf::from("/iohub"),
            system_root: PathBuf::from("/"),
            apply: false,
            control_listen: SocketAddr::from(([127, 0, 0, 1], 1884)),
            global_mqtt_listen: None,
            metrics_listen: None,
            log_format: LogFormat::Auto,
            only: Vec::new(),
            without: Vec::new(),
            shutdown_timeout_secs: 10,
            wireguard_interface: "wg0".to_string(),
        }
    }
}

/// Addresses of the daemon's own endpoints that services open (the control listener is the
/// daemon's). The defaults are per backend: a plan-only daemon binds free loopback ports, so it
/// can run beside a real broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoints {
    /// The apps' broker listener on the host.
    pub global_mqtt: SocketAddr,
    /// Prometheus `GET /metrics`.
    pub metrics: SocketAddr,
    /// The WireGuard tunnel's interface name (the firewall's VPN zone).
    pub wireguard_interface: String,
}

impl Endpoints {
    /// Free loopback ports (tests, plan-only runs).
    pub fn ephemeral() -> Endpoints {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Endpoints {
            global_mqtt: any,
            metrics: any,
            wireguard_interface: "wg0".to_string(),
        }
    }
}

/// Where one source of settings came from, to name it in an error.
#[derive(Debug, thiserror::Error)]
#[error("iohubd settings: {0}")]
pub struct SettingsError(String);

/// The command line's share of the settings: only what was given overrides.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config FILE`: must exist; without it [`DEFAULT_FILE`] is read if it exists.
    pub file: Option<PathBuf>,
    pub root: Option<PathBuf>,
    pub system_root: Option<PathBuf>,
    pub apply: Option<bool>,
    pub control_listen: Option<SocketAddr>,
    pub global_mqtt_listen: Option<SocketAddr>,
    pub metrics_listen: Option<SocketAddr>,
    pub log_format: Option<LogFormat>,
    pub only: Option<Vec<ServiceName>>,
    pub without: Option<Vec<ServiceName>>,
    pub shutdown_timeout_secs: Option<u64>,
    pub wireguard_interface: Option<String>,
}

impl Settings {
    /// Load the layers (module docs); `env` is the process environment in iohubd.
    pub fn load(
        cli: &Overrides,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, SettingsError> {
        let (file, required) = match &cli.file {
            Some(f) => (f.clone(), true),
            None => (PathBuf::from(DEFAULT_FILE), false),
        };
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k[ENV_PREFIX.len()..].starts_with('_'))
            .collect();
        let mut builder = config::Config::builder()
            .add_source(file_source(&file, required))
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator("_")
                    .try_parsing(true)
                    .list_separator(",")
                    .with_list_parse_key("only")
                    .with_list_parse_key("without")
                    .source(Some(env)),
            );
        builder = cli
            .apply_to(builder)
            .map_err(|e| SettingsError(e.to_string()))?;
        let settings: Settings = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| SettingsError(e.to_string()))?;
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> Result<(), SettingsError> {
        if !self.control_listen.ip().is_loopback() {
            return Err(SettingsError(format!(
                "control_listen {} is not a loopback address (the control listener must be)",
                self.control_listen
            )));
        }
        let wg = &self.wireguard_interface;
        let name_ok = !wg.is_empty()
            && wg.len() <= 15
            && wg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.=+".contains(&b));
        if !name_ok {
            return Err(SettingsError(format!(
                "wireguard_interface `{wg}` is not an interface name (1 to 15 of a-z A-Z 0-9 _ - . = +)"
            )));
        }
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        if self.apply {
            Backend::Live
        } else {
            Backend::PlanOnly
        }
    }

    pub fn paths(&self) -> Paths {
        Paths::new(&self.root, &self.system_root)
    }

    /// The endpoints, with the backend's defaults where none is set.
    pub fn endpoints(&self) -> Endpoints {
        let live = |port| match self.backend() {
            Backend::Live => SocketAddr::from(([127, 0, 0, 1], port)),
            Backend::PlanOnly => SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        Endpoints {
            global_mqtt: self.global_mqtt_listen.unwrap_or_else(|| live(1883)),
            metrics: self.metrics_listen.unwrap_or_else(|| live(9883)),
            wireguard_interface: self.wireguard_interface.clone(),
        }
    }
}

fn file_source(
    path: &Path,
    required: bool,
) -> config::File<config::FileSourceFile, config::FileFormat> {
    config::File::from(path)
        .format(config::FileFormat::Toml)
        .required(required)
}

impl Overrides {
    fn apply_to(
        &self,
        b: config::ConfigBuilder<config::builder::DefaultState>,
    ) -> Result<config::ConfigBuilder<config::builder::DefaultState>, config::ConfigError> {
        let text = |p: &Option<PathBuf>| p.as_ref().map(|p| p.to_string_lossy().into_owned());
        let addr = |a: &Option<SocketAddr>| a.map(|a| a.to_string());
        let names = |n: &Option<Vec<ServiceName>>| {
            n.as_ref()
                .map(|v| v.iter().map(ToString::to_string).collect::<Vec<_>>())
        };
        let format = self.log_format.map(|f| match f {
            LogFormat::Auto => "auto",
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        });
        b.set_override_option("root", text(&self.root))?
            .set_override_option("system_root", text(&self.system_root))?
            .set_override_option("apply", self.apply)?
            .set_override_option("control_listen", addr(&self.control_listen))?
            .set_override_option("global_mqtt_listen", addr(&self.global_mqtt_listen))?
            .set_override_option("metrics_listen", addr(&self.metrics_listen))?
            .set_override_option("log_format", format)?
            .set_override_option("only", names(&self.only))?
            .set_override_option("without", names(&self.without))?
            .set_override_option("shutdown_timeout_secs", self.shutdown_timeout_secs)?
            .set_override_option("wireguard_interface", self.wireguard_interface.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn with_file(toml: &str) -> (tempfile::TempDir, Overrides) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("iohubd.toml");
        sys::fs::atomic_write(&path, toml.as_bytes(), 0o644).unwrap();
        let cli = Overrides {
            file: Some(path),
            ..Overrides::default()
        };
        (dir, cli)
    }

    #[test]
    fn defaults_are_a_plan_only_daemon_on_iohub_with_loopback_endpoints() {
        let (_dir, cli) = with_file("");
        let s = Settings::load(&cli, env(&[])).unwrap();
        assert_eq!(s, Settings::default());
        assert_eq!(s.backend(), Backend::PlanOnly);
        assert_eq!(s.endpoints(), Endpoints::ephemeral());
    }

    #[test]
    fn the_file_is_overlaid_by_the_environment_and_then_by_flags() {
        let (_dir, mut cli) = with_file(
            "root = \"/data\"\napply = true\nmetrics_listen = \"127.0.0.1:9000\"\nonly = [\"config\"]\nlog_format = \"json\"\n",
        );
        let vars = env(&[
            ("IOHUBD_METRICS_LISTEN", "127.0.0.1:9001"),
            ("IOHUBD_ONLY", "config,watcher"),
            ("IOHUB_LOG", "debug"),
            ("PATH", "/bin"),
        ]);
        let s = Settings::load(&cli, vars.clone()).unwrap();
        assert_eq!(s.root, Path::new("/data"));
        assert_eq!(s.backend(), Backend::Live);
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.only, [ServiceName::Config, ServiceName::Watcher]);
        assert_eq!(s.endpoints().metrics.to_string(), "127.0.0.1:9001");
        assert_eq!(s.endpoints().global_mqtt.to_string(), "127.0.0.1:1883");
        cli.metrics_listen = Some("127.0.0.1:9002".parse().unwrap());
        cli.root = Some(PathBuf::from("/flag"));
        cli.apply = Some(false);
        let s = Settings::load(&cli, vars).unwrap();
        assert_eq!(s.endpoints().metrics.to_string(), "127.0.0.1:9002");
        assert_eq!(s.root, Path::new("/flag"));
        assert_eq!(s.backend(), Backend::PlanOnly);
    }

    #[test]
    fn unknown_keys_bad_values_and_a_missing_named_file_are_errors() {
        let (_dir, cli) = with_file("roots = \"/x\"\n");
        let e = Settings::load(&cli, env(&[])).unwrap_err().to_string();
        assert!(e.contains("roots"), "{e}");
        let (_dir, cli) = with_file("");
        let e = Settings::load(&cli, env(&[("IOHUBD_METRICS_LISTEN", "nowhere")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("metrics_listen") || e.contains("nowhere"), "{e}");
        let e = Settings::load(&cli, env(&[("IOHUBD_CONTROL_LISTEN", "0.0.0.0:1884")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("loopback"), "{e}");
        let cli = Overrides {
            file: Some(PathBuf::from("/nonexistent/iohubd.toml")),
            ..Overrides::default()
        };
        assert!(Settings::load(&cli, env(&[])).is_err());
    }
}
