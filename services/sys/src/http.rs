//! The only place iohub speaks HTTP as a client: the local Docker registry ([`RegistryClient`])
//! and the firmware's HTTPS source ([`Fetcher`]).
//!
//! The registry (distribution's API v2): plain HTTP to loopback, no proxy (an `HTTP_PROXY` in the
//! environment must not capture `127.0.0.1`), a timeout on every request except the streamed body
//! of a blob upload.
//!
//! The firmware source: rustls with the ring provider, trusting only the CA certificates given
//! (the pinned bundle, or the system's: never both), presenting the client certificate when one
//! is given, no proxy; a download continues the bytes already in its file with `Range` and is
//! fsynced every 4 MiB; a request stalled for [`FETCH_TIMEOUT`] fails.
//!
//! Uploads follow the API (<https://distribution.github.io/distribution/spec/api/>):
//! a small blob is `POST /v2/<name>/blobs/uploads/` then one `PUT <location>?digest=` with the
//! body (monolithic); a layer that is compressed while it is sent is `POST`, one streamed
//! `PATCH <location>`, then `PUT <location>?digest=` once its digest is known (what
//! `docker push` does). The registry checks the digest itself when the upload is closed.

use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use reqwest::{header, Client, StatusCode};

pub use reqwest::Url;

/// Timeout of every request but a streamed upload.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Media type of a Docker image manifest (schema 2).
pub const MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// A failed request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {message}")]
pub struct HttpError {
    pub what: String,
    pub message: String,
}

fn err(what: impl Into<String>, message: impl ToString) -> HttpError {
    HttpError {
        what: what.into(),
        message: message.to_string(),
    }
}

/// A client of one registry.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    base: Url,
    http: Client,
}

/// The outcome of a cross-repository mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    Mounted,
    /// The registry did not mount; an upload session was opened at this location instead.
    Upload(Url),
}

/// reqwest is built with `rustls-no-provider` (rustls on ring, not aws-lc-rs), so a client it
/// builds uses the process-wide default provider and panics when there is none: every client is
/// built after this has installed ring's, once.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err: a provider is installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl RegistryClient {
    /// `http://<host>:<port>/`.
    pub fn new(host: &str, port: u16) -> Result<RegistryClient, HttpError> {
        install_crypto_provider();
        let base = Url::parse(&format!("http://{host}:{port}/"))
            .map_err(|e| err("registry address", e))?;
        let http = Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| err("http client", e))?;
        Ok(RegistryClient { base, http })
    }

    fn url(&self, path: &str) -> Result<Url, HttpError> {
        self.base.join(path).map_err(|e| err(path, e))
    }

    /// `GET /v2/` answers 200.
    pub async fn ping(&self) -> bool {
        let Ok(url) = self.url("v2/") else {
            return false;
        };
        matches!(
            self.http.get(url).timeout(Duration::from_secs(2)).send().await,
            Ok(r) if r.status() == StatusCode::OK
        )
    }

    /// `HEAD /v2/<name>/blobs/<digest>`.
    pub async fn blob_exists(&self, repo: &str, digest: &str) -> Result<bool, HttpError> {
        let what = format!("HEAD blob {repo}@{digest}");
        let r = self
            .http
            .head(self.url(&format!("v2/{repo}/blobs/{digest}"))?)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| err(&what, e))?;
        match r.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(err(what, format!("HTTP {s}"))),
        }
    }

    /// `HEAD /v2/<name>/manifests/<tag>`: the manifest digest when the tag exists.
    pub async fn manifest_digest(
        &self,
        repo: &str,
        tag: &str,
    ) -> Result<Option<String>, HttpError> {
        let what = format!("HEAD manifest {repo}:{tag}");
        let r = self
            .http
            .head(self.url(&format!("v2/{repo}/manifests/{tag}"))?)
            .header(header::ACCEPT, MANIFEST_V2)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| err(&what, e))?;
        match r.status() {
            StatusCode::OK => Ok(r
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(err(what, format!("HTTP {s}"))),
        }
    }

    async fn start_upload(&self, repo: &str, query: &str) -> Result<(StatusCode, Url), HttpError> {
        let what = format!("start upload to {repo}");
        let r = self
            .http
            .post(self.url(&format!("v2/{repo}/blobs/uploads/{query}"))?)
            .header(header::CONTENT_LENGTH, "0")
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| err(&what, e))?;
        let status = r.status();
        if status != StatusCode::ACCEPTED && status != StatusCode::CREATED {
            return Err(err(what, failure(r).await));
        }
        Ok((status, self.location(&r, &what)?))
    }

    fn location(&self, r: &reqwest::Response, what: &str) -> Result<Url, HttpError> {
        let loc = r
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| err(what, "no Location header"))?;
        self.base.join(loc).map_err(|e| err(what, e))
    }

    /// Mount `digest` from repository `from` into `repo` (`POST ?mount=&from=`).
    pub async fn mount(&self, repo: &str, digest: &str, from: &str) -> Result<Mount, HttpError> {
        let (status, location) = self
            .start_upload(repo, &format!("?mount={digest}&from={from}"))
            .await?;
        Ok(if status == StatusCode::CREATED {
            Mount::Mounted
        } else {
            Mount::Upload(location)
        })
    }

    /// Close an upload session with its digest, sending `body` (may be empty).
    async fn finish(
        &self,
        mut location: Url,
        digest: &str,
        body: Vec<u8>,
    ) -> Result<(), HttpError> {
        let what = format!("close upload of {digest}");
        location.query_pairs_mut().append_pair("digest", digest);
        let r = self
            .http
            .put(location)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| err(&what, e))?;
        if r.status() != StatusCode::CREATED {
            return Err(err(what, failure(r).await));
        }
        Ok(())
    }

    /// Monolithic upload of a small blob: `POST`, then `PUT ?digest=` with the body.
    pub async fn upload_bytes(
        &self,
        repo: &str,
        digest: &str,
        body: Vec<u8>,
    ) -> Result<(), HttpError> {
        let (_, location) = self.start_upload(repo, "").await?;
        self.finish(location, digest, body).await
    }

    /// Streamed upload: `POST` (or the session a failed mount opened), one `PATCH` with the
    /// chunks, then `PUT ?digest=` with the digest `digest` yields once the stream has ended.
    pub async fn upload_stream<S, D>(
        &self,
        repo: &str,
        session: Option<Url>,
        chunks: S,
        digest: D,
    ) -> Result<String, HttpError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
        D: std::future::Future<Output = Result<String, String>>,
    {
        let location = match session {
            Some(l) => l,
            None => self.start_upload(repo, "").await?.1,
        };
        let what = format!("upload to {repo}");
        let r = self
            .http
            .patch(location)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(reqwest::Body::wrap_stream(chunks))
            .send()
            .await;
        // The producer's verdict first: when it failed, the HTTP error is only its echo.
        let digest = digest.await.map_err(|e| err(&what, e))?;
        let r = r.map_err(|e| err(&what, e))?;
        if r.status() != StatusCode::ACCEPTED {
            return Err(err(what, failure(r).await));
        }
        let location = self.location(&r, &what)?;
        self.finish(location, &digest, Vec::new()).await?;
        Ok(digest)
    }

    /// `PUT /v2/<name>/manifests/<tag>` (schema 2).
    pub async fn put_manifest(
        &self,
        repo: &str,
        tag: &str,
        body: Vec<u8>,
    ) -> Result<(), HttpError> {
        let what = format!("PUT manifest {repo}:{tag}");
        let r = self
            .http
            .put(self.url(&format!("v2/{repo}/manifests/{tag}"))?)
            .header(header::CONTENT_TYPE, MANIFEST_V2)
            .body(body)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| err(&what, e))?;
        if r.status() != StatusCode::CREATED {
            return Err(err(what, failure(r).await));
        }
        Ok(())
    }
}

/// `HTTP <status>: <start of the body>`.
async fn failure(r: reqwest::Response) -> String {
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    let body: String = body.chars().take(300).collect();
    format!("HTTP {status}: {}", body.trim())
}

/// TLS of the firmware's HTTPS source: the CAs trusted (the pinned bundle, or the system's when
/// none is pinned; never both) and an optional client certificate, all PEM.
#[derive(Clone, Default)]
pub struct TlsFiles {
    pub roots_pem: Vec<u8>,
    /// Certificate chain and private key.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

/// An HTTPS client of the firmware's source (rustls with ring: only the CAs of [`TlsFiles`]).
#[derive(Debug, Clone)]
pub struct Fetcher {
    http: Client,
}

/// Timeout of a small request (the manifest) and the longest silence inside a download.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest download whose size is not known beforehand.
pub const MAX_UNSIZED: u64 = 4 << 30;

/// How often a download's bytes are fsynced (and reported).
const SYNC_EVERY: u64 = 4 << 20;

/// A download that ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Downloaded {
    /// Bytes already on disk when it started (asked for with `Range`).
    pub resumed_from: u64,
    /// Bytes received in this run.
    pub received: u64,
}

/// `error: cause: cause...`: reqwest's own message says little ("error sending request"); the
/// TLS reason (unknown issuer, certificate required) is in the chain.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let m = s.to_string();
        if !out.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
        next = s.source();
    }
    out
}

fn tls_config(tls: &TlsFiles) -> Result<rustls::ClientConfig, HttpError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&tls.roots_pem) {
        let cert = cert.map_err(|e| err("CA bundle", e))?;
        roots.add(cert).map_err(|e| err("CA bundle", e))?;
    }
    if roots.is_empty() {
        return Err(err("CA bundle", "no certificate in it"));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err("TLS", e))?
        .with_root_certificates(roots);
    match &tls.client {
        None => Ok(builder.with_no_client_auth()),
        Some((cert_pem, key_pem)) => {
            let certs = CertificateDer::pem_slice_iter(cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| err("client certificate", e))?;
            if certs.is_empty() {
                return Err(err("client certificate", "no certificate in it"));
            }
            let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| err("client key", e))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| err("client certificate", e))
        }
    }
}

impl Fetcher {
    pub fn new(tls: &TlsFiles) -> Result<Fetcher, HttpError> {
        install_crypto_provider();
        let http = Client::builder()
            .no_proxy()
            .tls_backend_preconfigured(tls_config(tls)?)
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|e| err("https client", chain(&e)))?;
        Ok(Fetcher { http })
    }

    /// `GET url`, at most `max` bytes.
    pub async fn get_bytes(&self, url: &Url, max: u64) -> Result<Vec<u8>, HttpError> {
        let what = format!("GET {url}");
        let mut r = self
            .http
            .get(url.clone())
            .timeout(FETCH_TIMEOUT)
            .send()
            .await
            .map_err(|e| err(&what, chain(&e)))?;
        if r.status() != StatusCode::OK {
            return Err(err(what, failure(r).await));
        }
        let mut body = Vec::new();
        while let Some(chunk) = r.chunk().await.map_err(|e| err(&what, chain(&e)))? {
            body.extend_from_slice(&chunk);
            if body.len() as u64 > max {
                return Err(err(what, format!("longer than {max} bytes")));
            }
        }
        Ok(body)
    }

    /// Download `url` into `part` until it holds `size` bytes, continuing from the bytes already
    /// there (`Range: bytes=<have>-`; a server that answers 200 restarts it). Without a `size`
    /// the file starts empty and the body's end is the end (at most [`MAX_UNSIZED`]). The bytes are
    /// fsynced every few MiB and at the end; `progress` gets the bytes on disk. The content is
    /// not checked here (the caller hashes the whole file against what it expects).
    pub async fn download(
        &self,
        url: &Url,
        part: &std::path::Path,
        size: Option<u64>,
        mut progress: impl FnMut(u64) + Send,
    ) -> Result<Downloaded, HttpError> {
        use std::io::{Seek, Write};
        let what = format!("GET {url}");
        let io = |e: std::io::Error| err(format!("{}", part.display()), e);
        let p = part.to_path_buf();
        let (mut file, mut have) =
            tokio::task::spawn_blocking(move || crate::fs::open_resumable(&p, 0o600))
                .await
                .map_err(|e| err("download task", e))?
                .map_err(io)?;
        let sized = size.is_some();
        let size = size.unwrap_or(MAX_UNSIZED);
        if have > size || !sized {
            file.set_len(0).map_err(io)?;
            file.seek(std::io::SeekFrom::Start(0)).map_err(io)?;
            have = 0;
        }
        let resumed_from = have;
        if sized && have == size {
            return Ok(Downloaded {
                resumed_from,
                received: 0,
            });
        }
        let mut req = self.http.get(url.clone());
        if have > 0 {
            req = req.header(header::RANGE, format!("bytes={have}-"));
        }
        let mut r = req.send().await.map_err(|e| err(&what, chain(&e)))?;
        let start = match r.status() {
            StatusCode::PARTIAL_CONTENT => {
                let range = r
                    .headers()
                    .get(header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !range.starts_with(&format!("bytes {have}-")) {
                    return Err(err(
                        what,
                        format!("asked for bytes {have}-, the server sent `{range}`"),
                    ));
                }
                have
            }
            StatusCode::OK => 0,
            _ => return Err(err(what, failure(r).await)),
        };
        if start == 0 && have > 0 {
            file.set_len(0).map_err(io)?;
            file.seek(std::io::SeekFrom::Start(0)).map_err(io)?;
        }
        let (mut on_disk, mut synced, mut received) = (start, start, 0u64);
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
        loop {
            let chunk = r.chunk().await.map_err(|e| err(&what, chain(&e)))?;
            let end = chunk.is_none();
            if let Some(c) = &chunk {
                received += c.len() as u64;
                if start + received > size {
                    let m = if sized {
                        format!("the server sent more than the {size} bytes expected")
                    } else {
                        format!("longer than {size} bytes")
                    };
                    return Err(err(what, m));
                }
                buf.extend_from_slice(c);
            }
            if buf.len() >= (1 << 20) || (end && !buf.is_empty()) {
                let data = std::mem::take(&mut buf);
                let n = data.len() as u64;
                let sync = end || on_disk + n - synced >= SYNC_EVERY;
                file = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
                    file.write_all(&data)?;
                    if sync {
                        file.sync_data()?;
                    }
                    Ok(file)
                })
                .await
                .map_err(|e| err("download task", e))?
                .map_err(io)?;
                on_disk += n;
                if sync {
                    synced = on_disk;
                    progress(on_disk);
                }
            }
            if end {
                break;
            }
        }
        if sized && on_disk != size {
            return Err(err(
                what,
                format!("the body ended at {on_disk} of {size} bytes"),
            ));
        }
        Ok(Downloaded {
            resumed_from,
            received,
        })
    }
}
