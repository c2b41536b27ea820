//! The WireGuard UAPI boundary: the cross-platform configuration protocol a userspace WireGuard
//! (wireguard-go, boringtun) serves on the unix socket `/var/run/wireguard/<interface>.sock`
//! (<https://www.wireguard.com/xplatform/>), the same one `wg` speaks to them.
//!
//! A request is `set=1` or `get=1`, then `key=value` lines, then an empty line; the answer of a
//! `get` is `key=value` lines, and every answer ends with `errno=N` and an empty line. Keys are
//! sent in lowercase hex. [`Set`] builds a `set=1` request (pure, tested against the text `wg`
//! sends), [`parse_get`] reads a `get=1` answer into [`Device`] (the device's `private_key` line
//! is skipped while parsing: it never reaches a caller), and [`Uapi`] does the socket exchange.
//!
//! No crate on crates.io fitted: `wireguard-control` (innernet) starts a userspace
//! implementation itself when the socket is missing (a process outside `crate::cmd` and
//! `crate::child`), `wireguard-uapi` speaks the kernel's generic netlink only.
//!
//! Secrets: a [`Set`] holding a private key never prints it (`Debug` is redacted), and errors
//! carry the interface and errno, never the request.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Where userspace implementations put their sockets (fixed in wireguard-go and boringtun).
pub const SOCKET_DIR: &str = "/var/run/wireguard";
/// How long one exchange may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// The longest answer read (a device with a handful of peers answers in well under 1 KiB).
const MAX_ANSWER: usize = 1 << 20;

/// A UAPI failure.
#[derive(Debug, thiserror::Error)]
pub enum UapiError {
    #[error("WireGuard UAPI socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("WireGuard UAPI socket {path}: no answer within {TIMEOUT:?}")]
    Timeout { path: PathBuf },
    #[error("WireGuard UAPI on {interface}: the request was refused with errno {errno}")]
    Errno { interface: String, errno: i64 },
    #[error("WireGuard UAPI on {interface}: {what}")]
    Protocol { interface: String, what: String },
}

/// A 32-byte key as base64 (what `wg` and config files show) into UAPI hex.
pub fn key_hex(key: &[u8; 32]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// UAPI hex into a 32-byte key.
pub fn key_from_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(key)
}

/// One peer of a `set=1` request.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerSet {
    pub public_key: [u8; 32],
    pub endpoint: Option<SocketAddr>,
    /// Seconds; 0 turns it off.
    pub persistent_keepalive: u16,
    /// `replace_allowed_ips=true` then these.
    pub allowed_ips: Vec<String>,
}

/// A `set=1` request.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Set {
    /// The device's private key (the device's public key follows from it).
    pub private_key: Option<[u8; 32]>,
    pub listen_port: Option<u16>,
    /// Remove every peer first (`replace_peers=true`).
    pub replace_peers: bool,
    pub peers: Vec<PeerSet>,
}

impl fmt::Debug for Set {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Set")
            .field("private_key", &self.private_key.map(|_| "<redacted>"))
            .field("listen_port", &self.listen_port)
            .field("replace_peers", &self.replace_peers)
            .field("peers", &self.peers.len())
            .finish()
    }
}

impl Set {
    /// The request's text, ending with the empty line.
    pub fn text(&self) -> String {
        let mut t = String::from("set=1\n");
        if let Some(k) = &self.private_key {
            t.push_str(&format!("private_key={}\n", key_hex(k)));
        }
        if let Some(p) = self.listen_port {
            t.push_str(&format!("listen_port={p}\n"));
        }
        if self.replace_peers {
            t.push_str("replace_peers=true\n");
        }
        for p in &self.peers {
            t.push_str(&format!("public_key={}\n", key_hex(&p.public_key)));
            if let Some(e) = p.endpoint {
                t.push_str(&format!("endpoint={e}\n"));
            }
            t.push_str(&format!(
                "persistent_keepalive_interval={}\n",
                p.persistent_keepalive
            ));
            t.push_str("replace_allowed_ips=true\n");
            for ip in &p.allowed_ips {
                t.push_str(&format!("allowed_ip={ip}\n"));
            }
        }
        t.push('\n');
        t
    }
}

/// One peer as a `get=1` answer reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerInfo {
    pub public_key: [u8; 32],
    pub endpoint: Option<String>,
    /// Milliseconds since the epoch of the last completed handshake; none before the first.
    pub last_handshake_ms: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub persistent_keepalive: u16,
    pub allowed_ips: Vec<String>,
}

/// A device as a `get=1` answer reports it (without its private key).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Device {
    /// Whether the device has a private key at all.
    pub has_private_key: bool,
    pub listen_port: Option<u16>,
    pub peers: Vec<PeerInfo>,
}

/// Read the `key=value` lines of a `get=1` answer (up to `errno=`).
pub fn parse_get(interface: &str, text: &str) -> Result<Device, UapiError> {
    let bad = |what: String| UapiError::Protocol {
        interface: interface.to_string(),
        what,
    };
    let mut dev = Device::default();
    let mut secs: Option<u64> = None;
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(bad("an answer line without `=`".into()));
        };
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| bad(format!("`{key}` is not a number")))
        };
        match key {
            // Never copied anywhere: only its presence is kept.
            "private_key" => dev.has_private_key = value.bytes().any(|b| b != b'0'),
            "listen_port" => dev.listen_port = u16::try_from(num(value)?).ok(),
            "public_key" => {
                let k = key_from_hex(value).ok_or_else(|| bad("a malformed public key".into()))?;
                dev.peers.push(PeerInfo {
                    public_key: k,
                    ..PeerInfo::default()
                });
                secs = None;
            }
            "errno" => {
                let errno: i64 = value.parse().map_err(|_| bad("a malformed errno".into()))?;
                if errno != 0 {
                    return Err(UapiError::Errno {
                        interface: interface.to_string(),
                        errno,
                    });
                }
                return Ok(dev);
            }
            _ => {
                let Some(peer) = dev.peers.last_mut() else {
                    continue; // device fields we do not use (fwmark, ...)
                };
                match key {
                    "endpoint" => peer.endpoint = Some(value.to_string()),
                    "last_handshake_time_sec" => secs = Some(num(value)?),
                    "last_handshake_time_nsec" => {
                        let s = secs.unwrap_or(0);
                        let ms = s * 1000 + num(value)? / 1_000_000;
                        peer.last_handshake_ms = (ms > 0).then_some(ms);
                    }
                    "rx_bytes" => peer.rx_bytes = num(value)?,
                    "tx_bytes" => peer.tx_bytes = num(value)?,
                    "persistent_keepalive_interval" => {
                        peer.persistent_keepalive = u16::try_from(num(value)?).unwrap_or(0)
                    }
                    "allowed_ip" => peer.allowed_ips.push(value.to_string()),
                    _ => {}
                }
            }
        }
    }
    Err(bad("the answer ended without `errno=`".into()))
}

/// The UAPI socket of one interface.
#[derive(Debug, Clone)]
pub struct Uapi {
    pub interface: String,
    pub path: PathBuf,
}

impl Uapi {
    /// The socket of `interface` in [`SOCKET_DIR`].
    pub fn new(interface: &str) -> Uapi {
        Uapi {
            interface: interface.to_string(),
            path: PathBuf::from(SOCKET_DIR).join(format!("{interface}.sock")),
        }
    }

    /// Whether the socket exists (the daemon is up and serving).
    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    /// Send a `set=1` request; an errno other than 0 is an error.
    pub async fn set(&self, set: &Set) -> Result<(), UapiError> {
        let answer = self.exchange(&set.text()).await?;
        parse_get(&self.interface, &answer).map(|_| ())
    }

    /// Send `get=1` and read the device.
    pub async fn get(&self) -> Result<Device, UapiError> {
        let answer = self.exchange("get=1\n\n").await?;
        parse_get(&self.interface, &answer)
    }

    async fn exchange(&self, request: &str) -> Result<String, UapiError> {
        let io = |source| UapiError::Io {
            path: self.path.clone(),
            source,
        };
        let work = async {
            let mut stream = UnixStream::connect(&self.path).await.map_err(io)?;
            stream.write_all(request.as_bytes()).await.map_err(io)?;
            let mut reader = BufReader::new(stream);
            let mut answer = String::new();
            loop {
                let mut line = String::new();
                let n = reader.read_line(&mut line).await.map_err(io)?;
                if n == 0 || line == "\n" || answer.len() > MAX_ANSWER {
                    break;
                }
                let last = line.starts_with("errno=");
                answer.push_str(&line);
                if last {
                    break;
                }
            }
            Ok(answer)
        };
        tokio::time::timeout(TIMEOUT, work)
            .await
            .map_err(|_| UapiError::Timeout {
                path: self.path.clone(),
            })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_hex() {
        let k: [u8; 32] = std::array::from_fn(|i| i as u8 * 7);
        assert_eq!(key_from_hex(&key_hex(&k)), Some(k));
        assert_eq!(key_hex(&[0xab; 32]).len(), 64);
        assert_eq!(key_from_hex("zz"), None);
        assert_eq!(key_from_hex(&"g".repeat(64)), None);
    }

    #[test]
    fn a_set_request_is_the_text_wg_sends() {
        let set = Set {
            private_key: Some([1; 32]),
            listen_port: None,
            replace_peers: true,
            peers: vec![PeerSet {
                public_key: [2; 32],
                endpoint: Some("198.18.0.1:51820".parse().unwrap()),
                persistent_keepalive: 25,
                allowed_ips: vec!["100.90.56.0/24".into(), "198.19.0.0/24".into()],
            }],
        };
        let text = set.text();
        assert_eq!(
            text,
            format!(
                "set=1\nprivate_key={}\nreplace_peers=true\npublic_key={}\nendpoint=198.18.0.1:51820\n\
                 persistent_keepalive_interval=25\nreplace_allowed_ips=true\nallowed_ip=100.90.56.0/24\n\
                 allowed_ip=198.19.0.0/24\n\n",
                "01".repeat(32),
                "02".repeat(32)
            )
        );
        let debug = format!("{set:?}");
        assert!(!debug.contains(&"01".repeat(32)) && debug.contains("redacted"));
    }

    #[test]
    fn a_get_answer_gives_the_peers_and_never_the_private_key() {
        let answer = format!(
            "private_key={}\nlisten_port=41000\nfwmark=0\npublic_key={}\nendpoint=198.18.0.1:51820\n\
             last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=250000000\ntx_bytes=1200\n\
             rx_bytes=3400\npersistent_keepalive_interval=25\nallowed_ip=100.90.56.0/24\n\
             protocol_version=1\nerrno=0\n",
            "11".repeat(32),
            "22".repeat(32)
        );
        let dev = parse_get("wg0", &answer).unwrap();
        assert!(dev.has_private_key);
        assert_eq!(dev.listen_port, Some(41000));
        assert_eq!(
            dev.peers,
            vec![PeerInfo {
                public_key: [0x22; 32],
                endpoint: Some("198.18.0.1:51820".into()),
                last_handshake_ms: Some(1_700_000_000_250),
                rx_bytes: 3400,
                tx_bytes: 1200,
                persistent_keepalive: 25,
                allowed_ips: vec!["100.90.56.0/24".into()],
            }]
        );
        assert!(!format!("{dev:?}").contains(&"11".repeat(32)));
        // Before the first handshake the time is 0: none.
        let fresh = format!(
            "public_key={}\nlast_handshake_time_sec=0\nlast_handshake_time_nsec=0\nerrno=0\n",
            "22".repeat(32)
        );
        assert_eq!(
            parse_get("wg0", &fresh).unwrap().peers[0].last_handshake_ms,
            None
        );
    }

    #[test]
    fn errno_and_truncated_answers_are_errors() {
        assert!(matches!(
            parse_get("wg0", "errno=22\n"),
            Err(UapiError::Errno { errno: 22, .. })
        ));
        assert!(matches!(
            parse_get("wg0", "listen_port=1\n"),
            Err(UapiError::Protocol { .. })
        ));
        assert!(matches!(
            parse_get("wg0", "public_key=xyz\nerrno=0\n"),
            Err(UapiError::Protocol { .. })
        ));
    }

    /// The exchange against a socket that answers like wireguard-go.
    #[tokio::test]
    async fn the_exchange_reads_up_to_errno() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wgt.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let mut r = BufReader::new(s);
            let mut req = String::new();
            loop {
                let mut line = String::new();
                r.read_line(&mut line).await.unwrap();
                if line == "\n" || line.is_empty() {
                    break;
                }
                req.push_str(&line);
            }
            r.get_mut().write_all(b"errno=0\n\n").await.unwrap();
            req
        });
        let uapi = Uapi {
            interface: "wgt".into(),
            path: path.clone(),
        };
        uapi.set(&Set {
            listen_port: Some(7),
            ..Set::default()
        })
        .await
        .unwrap();
        assert_eq!(server.await.unwrap(), "set=1\nlisten_port=7\n");
    }
}
