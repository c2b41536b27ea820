//! Import of one `docker save` archive into the registry, without a Docker daemon.
//!
//! 1. *Verify* (blocking thread): stream the file once, hashing it (its content digest is the
//!    key of `runtime/registry-imports.json`) and every file in it ([`archive::scan`]); check
//!    every digest ([`archive::index`]). Nothing is pushed from an archive that fails here.
//! 2. An archive whose digest is recorded as imported stops here (`already_imported`).
//! 3. *Push*: for each layer, the blob is looked up (`HEAD`, or a cross-repository mount from a
//!    repository that holds it, by the compressed digest recorded when it was first pushed);
//!    the missing ones are streamed a second time from the archive, gzip-compressed on the
//!    fly (docker save layers are plain tars; schema 2 wants
//!    `application/vnd.docker.image.rootfs.diff.tar.gzip` blobs, digest of the compressed
//!    bytes) and uploaded (`POST`, streamed `PATCH`, `PUT ?digest=`). The uncompressed digest
//!    is checked again against the config's `diff_ids` *before* the upload is closed, so a file
//!    that changed between the passes is never committed. Then the configs (monolithic
//!    upload) and one schema-2 manifest per tag.
//! 4. The archive's digest is recorded only when every tag was pushed; a failure records
//!    nothing (the caller never deletes a failed archive).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bus_schema::{BusError, ErrorCode};
use bytes::Bytes;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use super::archive::{self, ArchiveError, HashWriter, Image, Index};
use super::state::{DoneStore, KnownLayer};
use sys::http::{Mount, RegistryClient};

/// Size of the chunks sent to the registry.
const CHUNK: usize = 256 << 10;

const LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const CONFIG_JSON: &str = "application/vnd.docker.container.image.v1+json";

/// The current phase and bytes read of the archive file, shared with the progress reporter.
#[derive(Debug, Default)]
pub struct Meter {
    pub bytes: AtomicU64,
    /// 0 = verifying, 1 = pushing.
    pub phase: AtomicU64,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// `sha256:<hex>` of the archive file.
    pub digest: String,
    pub already_imported: bool,
    /// `name:tag` pushed (or found pushed, for an archive imported before).
    pub images: Vec<String>,
    pub skipped: Vec<String>,
    pub layers_uploaded: usize,
    pub layers_present: usize,
    pub bytes_uploaded: u64,
}

/// Why an import failed: every problem found.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportError(pub Vec<BusError>);

impl ImportError {
    fn one(code: ErrorCode, message: impl Into<String>) -> ImportError {
        ImportError(vec![BusError::new(code, message)])
    }
}

impl From<ArchiveError> for ImportError {
    fn from(e: ArchiveError) -> ImportError {
        let code = match e {
            ArchiveError::Read(_) => ErrorCode::Io,
            _ => ErrorCode::InvalidValue,
        };
        ImportError::one(code, e.to_string())
    }
}

impl From<sys::http::HttpError> for ImportError {
    fn from(e: sys::http::HttpError) -> ImportError {
        ImportError::one(ErrorCode::Io, format!("registry: {e}"))
    }
}

/// A reader that counts and hashes what passes through it.
struct Metered<'a, R> {
    inner: R,
    hash: Sha256,
    meter: &'a Meter,
}

impl<R: Read> Read for Metered<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.meter.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

fn open(path: &Path) -> Result<std::fs::File, ImportError> {
    std::fs::File::open(path)
        .map_err(|e| ImportError::one(ErrorCode::Io, format!("{}: {e}", path.display())))
}

/// Pass 1 (blocking): the archive's digest and its checked index.
pub fn verify(path: &Path, meter: &Meter) -> Result<(String, Index), ImportError> {
    let file = open(path)?;
    let mut metered = Metered {
        inner: io::BufReader::with_capacity(CHUNK, file),
        hash: Sha256::new(),
        meter,
    };
    let scan = {
        let mut tar = archive::decompress(&mut metered)?;
        let scan = archive::scan(&mut tar)?;
        // To the end of the stream, so that gzip checks its trailer (CRC, length).
        io::copy(&mut tar, &mut io::sink()).map_err(ArchiveError::from)?;
        scan
    };
    io::copy(&mut metered, &mut io::sink()).map_err(ArchiveError::from)?;
    let digest = format!("sha256:{}", hex::encode(metered.hash.finalize()));
    let index = archive::index(&scan).map_err(|errors| {
        ImportError(
            errors
                .into_iter()
                .map(|e| ImportError::from(e).0.remove(0))
                .collect(),
        )
    })?;
    Ok((digest, index))
}

/// One layer's bytes on their way to the registry, and its digests once read.
struct LayerStream {
    path: String,
    chunks: mpsc::Receiver<Result<Bytes, io::Error>>,
    done: oneshot::Receiver<Result<Sent, String>>,
}

/// Digests of a layer as sent.
#[derive(Debug)]
struct Sent {
    /// `sha256:` of the bytes sent.
    digest: String,
    size: u64,
    /// `sha256:` of the uncompressed tar.
    diff_id: String,
}

/// Cuts what is written into chunks for the channel, hashing and counting them.
struct ChunkSink {
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
    buf: Vec<u8>,
    hash: Sha256,
    size: u64,
}

impl ChunkSink {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "upload aborted"))
    }
}

impl Write for ChunkSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.hash.update(data);
        self.size += data.len() as u64;
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Send one file: gzip-compressed when `compress`, else as it is; hashes both sides.
fn send_layer(
    content: &mut dyn Read,
    compress: bool,
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
) -> io::Result<Sent> {
    let sink = ChunkSink {
        tx,
        buf: Vec::with_capacity(CHUNK),
        hash: Sha256::new(),
        size: 0,
    };
    let mut buf = vec![0u8; CHUNK];
    if compress {
        let mut plain = HashWriter::default();
        let mut gz = flate2::write::GzEncoder::new(sink, flate2::Compression::fast());
        loop {
            let n = content.read(&mut buf)?;
            if n == 0 {
                break;
            }
            plain.0.update(&buf[..n]);
            gz.write_all(&buf[..n])?;
        }
        let mut sink = gz.finish()?;
        sink.send()?;
        Ok(Sent {
            digest: format!("sha256:{}", hex::encode(sink.hash.finalize())),
            size: sink.size,
            diff_id: format!("sha256:{}", hex::encode(plain.0.finalize())),
        })
    } else {
        // Already gzip: sent as it is; its uncompressed digest is checked on the side.
        let mut gunzip = flate2::write::GzDecoder::new(HashWriter::default());
        let mut sink = sink;
        loop {
            let n = content.read(&mut buf)?;
            if n == 0 {
                break;
            }
            gunzip.write_all(&buf[..n])?;
            sink.write_all(&buf[..n])?;
        }
        sink.send()?;
        let plain = gunzip.finish()?;
        Ok(Sent {
            digest: format!("sha256:{}", hex::encode(sink.hash.finalize())),
            size: sink.size,
            diff_id: format!("sha256:{}", hex::encode(plain.0.finalize())),
        })
    }
}

/// Pass 2 (blocking): stream the wanted layers, in archive order, into `layers`.
fn stream_layers(
    path: &Path,
    wanted: BTreeMap<String, bool>,
    layers: mpsc::Sender<LayerStream>,
    meter: &Meter,
) -> Result<(), ImportError> {
    let file = open(path)?;
    let mut metered = Metered {
        inner: io::BufReader::with_capacity(CHUNK, file),
        hash: Sha256::new(),
        meter,
    };
    let tar = archive::decompress(&mut metered)?;
    let names: BTreeSet<String> = wanted.keys().cloned().collect();
    archive::for_each_file(tar, &names, |name, content| {
        let (tx, rx) = mpsc::channel(4);
        let (done_tx, done_rx) = oneshot::channel();
        layers
            .blocking_send(LayerStream {
                path: name.to_string(),
                chunks: rx,
                done: done_rx,
            })
            .map_err(|_| ImportError::one(ErrorCode::Io, "upload aborted"))?;
        let compress = wanted.get(name).copied().unwrap_or(true);
        let sent = send_layer(content, compress, tx).map_err(|e| e.to_string());
        let failed = sent.as_ref().err().cloned();
        let _ = done_tx.send(sent);
        match failed {
            Some(e) => Err(ImportError::one(ErrorCode::Io, format!("{name}: {e}"))),
            None => Ok(()),
        }
    })
}

/// Where a layer's blob is, per repository, once pushed.
#[derive(Debug, Clone)]
struct Blob {
    digest: String,
    size: u64,
}

/// A layer to upload: where its blob goes, and the upload session a mount attempt opened.
#[derive(Debug)]
struct Pending {
    /// Its number in [`Index::layers`].
    layer: usize,
    repository: String,
    session: Option<sys::http::Url>,
}

/// Where a layer's known blob stands in the registry.
enum Placement {
    /// Present in a repository that needs it (there already, or mounted).
    Placed,
    /// To upload, into the session a refused mount opened, if any.
    Missing(Option<sys::http::Url>),
}

/// Import the archive at `path` (pass 1 already done: `digest`, `index`).
pub async fn push(
    client: &RegistryClient,
    path: &Path,
    digest: String,
    index: Index,
    store: &mut DoneStore,
    meter: Arc<Meter>,
) -> Result<Report, ImportError> {
    let mut report = Report {
        digest: digest.clone(),
        images: index
            .images
            .iter()
            .flat_map(|i| i.tags.iter().map(ToString::to_string))
            .collect(),
        skipped: index.skipped.clone(),
        ..Report::default()
    };
    if store.archives.contains_key(&digest) {
        report.already_imported = true;
        return Ok(report);
    }
    let mut pusher = Pusher {
        client,
        index: &index,
        repos_of: repositories_of_layers(&index),
        blobs: vec![None; index.layers.len()],
    };
    let upload = pusher.place_known_layers(store, &mut report).await?;
    if !upload.is_empty() {
        pusher
            .upload_layers(path, upload, store, &mut report, meter)
            .await?;
    }
    pusher.mount_into_every_repository().await?;
    pusher.push_images().await?;
    Ok(report)
}

/// The repositories that need each layer (by layer number): those of every tag of every image
/// that has it.
fn repositories_of_layers(index: &Index) -> Vec<BTreeSet<String>> {
    let mut repos_of: Vec<BTreeSet<String>> = vec![BTreeSet::new(); index.layers.len()];
    for image in &index.images {
        for &l in &image.layers {
            for t in &image.tags {
                repos_of[l].insert(t.repository.clone());
            }
        }
    }
    repos_of
}

/// The push of one verified archive: the registry, what the archive holds, and the blobs
/// placed so far.
struct Pusher<'a> {
    client: &'a RegistryClient,
    index: &'a Index,
    /// The repositories that need each layer (by layer number).
    repos_of: Vec<BTreeSet<String>>,
    /// Each layer's blob once it is in the registry (by layer number).
    blobs: Vec<Option<Blob>>,
}

impl Pusher<'_> {
    /// Layers whose blob is known (already gzip in the archive, or pushed before per `store`)
    /// are placed by `HEAD` or mount; returns the others, by archive path, to be streamed.
    async fn place_known_layers(
        &mut self,
        store: &DoneStore,
        report: &mut Report,
    ) -> Result<BTreeMap<String, Pending>, ImportError> {
        let index = self.index;
        let mut upload = BTreeMap::new();
        for (l, layer) in index.layers.iter().enumerate() {
            let known = match &layer.gzip_digest {
                Some(d) => Some((d.clone(), layer.size, None)),
                None => store
                    .layers
                    .get(&layer.diff_id)
                    .map(|k| (k.digest.clone(), k.size, Some(k.repository.clone()))),
            };
            let first_repo = self.repos_of[l].iter().next().cloned().unwrap_or_default();
            let Some((blob_digest, size, source)) = known else {
                upload.insert(
                    layer.path.clone(),
                    Pending {
                        layer: l,
                        repository: first_repo,
                        session: None,
                    },
                );
                continue;
            };
            match self
                .find_or_mount(l, &blob_digest, source, &first_repo)
                .await?
            {
                Placement::Placed => {
                    report.layers_present += 1;
                    self.blobs[l] = Some(Blob {
                        digest: blob_digest,
                        size,
                    });
                }
                Placement::Missing(session) => {
                    upload.insert(
                        layer.path.clone(),
                        Pending {
                            layer: l,
                            repository: first_repo,
                            session,
                        },
                    );
                }
            }
        }
        Ok(upload)
    }

    /// Whether layer `l`'s blob `blob_digest` is in a repository that needs it (`HEAD` in
    /// each), else mounted into `first_repo` from `source` (the repository it was pushed to).
    async fn find_or_mount(
        &self,
        l: usize,
        blob_digest: &str,
        source: Option<String>,
        first_repo: &str,
    ) -> Result<Placement, ImportError> {
        let mut placed = false;
        for repo in &self.repos_of[l] {
            if self.client.blob_exists(repo, blob_digest).await? {
                placed = true;
            }
        }
        if placed {
            return Ok(Placement::Placed);
        }
        let mut session = None;
        if let Some(from) = source {
            match self.client.mount(first_repo, blob_digest, &from).await? {
                Mount::Mounted => return Ok(Placement::Placed),
                Mount::Upload(url) => session = Some(url),
            }
        }
        Ok(Placement::Missing(session))
    }

    /// Pass 2: stream the layers of `upload` from the archive (a blocking reader) and upload
    /// each as it comes, recording it in `store` and `report`.
    async fn upload_layers(
        &mut self,
        path: &Path,
        upload: BTreeMap<String, Pending>,
        store: &mut DoneStore,
        report: &mut Report,
        meter: Arc<Meter>,
    ) -> Result<(), ImportError> {
        meter.phase.store(1, Ordering::Relaxed);
        meter.bytes.store(0, Ordering::Relaxed);
        let wanted: BTreeMap<String, bool> = upload
            .iter()
            .map(|(p, pending)| {
                (
                    p.clone(),
                    self.index.layers[pending.layer].gzip_digest.is_none(),
                )
            })
            .collect();
        let (tx, rx) = mpsc::channel::<LayerStream>(1);
        let reader = {
            let path = path.to_path_buf();
            let meter = meter.clone();
            tokio::task::spawn_blocking(move || stream_layers(&path, wanted, tx, &meter))
        };
        let uploaded = self.upload_streams(rx, upload, store, report).await;
        let read = reader
            .await
            .map_err(|e| ImportError::one(ErrorCode::Internal, format!("archive reader: {e}")))?;
        // The reader's error is the cause when both failed.
        read?;
        uploaded
    }

    /// Upload each layer the reader sends on `rx`, in its order.
    async fn upload_streams(
        &mut self,
        // Owned here: when an upload fails, dropping it stops the reader.
        mut rx: mpsc::Receiver<LayerStream>,
        mut upload: BTreeMap<String, Pending>,
        store: &mut DoneStore,
        report: &mut Report,
    ) -> Result<(), ImportError> {
        while let Some(stream) = rx.recv().await {
            let Some((l, repo, session)) = upload
                .get_mut(&stream.path)
                .map(|p| (p.layer, p.repository.clone(), p.session.take()))
            else {
                return Err(ImportError::one(
                    ErrorCode::Internal,
                    format!("unexpected layer {}", stream.path),
                ));
            };
            let (blob_digest, size) = self.upload_layer(stream, l, &repo, session).await?;
            report.layers_uploaded += 1;
            report.bytes_uploaded += size;
            store.layers.insert(
                self.index.layers[l].diff_id.clone(),
                KnownLayer {
                    digest: blob_digest.clone(),
                    size,
                    repository: repo.clone(),
                },
            );
            self.blobs[l] = Some(Blob {
                digest: blob_digest,
                size,
            });
        }
        Ok(())
    }

    /// Upload layer `l` from `stream` into `repo`; the upload is closed only when the layer's
    /// uncompressed digest is the verified one. Gives the blob's digest and size.
    async fn upload_layer(
        &self,
        stream: LayerStream,
        l: usize,
        repo: &str,
        session: Option<sys::http::Url>,
    ) -> Result<(String, u64), ImportError> {
        let expected = self.index.layers[l].diff_id.clone();
        let mut chunks = stream.chunks;
        let body = futures::stream::poll_fn(move |cx| chunks.poll_recv(cx));
        let done = stream.done;
        let size = Arc::new(AtomicU64::new(0));
        let size_out = size.clone();
        let file = stream.path;
        let verdict = async move {
            let sent = done
                .await
                .map_err(|_| "the archive reader stopped".to_string())??;
            if sent.diff_id != expected {
                return Err(format!(
                    "{file}: digest mismatch: expected {expected}, content is {} (changed since it was verified?)",
                    sent.diff_id
                ));
            }
            size_out.store(sent.size, Ordering::Relaxed);
            Ok(sent.digest)
        };
        let blob_digest = self
            .client
            .upload_stream(repo, session, body, verdict)
            .await?;
        Ok((blob_digest, size.load(Ordering::Relaxed)))
    }

    /// Every repository gets every layer it needs (mounted from where it was pushed).
    async fn mount_into_every_repository(&self) -> Result<(), ImportError> {
        for (l, repos) in self.repos_of.iter().enumerate() {
            let Some(blob) = &self.blobs[l] else {
                return Err(ImportError::one(
                    ErrorCode::Internal,
                    format!("layer {} was not pushed", self.index.layers[l].path),
                ));
            };
            let mut holder = None;
            for repo in repos {
                if self.client.blob_exists(repo, &blob.digest).await? {
                    holder = Some(repo.clone());
                    break;
                }
            }
            let Some(holder) = holder else {
                return Err(ImportError::one(
                    ErrorCode::Io,
                    format!(
                        "registry: blob {} of {} is missing after upload",
                        blob.digest, self.index.layers[l].path
                    ),
                ));
            };
            for repo in repos {
                if repo != &holder
                    && !self.client.blob_exists(repo, &blob.digest).await?
                    && self.client.mount(repo, &blob.digest, &holder).await? != Mount::Mounted
                {
                    return Err(ImportError::one(
                        ErrorCode::Io,
                        format!("registry: cannot mount {} into {repo}", blob.digest),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Each image's config (into every repository it is tagged in) and its schema-2 manifest
    /// (under every tag).
    async fn push_images(&self) -> Result<(), ImportError> {
        for image in &self.index.images {
            let manifest = self.manifest(image)?;
            let repos: BTreeSet<&str> = image.tags.iter().map(|t| t.repository.as_str()).collect();
            for repo in repos {
                if !self.client.blob_exists(repo, &image.config.digest).await? {
                    self.client
                        .upload_bytes(repo, &image.config.digest, image.config.bytes.clone())
                        .await?;
                }
            }
            for tag in &image.tags {
                self.client
                    .put_manifest(&tag.repository, &tag.tag, manifest.clone())
                    .await?;
            }
        }
        Ok(())
    }

    /// The schema-2 manifest of `image`, as bytes, over the blobs pushed.
    fn manifest(&self, image: &Image) -> Result<Vec<u8>, ImportError> {
        let layers: Vec<_> = image
            .layers
            .iter()
            .filter_map(|&l| self.blobs[l].as_ref())
            .map(|b| json!({"mediaType": LAYER_GZIP, "size": b.size, "digest": b.digest}))
            .collect();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": sys::http::MANIFEST_V2,
            "config": {
                "mediaType": CONFIG_JSON,
                "size": image.config.bytes.len(),
                "digest": image.config.digest,
            },
            "layers": layers,
        });
        serde_json::to_vec(&manifest)
            .map_err(|e| ImportError::one(ErrorCode::Internal, e.to_string()))
    }
}
