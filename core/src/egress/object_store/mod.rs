//! The object-store grant: a bucket prefix (S3, Azure Blob Storage, Google Cloud Storage) or a
//! directory that a provider may write objects into, through the `diagmon:egress/object-store`
//! interface, with credentials it never sees. Backed by the `object_store` crate.
//!
//! - [`ObjectStoreGrant`] is the configuration: `object_store = { url = "s3://bucket/prefix",
//!   ...object_store's own option keys }`, where a value may come from an environment variable
//!   (`{ env = "NAME" }`) or a file (`{ file = "/path" }`) instead of the file itself.
//! - [`GrantedStore::build`] turns it into a store at start-up: an option object_store does not
//!   know, or a value it cannot use, fails the provider's load naming the option.
//! - [`GrantedStore`] writes objects: a single `put`, or a [`MultipartWrite`] that streams parts
//!   with a bounded number in flight and is aborted (never left behind) when it fails or is
//!   dropped unfinished.
//! - [`store::StoreError`] classifies failures for the operation: credentials rejected, bucket or
//!   container missing, storage unreachable, timed out, each with the store's own detail.
//! - [`host`] is the WIT side (`ObjectStoreCtx`): the provider's calls block its thread
//!   (providers run on a thread of their own, see [`super::upload`]) until the store answers, at
//!   most until the deadline of the provider call they are made from.
//!
//! Timeouts and retries. object_store's defaults (30 s per request, 10 retries within 3 minutes)
//! can stall an upload for 3 minutes on a hung endpoint (measured: 181 s,
//! `shared/docs/object-storage.md`). A grant gets 5 s to connect, 30 s per request and at most 3
//! retries within 10 s unless its options say otherwise (`connect_timeout`, `timeout`, and
//! diagmon's own `max_retries`, `retry_timeout`).

use std::time::Duration;

mod grant;
mod host;
mod store;
#[cfg(test)]
mod tests;

pub use grant::{FromEnv, FromFile, GrantValue, ObjectStoreGrant};
pub(crate) use host::ObjectStoreCtx;
pub(crate) use store::GrantedStore;
pub use store::MultipartWrite;

/// Smallest part but the last (S3's minimum), in bytes.
pub(crate) const MIN_PART: usize = 5 << 20;
/// Largest part accepted, in bytes: the host holds up to `parts-in-flight` of them.
pub(crate) const MAX_PART: usize = 512 << 20;
/// Most parts in one upload (S3's limit).
pub(crate) const MAX_PARTS: u32 = 10_000;
/// Most parts uploading at once in one upload.
pub(crate) const MAX_PARTS_IN_FLIGHT: u32 = 16;
/// Most metadata entries, and their total size in bytes.
const MAX_METADATA: usize = 64;
const MAX_METADATA_BYTES: usize = 8 << 10;
/// Longest path, in bytes, relative or with the prefix.
const MAX_PATH: usize = 1024;
/// Longest store detail kept in a message, in bytes.
const MAX_DETAIL: usize = 1500;
/// How long an abort may take when no call deadline bounds it.
const ABORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest signed URL expiry (S3's limit for SigV4).
const MAX_SIGNED_URL_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Default connect timeout of a grant.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default timeout of one request of a grant.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default retries of one request of a grant.
const DEFAULT_MAX_RETRIES: usize = 3;
/// Default bound on the time spent retrying one request of a grant.
const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(10);

/// diagmon's own option keys in a grant, beside `url` and object_store's keys.
const DIAGMON_KEYS: &[&str] = &["max_retries", "retry_timeout", "from_env"];
