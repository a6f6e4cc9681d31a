//! The granted store at work: paths confined to the prefix, single puts, multipart uploads with
//! a bounded number of parts in flight that are aborted rather than left behind, and store
//! errors classified for the operation (credentials rejected, bucket or container missing,
//! storage unreachable, timed out), each with the store's own detail.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ::object_store::client::HttpError;
use ::object_store::path::Path as StorePath;
use ::object_store::signer::Signer;
use ::object_store::{
    Attribute, AttributeValue, Attributes, MultipartUpload, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload,
};
use bytes::Bytes;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::egress::budget::MemoryBudget;

/// Smallest part but the last (S3's minimum), in bytes.
pub(crate) const MIN_PART: usize = 5 << 20;
/// Largest part accepted, in bytes.
const MAX_PART: usize = 512 << 20;
/// Most parts in one upload (S3's limit).
const MAX_PARTS: u32 = 10_000;
/// Most parts uploading at once in one upload.
const MAX_PARTS_IN_FLIGHT: u32 = 16;
/// Most metadata entries, and their total size in bytes.
const MAX_METADATA: usize = 64;
const MAX_METADATA_BYTES: usize = 8 << 10;
/// Longest path, in bytes, relative or with the prefix.
const MAX_PATH: usize = 1024;
/// Longest store detail kept in a message, in bytes.
const MAX_DETAIL: usize = 1500;
/// How long an abort may take when no call deadline bounds it.
const ABORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How far the store's clock may be behind diagmon's for [`MultipartWrite::committed_since`]
/// to still recognise an object this upload wrote.
const CLOCK_SKEW: Duration = Duration::from_secs(5);
/// Longest signed URL expiry (S3's limit for SigV4).
const MAX_SIGNED_URL_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Which kind of store a grant names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreKind {
    S3,
    Azure,
    Gcs,
    Local,
}

impl StoreKind {
    /// What the store calls the thing a grant's URL names.
    pub(super) fn container_noun(self) -> &'static str {
        match self {
            StoreKind::S3 | StoreKind::Gcs => "bucket",
            StoreKind::Azure => "container",
            StoreKind::Local => "directory",
        }
    }
}

/// A store built from a grant, confined to the grant's prefix.
pub(crate) struct GrantedStore {
    pub(super) kind: StoreKind,
    pub(super) store: Arc<dyn ObjectStore>,
    pub(super) signer: Option<Arc<dyn Signer>>,
    /// The grant's prefix inside the bucket; empty for a whole bucket or a directory.
    pub(super) prefix: StorePath,
    /// The grant's URL, without credentials, for messages.
    pub(super) description: String,
    /// The URL of the bucket, container or directory, without a trailing `/`: an object's URL
    /// is this, `/`, and its full path.
    pub(super) base_url: String,
}

impl fmt::Debug for GrantedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrantedStore")
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

impl GrantedStore {
    /// The grant's URL, without credentials.
    pub(crate) fn description(&self) -> &str {
        &self.description
    }

    /// The full path of `relative`, which must stay under the prefix: not empty, not absolute,
    /// no `.`, `..` or empty segment, no control character or backslash.
    pub(crate) fn resolve(&self, relative: &str) -> Result<StorePath, StoreError> {
        let refuse = |why: &str| {
            Err(StoreError::new(
                StoreErrorKind::InvalidArgument,
                format!("the path `{}` is refused: {why}", relative.escape_debug()),
            ))
        };
        if relative.is_empty() {
            return refuse("it is empty");
        }
        if relative.len() > MAX_PATH {
            return refuse(&format!("it is longer than {MAX_PATH} bytes"));
        }
        if relative.starts_with('/') {
            return refuse("it is absolute; paths are relative to the granted prefix");
        }
        if relative.chars().any(|c| c.is_control() || c == '\\') {
            return refuse("it contains a control character or a backslash");
        }
        for segment in relative.split('/') {
            match segment {
                "" => return refuse("it has an empty segment (`//` or a trailing `/`)"),
                "." | ".." => return refuse("it has a `.` or `..` segment"),
                _ => {}
            }
        }
        let full = if self.prefix.as_ref().is_empty() {
            relative.to_owned()
        } else {
            format!("{}/{relative}", self.prefix.as_ref())
        };
        if full.len() > MAX_PATH {
            return refuse(&format!(
                "with the prefix it is longer than {MAX_PATH} bytes"
            ));
        }
        StorePath::parse(&full).or_else(|e| refuse(&e.to_string()))
    }

    /// The URL of the object at `path` (a full path), without credentials.
    pub(crate) fn object_url(&self, path: &StorePath) -> String {
        let encoded: Vec<String> = path.as_ref().split('/').map(encode_segment).collect();
        format!("{}/{}", self.base_url, encoded.join("/"))
    }

    /// The attributes this store can keep: a `file://` store (a plain directory) keeps no content
    /// type or metadata, and object_store's local store refuses any, so they are checked and
    /// dropped there.
    fn storable(&self, attributes: Attributes) -> Attributes {
        if self.base_url.starts_with("file://") {
            Attributes::new()
        } else {
            attributes
        }
    }

    fn info(
        &self,
        relative: &str,
        path: &StorePath,
        size: u64,
        e_tag: Option<String>,
    ) -> ObjectInfo {
        ObjectInfo {
            path: relative.to_owned(),
            url: self.object_url(path),
            size,
            e_tag,
        }
    }

    /// Stores a whole object.
    pub(crate) async fn put(
        &self,
        relative: &str,
        data: Bytes,
        options: &ObjectOptions,
    ) -> Result<ObjectInfo, StoreError> {
        let path = self.resolve(relative)?;
        let attributes = self.storable(options.attributes()?);
        let size = data.len() as u64;
        let put_options = PutOptions {
            attributes,
            ..PutOptions::default()
        };
        let result = self
            .store
            .put_opts(&path, PutPayload::from_bytes(data), put_options)
            .await
            .map_err(|e| self.classify(&e, Operation::Write))?;
        Ok(self.info(relative, &path, size, result.e_tag))
    }

    /// Starts a multipart upload. Nothing appears under the path until it completes.
    pub(crate) async fn begin_multipart(
        self: &Arc<Self>,
        relative: &str,
        options: &ObjectOptions,
        parts_in_flight: u32,
        runtime: Handle,
        budget: Arc<MemoryBudget>,
    ) -> Result<MultipartWrite, StoreError> {
        let path = self.resolve(relative)?;
        if !(1..=MAX_PARTS_IN_FLIGHT).contains(&parts_in_flight) {
            return Err(StoreError::new(
                StoreErrorKind::InvalidArgument,
                format!(
                    "parts-in-flight must be between 1 and {MAX_PARTS_IN_FLIGHT}, not {parts_in_flight}"
                ),
            ));
        }
        let attributes = self.storable(options.attributes()?);
        let upload = self
            .store
            .put_multipart_opts(
                &path,
                PutMultipartOptions {
                    attributes,
                    ..PutMultipartOptions::default()
                },
            )
            .await
            .map_err(|e| self.classify(&e, Operation::Write))?;
        tracing::debug!(store = %self.description, path = %path, "multipart upload started");
        Ok(MultipartWrite {
            store: self.clone(),
            relative: relative.to_owned(),
            path,
            upload: Some(upload),
            in_flight: VecDeque::new(),
            parts_in_flight: parts_in_flight as usize,
            parts: 0,
            short_part: false,
            bytes: 0,
            runtime,
            budget,
        })
    }

    /// A URL that lets its holder read the object at `relative` for `expires_in`.
    pub(crate) async fn signed_url(
        &self,
        relative: &str,
        expires_in: Duration,
    ) -> Result<String, StoreError> {
        let path = self.resolve(relative)?;
        if expires_in.is_zero() || expires_in > MAX_SIGNED_URL_EXPIRY {
            return Err(StoreError::new(
                StoreErrorKind::InvalidArgument,
                "a signed URL expires after 1 second to 7 days".to_owned(),
            ));
        }
        let Some(signer) = &self.signer else {
            return Err(StoreError::new(
                StoreErrorKind::Other,
                format!("{} cannot sign URLs: it is a directory", self.description),
            ));
        };
        signer
            .signed_url(::object_store::signer::Method::GET, &path, expires_in)
            .await
            .map(|url| url.to_string())
            .map_err(|e| self.classify(&e, Operation::Sign))
    }

    /// Classifies an object_store error, with the store's own detail.
    pub(crate) fn classify(
        &self,
        error: &::object_store::Error,
        operation: Operation,
    ) -> StoreError {
        let detail = detail(error);
        let noun = self.kind.container_noun();
        let kind = classify_kind(error, &detail, operation);
        let message = match kind {
            StoreErrorKind::CredentialsRejected => {
                format!("credentials rejected by {}: {detail}", self.description)
            }
            StoreErrorKind::ContainerMissing => format!(
                "{noun} missing: {} does not exist; create it or correct `object_store.url` ({detail})",
                self.description
            ),
            StoreErrorKind::Unreachable => {
                format!("storage unreachable: {}: {detail}", self.description)
            }
            StoreErrorKind::TimedOut => {
                format!("storage timed out: {}: {detail}", self.description)
            }
            StoreErrorKind::InvalidArgument | StoreErrorKind::Other => {
                format!("{}: {detail}", self.description)
            }
        };
        StoreError::new(kind, message)
    }

    pub(super) fn deadline_error(&self, what: &str) -> StoreError {
        StoreError::new(
            StoreErrorKind::TimedOut,
            format!(
                "storage timed out: {}: {what} did not finish before the provider call's deadline",
                self.description
            ),
        )
    }
}

/// What was being done when a store error happened: a `NotFound` on a write means the bucket
/// is missing, which object_store reports as "object not found".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Write,
    Sign,
}

fn classify_kind(
    error: &::object_store::Error,
    detail: &str,
    operation: Operation,
) -> StoreErrorKind {
    use ::object_store::Error as E;
    match error {
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
            return StoreErrorKind::CredentialsRejected;
        }
        E::NotFound { .. } if operation == Operation::Write => {
            return StoreErrorKind::ContainerMissing;
        }
        _ => {}
    }
    // The transport's own verdict, from the error's source chain.
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(http) = current.downcast_ref::<HttpError>() {
            use ::object_store::client::HttpErrorKind as K;
            match http.kind() {
                K::Timeout => return StoreErrorKind::TimedOut,
                K::Connect | K::Request | K::Interrupted => return StoreErrorKind::Unreachable,
                _ => {}
            }
        }
        source = current.source();
    }
    // Errors object_store reports as `Generic`, with the status only in the text.
    const CREDENTIALS: &[&str] = &[
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
        "AuthenticationFailed",
        "AuthorizationFailure",
        "AccessDenied",
        "InvalidToken",
        "ExpiredToken",
    ];
    const MISSING: &[&str] = &["NoSuchBucket", "ContainerNotFound"];
    if CREDENTIALS.iter().any(|code| detail.contains(code)) {
        StoreErrorKind::CredentialsRejected
    } else if MISSING.iter().any(|code| detail.contains(code)) {
        StoreErrorKind::ContainerMissing
    } else {
        StoreErrorKind::Other
    }
}

/// The error and its causes on one line, whitespace collapsed, cut at [`MAX_DETAIL`].
fn detail(error: &::object_store::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(current) = source {
        let more = current.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = current.source();
    }
    let collapsed: Vec<&str> = text.split_whitespace().collect();
    crate::egress::error::truncate(collapsed.join(" "), MAX_DETAIL)
}

/// Percent-encodes a path segment for a URL; unreserved characters stay.
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The case of a [`StoreError`] (the WIT `store-error` variant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreErrorKind {
    CredentialsRejected,
    ContainerMissing,
    Unreachable,
    TimedOut,
    InvalidArgument,
    Other,
}

/// A failed store operation, classified, with a message for a person.
#[derive(Debug, Clone)]
pub(crate) struct StoreError {
    pub(crate) kind: StoreErrorKind,
    pub(crate) message: String,
}

impl StoreError {
    pub(crate) fn new(kind: StoreErrorKind, message: String) -> StoreError {
        StoreError { kind, message }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// What is stored with an object besides its bytes.
#[derive(Debug, Clone, Default)]
pub(crate) struct ObjectOptions {
    pub(crate) content_type: Option<String>,
    pub(crate) metadata: Vec<(String, String)>,
}

impl ObjectOptions {
    /// Checks the options and turns them into object_store attributes.
    pub(super) fn attributes(&self) -> Result<Attributes, StoreError> {
        let invalid =
            |message: String| Err(StoreError::new(StoreErrorKind::InvalidArgument, message));
        if self.metadata.len() > MAX_METADATA {
            return invalid(format!(
                "at most {MAX_METADATA} metadata entries are accepted, not {}",
                self.metadata.len()
            ));
        }
        let total: usize = self.metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
        if total > MAX_METADATA_BYTES {
            return invalid(format!(
                "metadata of {total} bytes; at most {MAX_METADATA_BYTES} are accepted"
            ));
        }
        let mut attributes = Attributes::new();
        if let Some(content_type) = &self.content_type {
            if !is_header_value(content_type) {
                return invalid(format!(
                    "the content type `{}` is not printable ASCII",
                    content_type.escape_debug()
                ));
            }
            attributes.insert(
                Attribute::ContentType,
                AttributeValue::from(content_type.clone()),
            );
        }
        for (name, value) in &self.metadata {
            let mut chars = name.chars();
            let identifier = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !identifier {
                return invalid(format!(
                    "the metadata name `{}` is not an identifier ([A-Za-z_][A-Za-z0-9_]*; Azure refuses anything else, e.g. `trace-id`: use `trace_id`)",
                    name.escape_debug()
                ));
            }
            if !is_header_value(value) {
                return invalid(format!(
                    "the value of metadata `{name}` is not printable ASCII; percent-encode it"
                ));
            }
            attributes.insert(
                Attribute::Metadata(name.clone().into()),
                AttributeValue::from(value.clone()),
            );
        }
        Ok(attributes)
    }
}

fn is_header_value(value: &str) -> bool {
    value.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// A stored object, as the provider is told.
#[derive(Debug, Clone)]
pub(crate) struct ObjectInfo {
    pub(crate) path: String,
    pub(crate) url: String,
    pub(crate) size: u64,
    pub(crate) e_tag: Option<String>,
}

/// A multipart upload in progress: parts upload on the runtime, at most `parts_in_flight` at
/// once, in the order they were given. The first failure is kept and returned; the upload is
/// then aborted by whoever holds it, or by `Drop`.
pub struct MultipartWrite {
    store: Arc<GrantedStore>,
    relative: String,
    path: StorePath,
    /// `None` once completed or aborted.
    upload: Option<Box<dyn MultipartUpload>>,
    in_flight: VecDeque<JoinHandle<::object_store::Result<()>>>,
    parts_in_flight: usize,
    parts: u32,
    /// A part smaller than [`MIN_PART`] was given: it must have been the last.
    short_part: bool,
    bytes: u64,
    runtime: Handle,
    /// The instance's memory budget: each part in flight is charged to it until the store has
    /// it.
    budget: Arc<MemoryBudget>,
}

impl fmt::Debug for MultipartWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MultipartWrite")
            .field("path", &self.path.as_ref())
            .field("parts", &self.parts)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl MultipartWrite {
    /// Waits for the oldest part in flight. The part stays in `in_flight` until it ended, so
    /// that a wait given up on (the provider call's deadline) leaves it to be aborted with the
    /// upload, not running on.
    async fn wait_oldest(&mut self) -> Result<(), StoreError> {
        let Some(part) = self.in_flight.front_mut() else {
            return Ok(());
        };
        let result = part.await;
        self.in_flight.pop_front();
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(self.store.classify(&error, Operation::Write)),
            Err(join) => Err(StoreError::new(
                StoreErrorKind::Other,
                format!("{}: a part upload stopped: {join}", self.store.description),
            )),
        }
    }

    /// Starts uploading the next part; waits first for the oldest part when
    /// `parts_in_flight` are uploading. Reports a failure of any part finished by then.
    pub(crate) async fn put_part(&mut self, data: Bytes) -> Result<(), StoreError> {
        let invalid =
            |message: String| Err(StoreError::new(StoreErrorKind::InvalidArgument, message));
        if self.upload.is_none() {
            return invalid("the upload is already completed or aborted".to_owned());
        }
        if self.short_part {
            return invalid(format!(
                "part {} follows a part smaller than {} MiB; only the last part may be smaller",
                self.parts + 1,
                MIN_PART >> 20
            ));
        }
        if data.is_empty() || data.len() > MAX_PART {
            return invalid(format!(
                "a part holds 1 byte to {} MiB, not {} bytes",
                MAX_PART >> 20,
                data.len()
            ));
        }
        if self.parts >= MAX_PARTS {
            return invalid(format!(
                "an upload has at most {MAX_PARTS} parts; use larger parts"
            ));
        }
        // Surface failures of finished parts early, then make room.
        while self.in_flight.front().is_some_and(JoinHandle::is_finished) {
            self.wait_oldest().await?;
        }
        while self.in_flight.len() >= self.parts_in_flight {
            self.wait_oldest().await?;
        }
        // The part is host memory until the store has it: make room in the budget too, by
        // waiting for the parts before it.
        let reservation = loop {
            match self.budget.reserve(data.len()) {
                Ok(reservation) => break reservation,
                Err(_) if !self.in_flight.is_empty() => self.wait_oldest().await?,
                Err(over) => {
                    return invalid(format!(
                        "a part does not fit: {over}; use smaller parts or raise `limits.memory_mib`"
                    ));
                }
            }
        };
        self.short_part = data.len() < MIN_PART;
        self.parts += 1;
        self.bytes += data.len() as u64;
        let Some(upload) = self.upload.as_mut() else {
            return invalid("the upload is already completed or aborted".to_owned());
        };
        let part = upload.put_part(PutPayload::from_bytes(data));
        self.in_flight.push_back(self.runtime.spawn(async move {
            let _charged = reservation;
            part.await
        }));
        Ok(())
    }

    /// Waits for every part, then commits the object. On failure the upload is aborted
    /// before the error is returned.
    pub(crate) async fn complete(&mut self) -> Result<ObjectInfo, StoreError> {
        if self.upload.is_none() {
            return Err(StoreError::new(
                StoreErrorKind::InvalidArgument,
                "the upload is already completed or aborted".to_owned(),
            ));
        }
        let mut result = Ok(());
        while !self.in_flight.is_empty() {
            if let Err(error) = self.wait_oldest().await {
                result = Err(error);
                break;
            }
        }
        if let Err(error) = result {
            self.abort_logged().await;
            return Err(error);
        }
        let upload = self.upload.as_mut().expect("checked above");
        // An upload of no part is an empty object (S3 refuses to complete one without parts).
        if self.parts == 0 {
            let _ = upload.abort().await;
            self.upload = None;
            return self
                .store
                .put(&self.relative, Bytes::new(), &ObjectOptions::default())
                .await;
        }
        match upload.complete().await {
            Ok(result) => {
                self.upload = None;
                tracing::debug!(store = %self.store.description, path = %self.path, parts = self.parts, bytes = self.bytes, "multipart upload completed");
                Ok(self
                    .store
                    .info(&self.relative, &self.path, self.bytes, result.e_tag))
            }
            Err(error) => {
                let error = self.store.classify(&error, Operation::Write);
                self.abort_logged().await;
                Err(error)
            }
        }
    }

    /// Whether the store committed this upload although `complete` did not say so (it timed
    /// out, or its answer was lost and a retry found the upload gone): the object is at the
    /// path, of this upload's size, last written at or after `since` less [`CLOCK_SKEW`].
    /// Any doubt (the object is missing, differs, or cannot be looked at) is `None`.
    pub(crate) async fn committed_since(&mut self, since: SystemTime) -> Option<ObjectInfo> {
        let meta = self.store.store.head(&self.path).await.ok()?;
        let since_ms = since
            .checked_sub(CLOCK_SKEW)?
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()?
            .as_millis();
        let written_ms = u128::try_from(meta.last_modified.timestamp_millis()).ok()?;
        if meta.size != self.bytes || written_ms < since_ms {
            return None;
        }
        // Committed: nothing is left to abort.
        for part in self.in_flight.drain(..) {
            part.abort();
        }
        self.upload = None;
        tracing::info!(store = %self.store.description, path = %self.path, bytes = self.bytes, "the upload was committed although completing it reported a failure");
        Some(
            self.store
                .info(&self.relative, &self.path, self.bytes, meta.e_tag),
        )
    }

    /// Stops the parts in flight and aborts the upload at the store.
    pub(crate) async fn abort(&mut self) -> Result<(), StoreError> {
        for part in self.in_flight.drain(..) {
            part.abort();
        }
        let Some(mut upload) = self.upload.take() else {
            return Ok(());
        };
        let result = upload
            .abort()
            .await
            .map_err(|e| self.store.classify(&e, Operation::Write));
        match &result {
            Ok(()) => {
                tracing::info!(store = %self.store.description, path = %self.path, "multipart upload aborted")
            }
            Err(error) => {
                tracing::warn!(store = %self.store.description, path = %self.path, "aborting a multipart upload failed: {error}")
            }
        }
        result
    }

    /// Aborts, logging a failure (the caller reports the error that made it abort).
    async fn abort_logged(&mut self) {
        let _ = tokio::time::timeout(ABORT_TIMEOUT, self.abort()).await;
    }
}

impl Drop for MultipartWrite {
    /// Dropped unfinished (the provider neither completed nor aborted it, or its instance was
    /// stopped): abort in the background, so that no parts are left behind.
    fn drop(&mut self) {
        if self.upload.is_none() {
            return;
        }
        for part in self.in_flight.drain(..) {
            part.abort();
        }
        let Some(mut upload) = self.upload.take() else {
            return;
        };
        let store = self.store.clone();
        let path = self.path.clone();
        self.runtime.spawn(async move {
            match tokio::time::timeout(ABORT_TIMEOUT, upload.abort()).await {
                Ok(Ok(())) => tracing::info!(store = %store.description, path = %path, "unfinished multipart upload aborted"),
                Ok(Err(error)) => tracing::warn!(store = %store.description, path = %path, "aborting an unfinished multipart upload failed: {}", store.classify(&error, Operation::Write)),
                Err(_) => tracing::warn!(store = %store.description, path = %path, "aborting an unfinished multipart upload timed out"),
            }
        });
    }
}
