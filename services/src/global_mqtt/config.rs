//! Validated desired state of the global MQTT broker for apps: the `global_mqtt` config section
//! plus the daemon-side listener options, which are not (yet) `IOHUBOS_*` variables and come from
//! iohubd's environment:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `IOHUBD_GLOBAL_MQTT_LISTEN` | `127.0.0.1:0` (plan-only), `127.0.0.1:1883` (live; see `plan`) | apps listener address on the host |
//! | `IOHUBD_GLOBAL_MQTT_ANONYMOUS` | `true` | accept clients without a login |
//! | `IOHUBD_GLOBAL_MQTT_USERNAME`, `..._PASSWORD` | unset | the one login accepted (both or neither) |
//! | `IOHUBD_GLOBAL_MQTT_MIRROR` | empty | comma-separated control filters apps may read |
//! | `IOHUBD_GLOBAL_MQTT_MAX_QUEUED` | `1000` | per-client queue bound (mosquitto's `max_queued_messages`) |
//! | `IOHUBD_METRICS_LISTEN` | `127.0.0.1:0` (plan-only), `127.0.0.1:9883` (live) | Prometheus endpoint |

use std::net::SocketAddr;

use broker::ControlCredentials;
use bus_schema::sections::GlobalMqtt;
use bus_schema::topic::ROOT;
use bus_schema::{BusError, ErrorCode};
use serde::Serialize;

use crate::ctx::Backend;

/// Subtrees of the control plane that may be mirrored to apps (read-only). Commands and replies
/// never are.
const MIRRORABLE: [&str; 4] = ["state", "plan", "config", "event"];

/// Daemon-side options of the apps listener and the metrics endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Options {
    pub listen: SocketAddr,
    pub anonymous: bool,
    #[serde(skip)]
    pub credentials: Option<ControlCredentials>,
    pub mirror: Vec<String>,
    pub max_queued_messages: usize,
    pub metrics: SocketAddr,
}

/// Everything the service needs to reconcile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Desired {
    pub enabled: bool,
    pub image: String,
    pub container_name: String,
    pub network_name: String,
    pub options: Options,
}

fn bad(field: &str, message: String) -> BusError {
    BusError::new(ErrorCode::InvalidValue, message).with_field(field.to_string())
}

impl Options {
    /// Read the options from `get` (the environment in iohubd); every problem is reported.
    pub fn from_env(
        backend: Backend,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Options, Vec<BusError>> {
        let mut errors = Vec::new();
        let live = backend == Backend::Live;
        let mut addr = |name: &str, default: &str| -> SocketAddr {
            let text = get(name).unwrap_or_else(|| default.to_string());
            text.trim().parse().unwrap_or_else(|_| {
                errors.push(bad(
                    name,
                    format!("{name}: {text:?} is not an address:port"),
                ));
                SocketAddr::from(([127, 0, 0, 1], 0))
            })
        };
        let listen = addr(
            "IOHUBD_GLOBAL_MQTT_LISTEN",
            if live {
                "127.0.0.1:1883"
            } else {
                "127.0.0.1:0"
            },
        );
        let metrics = addr(
            "IOHUBD_METRICS_LISTEN",
            if live {
                "127.0.0.1:9883"
            } else {
                "127.0.0.1:0"
            },
        );
        let anonymous = match get("IOHUBD_GLOBAL_MQTT_ANONYMOUS")
            .as_deref()
            .map(str::trim)
        {
            None | Some("true") => true,
            Some("false") => false,
            Some(other) => {
                errors.push(bad(
                    "IOHUBD_GLOBAL_MQTT_ANONYMOUS",
                    format!("IOHUBD_GLOBAL_MQTT_ANONYMOUS: {other:?} is not true or false"),
                ));
                true
            }
        };
        let credentials = match (
            get("IOHUBD_GLOBAL_MQTT_USERNAME").filter(|s| !s.is_empty()),
            get("IOHUBD_GLOBAL_MQTT_PASSWORD").filter(|s| !s.is_empty()),
        ) {
            (Some(username), Some(password)) => Some(ControlCredentials { username, password }),
            (None, None) => None,
            _ => {
                errors.push(bad(
                    "IOHUBD_GLOBAL_MQTT_USERNAME",
                    "IOHUBD_GLOBAL_MQTT_USERNAME and IOHUBD_GLOBAL_MQTT_PASSWORD go together"
                        .into(),
                ));
                None
            }
        };
        if !anonymous && credentials.is_none() {
            errors.push(bad(
                "IOHUBD_GLOBAL_MQTT_ANONYMOUS",
                "anonymous access is off but no login is configured: no app could connect".into(),
            ));
        }
        let mirror: Vec<String> = get("IOHUBD_GLOBAL_MQTT_MIRROR")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        for m in &mirror {
            if let Err(e) = check_mirror(m) {
                errors.push(bad("IOHUBD_GLOBAL_MQTT_MIRROR", e));
            }
        }
        let max_queued_messages = match get("IOHUBD_GLOBAL_MQTT_MAX_QUEUED") {
            None => 1000,
            Some(text) => match text.trim().parse::<usize>() {
                Ok(n) if (1..=1_000_000).contains(&n) => n,
                _ => {
                    errors.push(bad(
                        "IOHUBD_GLOBAL_MQTT_MAX_QUEUED",
                        format!("IOHUBD_GLOBAL_MQTT_MAX_QUEUED: {text:?} is not 1..=1000000"),
                    ));
                    1000
                }
            },
        };
        if errors.is_empty() {
            Ok(Options {
                listen,
                anonymous,
                credentials,
                mirror,
                max_queued_messages,
                metrics,
            })
        } else {
            Err(errors)
        }
    }
}

/// A mirror filter must stay inside one mirrorable subtree: `<root>/<state|plan|config|event>/...`.
pub fn check_mirror(filter: &str) -> Result<(), String> {
    let levels: Vec<&str> = filter.split('/').collect();
    let last = levels.len() - 1;
    let well_formed = !filter.contains('\0')
        && levels.iter().enumerate().all(|(i, l)| match *l {
            "#" => i == last,
            "+" => true,
            l => !l.contains(['+', '#']),
        });
    let ok = well_formed
        && levels.first() == Some(&ROOT)
        && levels.get(1).is_some_and(|l| MIRRORABLE.contains(l));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "mirror filter {filter:?} must be a filter under {ROOT}/{{{}}}/",
            MIRRORABLE.join(",")
        ))
    }
}

impl Desired {
    pub fn new(section: &GlobalMqtt, options: Options) -> Desired {
        Desired {
            enabled: section.enabled,
            image: section.image.clone(),
            container_name: section.container_name.clone(),
            network_name: section.network_name.clone(),
            options,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn defaults_depend_on_the_backend() {
        let o = Options::from_env(Backend::PlanOnly, env(&[])).unwrap();
        assert_eq!(o.listen.to_string(), "127.0.0.1:0");
        assert!(o.anonymous && o.mirror.is_empty() && o.credentials.is_none());
        let o = Options::from_env(Backend::Live, env(&[])).unwrap();
        assert_eq!(o.listen.to_string(), "127.0.0.1:1883");
        assert_eq!(o.metrics.to_string(), "127.0.0.1:9883");
    }

    #[test]
    fn every_bad_option_is_reported() {
        let mirror = format!("{ROOT}/state/#, {ROOT}/cmd/#,{ROOT}/#,a/b");
        let e = Options::from_env(
            Backend::PlanOnly,
            env(&[
                ("IOHUBD_GLOBAL_MQTT_LISTEN", "nowhere"),
                ("IOHUBD_GLOBAL_MQTT_ANONYMOUS", "false"),
                ("IOHUBD_GLOBAL_MQTT_MIRROR", &mirror),
                ("IOHUBD_GLOBAL_MQTT_MAX_QUEUED", "0"),
            ]),
        )
        .unwrap_err();
        let fields: Vec<_> = e
            .iter()
            .map(|e| e.field.clone().unwrap_or_default())
            .collect();
        assert_eq!(
            fields,
            [
                "IOHUBD_GLOBAL_MQTT_LISTEN",
                "IOHUBD_GLOBAL_MQTT_ANONYMOUS",
                "IOHUBD_GLOBAL_MQTT_MIRROR",
                "IOHUBD_GLOBAL_MQTT_MIRROR",
                "IOHUBD_GLOBAL_MQTT_MIRROR",
                "IOHUBD_GLOBAL_MQTT_MAX_QUEUED",
            ]
        );
    }

    #[test]
    fn mirror_filters_stay_in_readable_subtrees() {
        let c = |rest: &str| format!("{ROOT}/{rest}");
        for ok in ["state/#", "state/+", "plan/apps", "config/network"] {
            assert!(check_mirror(&c(ok)).is_ok(), "{ok}");
        }
        for bad in ["#", "+/x", "cmd/#", "reply/#", "state/#/x", "state/a+"] {
            assert!(check_mirror(&c(bad)).is_err(), "{bad}");
        }
        assert!(check_mirror("#").is_err());
    }
}
