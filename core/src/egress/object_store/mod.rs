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
//! - [`capability`] is the WIT side (`ObjectStoreCtx`): the provider's calls block its thread
//!   (providers run on a thread of their own, see [`super::upload`]) until the store answers, at
//!   most until the deadline of the provider call they are made from.
//!
//! Timeouts and retries. object_store's defaults (30 s per request, 10 retries within 3 minutes)
//! can stall an upload for 3 minutes on a hung endpoint (measured: 181 s).
//! A grant gets 5 s to connect, 30 s per request and at most 3
//! retries within 10 s unless its options say otherwise (`connect_timeout`, `timeout`, and
//! diagmon's own `max_retries`, `retry_timeout`).

mod capability;
mod grant;
mod store;
#[cfg(test)]
mod tests;

pub(crate) use capability::{ObjectStoreAccess, ObjectStoreCtx, ObjectStoreView};
pub use grant::{FromEnv, FromFile, GrantValue, ObjectStoreGrant};
pub(crate) use store::GrantedStore;
pub use store::MultipartWrite;
