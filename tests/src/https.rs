//! A test PKI (rcgen: a CA, a server certificate for 127.0.0.1/localhost, a client certificate)
//! and a small HTTPS file server on loopback (tokio-rustls): `GET` of files of a directory with
//! `Range: bytes=N-` (206), optionally requiring a client certificate of the CA, optionally
//! throttled, every request logged (path, range, status) so that tests see what a client asked.
//! One request per connection (`Connection: close`); the accept loop ends with the server.
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)] // test helper

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// PEM files of a test PKI.
#[derive(Clone)]
pub struct Pki {
    pub ca: String,
    pub server_cert: String,
    pub server_key: String,
    pub client_cert: String,
    pub client_key: String,
}

impl Pki {
    pub fn generate(name: &str) -> Pki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf = |sans: Vec<String>, cn: &str, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(sans).unwrap();
            p.distinguished_name.push(DnType::CommonName, cn);
            p.extended_key_usages = vec![usage];
            let cert = p.signed_by(&key, &ca).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            "localhost",
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = leaf(vec![], "box-1", ExtendedKeyUsagePurpose::ClientAuth);
        Pki {
            ca: ca.pem(),
            server_cert,
            server_key,
            client_cert,
            client_key,
        }
    }

    /// Write `ca.pem`, `client.pem`, `client.key` into `dir` (the box's side).
    pub fn write_client_files(&self, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        for (n, t) in [
            ("ca.pem", &self.ca),
            ("client.pem", &self.client_cert),
            ("client.key", &self.client_key),
        ] {
            std::fs::write(dir.join(n), t).unwrap();
        }
    }
}

/// One request the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub path: String,
    pub range: Option<String>,
    pub status: u16,
}

/// A running server; stops when dropped.
pub struct Server {
    pub port: u16,
    log: Arc<Mutex<Vec<Logged>>>,
    /// Bytes per second of a response body (0: as fast as possible).
    throttle: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Server {
    /// Serve `dir` on 127.0.0.1 (an ephemeral port) with the PKI's server certificate;
    /// `require_client`: only clients with a certificate of the PKI's CA get past the handshake.
    pub async fn start(dir: PathBuf, pki: &Pki, require_client: bool) -> Server {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if require_client {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(pki.ca.as_bytes()) {
                roots.add(c.unwrap()).unwrap();
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(pki.server_cert.as_bytes())
                .map(|c| c.unwrap())
                .collect();
        let key = PrivateKeyDer::from_pem_slice(pki.server_key.as_bytes()).unwrap();
        let config = builder.with_single_cert(certs, key).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let throttle = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let (l, t, s) = (log.clone(), throttle.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let conn = tokio::select! {
                    () = s.cancelled() => break,
                    c = listener.accept() => c,
                };
                let Ok((tcp, _)) = conn else { continue };
                let (acceptor, dir, l, t, s) = (
                    acceptor.clone(),
                    dir.clone(),
                    l.clone(),
                    t.clone(),
                    s.clone(),
                );
                tokio::spawn(async move {
                    let served = async {
                        let Ok(Ok(tls)) =
                            tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                                .await
                        else {
                            return;
                        };
                        serve(tls, &dir, &l, &t).await;
                    };
                    tokio::select! {
                        () = s.cancelled() => {}
                        () = served => {}
                    }
                });
            }
        });
        Server {
            port,
            log,
            throttle,
            stop,
        }
    }

    /// `https://127.0.0.1:<port>/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}/{path}", self.port)
    }

    pub fn log(&self) -> Vec<Logged> {
        self.log.lock().unwrap().clone()
    }

    pub fn set_throttle(&self, bytes_per_sec: u64) {
        self.throttle.store(bytes_per_sec, Ordering::Relaxed);
    }
}

async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    dir: &Path,
    log: &Mutex<Vec<Logged>>,
    throttle: &AtomicU64,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > 16 << 10 {
            return;
        }
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("");
    let mut parts = first.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let range = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("range"))
        .map(|(_, v)| v.trim().to_string());
    let path = target.trim_start_matches('/').to_string();
    let file = (method == "GET" && !path.split('/').any(|c| c == ".." || c.is_empty()))
        .then(|| std::fs::read(dir.join(&path)).ok())
        .flatten();
    let Some(body) = file else {
        log.lock().unwrap().push(Logged {
            path,
            range,
            status: 404,
        });
        let _ = s
            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await;
        let _ = s.shutdown().await;
        return;
    };
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| *n < body.len());
    let (status, head, from) = match start {
        Some(n) => (
            206,
            format!(
                "HTTP/1.1 206 Partial Content\r\ncontent-length: {}\r\ncontent-range: bytes {n}-{}/{}\r\nconnection: close\r\n\r\n",
                body.len() - n,
                body.len() - 1,
                body.len()
            ),
            n,
        ),
        None => (
            200,
            format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\naccept-ranges: bytes\r\nconnection: close\r\n\r\n",
                body.len()
            ),
            0,
        ),
    };
    log.lock().unwrap().push(Logged {
        path,
        range,
        status,
    });
    if s.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    for chunk in body[from..].chunks(16 << 10) {
        if s.write_all(chunk).await.is_err() {
            return;
        }
        let rate = throttle.load(Ordering::Relaxed);
        if rate > 0 {
            tokio::time::sleep(Duration::from_secs_f64(chunk.len() as f64 / rate as f64)).await;
        }
    }
    let _ = s.shutdown().await;
}
