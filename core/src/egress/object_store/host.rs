//! The WIT side of the grant: `diagmon:egress/object-store`, called by a provider on its own
//! thread (see [`crate::egress::upload`]). Each call blocks that thread on diagmon's runtime until
//! the store answers, at most until the deadline of the provider call it is made from (less a
//! margin), so that the provider gets a `timed-out` error back instead of being stopped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::runtime::Handle;
use wasmtime::component::Resource;

use super::store::{
    GrantedStore, MultipartWrite, ObjectInfo, ObjectOptions, StoreError, StoreErrorKind,
};
use crate::egress::bindings::diagmon::egress::object_store as wit;
use crate::egress::instance::{ObjectStoreView, StoreState};

/// The object-store side of a provider instance's store: the grant, the runtime its calls block
/// on, and how many multipart uploads the instance has open.
pub(crate) struct ObjectStoreCtx {
    store: Arc<GrantedStore>,
    runtime: Handle,
    open_uploads: usize,
}

/// How long before a call's deadline a host call gives up, so that the provider gets its
/// `timed-out` error back before diagmon stops it.
const DEADLINE_MARGIN: Duration = Duration::from_millis(250);

/// Most multipart uploads one instance may have open at once (an instance stores one artifact).
const MAX_OPEN_UPLOADS: usize = 4;

impl ObjectStoreCtx {
    /// The grant for an instance created on a thread of the runtime (a provider's blocking
    /// thread).
    pub(crate) fn new(store: Arc<GrantedStore>) -> Result<ObjectStoreCtx, String> {
        let runtime = Handle::try_current()
            .map_err(|_| "the provider's thread is not inside diagmon's runtime".to_owned())?;
        Ok(ObjectStoreCtx {
            store,
            runtime,
            open_uploads: 0,
        })
    }

    /// Runs `future` on the runtime, blocking this (provider) thread, until `deadline` (less a
    /// margin); `what` names the operation for the timeout message.
    fn block_on<T>(
        &self,
        deadline: Option<Instant>,
        what: &str,
        future: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match deadline {
            Some(deadline) => {
                let until = deadline.checked_sub(DEADLINE_MARGIN).unwrap_or(deadline);
                let until = tokio::time::Instant::from_std(until);
                self.runtime
                    .block_on(async { tokio::time::timeout_at(until, future).await })
                    .unwrap_or_else(|_| Err(self.store.deadline_error(what)))
            }
            None => self.runtime.block_on(future),
        }
    }
}

/// The one boundary where host failures become the provider's `store-error`: logged in full,
/// handed over as the WIT variant.
fn to_wit(provider: &str, error: StoreError) -> wit::StoreError {
    tracing::debug!(provider, kind = ?error.kind, "object store: {}", error.message);
    let message = error.message;
    match error.kind {
        StoreErrorKind::CredentialsRejected => wit::StoreError::CredentialsRejected(message),
        StoreErrorKind::ContainerMissing => wit::StoreError::ContainerMissing(message),
        StoreErrorKind::Unreachable => wit::StoreError::Unreachable(message),
        StoreErrorKind::TimedOut => wit::StoreError::TimedOut(message),
        StoreErrorKind::InvalidArgument => wit::StoreError::InvalidArgument(message),
        StoreErrorKind::Other => wit::StoreError::Other(message),
    }
}

fn from_wit_options(options: wit::ObjectOptions) -> ObjectOptions {
    ObjectOptions {
        content_type: options.content_type,
        metadata: options.metadata,
    }
}

fn to_wit_info(info: ObjectInfo) -> wit::ObjectInfo {
    wit::ObjectInfo {
        path: info.path,
        url: info.url,
        size: info.size,
        e_tag: info.e_tag,
    }
}

fn not_granted() -> StoreError {
    StoreError::new(
        StoreErrorKind::Other,
        "no object store is granted to this provider".to_owned(),
    )
}

fn unknown_upload() -> StoreError {
    StoreError::new(
        StoreErrorKind::InvalidArgument,
        "the multipart upload is closed".to_owned(),
    )
}

impl<'a> ObjectStoreView<'a> {
    fn ctx(&mut self) -> Result<&mut ObjectStoreCtx, StoreError> {
        self.ctx.as_deref_mut().ok_or_else(not_granted)
    }

    /// Takes `upload` out of the table for its last call (complete or abort); it no longer
    /// counts as open.
    fn take_upload(
        self,
        upload: Resource<MultipartWrite>,
    ) -> Result<(&'a mut ObjectStoreCtx, MultipartWrite), StoreError> {
        let ctx = self.ctx.ok_or_else(not_granted)?;
        let write = self.table.delete(upload).map_err(|_| unknown_upload())?;
        ctx.open_uploads = ctx.open_uploads.saturating_sub(1);
        Ok((ctx, write))
    }
}

impl wit::Host for StoreState {
    fn describe(&mut self) -> String {
        let mut view = self.object_store_view();
        match view.ctx() {
            Ok(ctx) => ctx.store.description().to_owned(),
            Err(_) => String::new(),
        }
    }

    fn put(
        &mut self,
        path: String,
        data: Vec<u8>,
        options: wit::ObjectOptions,
    ) -> Result<wit::ObjectInfo, wit::StoreError> {
        let mut view = self.object_store_view();
        let deadline = view.deadline;
        let provider = view.provider.to_owned();
        let result = view.ctx().and_then(|ctx| {
            let options = from_wit_options(options);
            let data = Bytes::from(data);
            ctx.block_on(deadline, "the put", ctx.store.put(&path, data, &options))
        });
        result.map(to_wit_info).map_err(|e| to_wit(&provider, e))
    }

    fn begin_multipart(
        &mut self,
        path: String,
        options: wit::ObjectOptions,
        parts_in_flight: u32,
    ) -> Result<Resource<MultipartWrite>, wit::StoreError> {
        let mut view = self.object_store_view();
        let deadline = view.deadline;
        let provider = view.provider.to_owned();
        let result = (|| {
            let ctx = view.ctx()?;
            if ctx.open_uploads >= MAX_OPEN_UPLOADS {
                return Err(StoreError::new(
                    StoreErrorKind::InvalidArgument,
                    format!("at most {MAX_OPEN_UPLOADS} multipart uploads may be open at once"),
                ));
            }
            let options = from_wit_options(options);
            let runtime = ctx.runtime.clone();
            let store = ctx.store.clone();
            let upload = ctx.block_on(
                deadline,
                "starting the upload",
                store.begin_multipart(&path, &options, parts_in_flight, runtime),
            )?;
            ctx.open_uploads += 1;
            view.table.push(upload).map_err(|e| {
                StoreError::new(
                    StoreErrorKind::Other,
                    format!("cannot keep the upload: {e}"),
                )
            })
        })();
        result.map_err(|e| to_wit(&provider, e))
    }

    fn signed_url(
        &mut self,
        path: String,
        expires_in_seconds: u64,
    ) -> Result<String, wit::StoreError> {
        let mut view = self.object_store_view();
        let deadline = view.deadline;
        let provider = view.provider.to_owned();
        let result = view.ctx().and_then(|ctx| {
            let expires_in = Duration::from_secs(expires_in_seconds);
            ctx.block_on(deadline, "signing", ctx.store.signed_url(&path, expires_in))
        });
        result.map_err(|e| to_wit(&provider, e))
    }
}

impl wit::HostMultipartUpload for StoreState {
    fn put_part(
        &mut self,
        upload: Resource<MultipartWrite>,
        data: Vec<u8>,
    ) -> Result<(), wit::StoreError> {
        let view = self.object_store_view();
        let deadline = view.deadline;
        let provider = view.provider.to_owned();
        let result = (|| {
            let ctx = view.ctx.ok_or_else(not_granted)?;
            let write = view.table.get_mut(&upload).map_err(|_| unknown_upload())?;
            ctx.block_on(
                deadline,
                "the part upload",
                write.put_part(Bytes::from(data)),
            )
        })();
        result.map_err(|e| to_wit(&provider, e))
    }

    fn complete(
        &mut self,
        upload: Resource<MultipartWrite>,
    ) -> Result<wit::ObjectInfo, wit::StoreError> {
        let view = self.object_store_view();
        let deadline = view.deadline;
        let provider = view.provider.to_owned();
        // On a timeout, dropping `write` aborts the upload in the background.
        let result = view.take_upload(upload).and_then(|(ctx, mut write)| {
            ctx.block_on(deadline, "completing the upload", write.complete())
        });
        result.map(to_wit_info).map_err(|e| to_wit(&provider, e))
    }

    fn abort(&mut self, upload: Resource<MultipartWrite>) -> Result<(), wit::StoreError> {
        let view = self.object_store_view();
        let deadline = view.deadline;
        let provider = view.provider.to_owned();
        let result = view.take_upload(upload).and_then(|(ctx, mut write)| {
            ctx.block_on(deadline, "aborting the upload", write.abort())
        });
        result.map_err(|e| to_wit(&provider, e))
    }

    fn drop(&mut self, upload: Resource<MultipartWrite>) -> wasmtime::Result<()> {
        let view = self.object_store_view();
        // Dropping an unfinished upload aborts it in the background (`MultipartWrite::drop`).
        if view.table.delete(upload).is_ok()
            && let Some(ctx) = view.ctx
        {
            ctx.open_uploads = ctx.open_uploads.saturating_sub(1);
        }
        Ok(())
    }
}
