//! HTTP to the local Docker registry (distribution's API v2): the only place iohub speaks HTTP
//! as a client. Plain HTTP to loopback, no proxy (an `HTTP_PROXY` in the environment must not
//! capture `127.0.0.1`), a timeout on every request except the streamed body of a blob upload.
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

impl RegistryClient {
    /// `http://<host>:<port>/`.
    pub fn new(host: &str, port: u16) -> Result<RegistryClient, HttpError> {
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
