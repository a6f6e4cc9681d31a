//! The WIT side of the grant: `diagmon:egress/object-store`, called by a provider on its own
//! thread (see [`crate::egress::upload`]). Each call blocks that thread on diagmon's runtime until
//! the store answers, at most until the deadline of the provider call it is made from (less a
//! margin), so that the provider gets a `timed-out` error back instead of being stopped. The
//! parts a provider has in flight are host memory it pins: each is charged to the instance's
//! memory budget ([`crate::egress::budget`]) until the store has it.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::runtime::Handle;
use wasmtime::component::{HasData, Resource, ResourceTable};

use super::store::{
    GrantedStore, MultipartWrite, ObjectInfo, ObjectOptions, StoreError, StoreErrorKind,
};
use crate::egress::budget::MemoryBudget;
use crate::egress::host_waits::wait_until;
use crate::egress::world::diagmon::egress::object_store as wit;

/// The object-store side of a provider instance: the grant, the runtime its calls block on, the
/// instance's memory budget, and how many multipart uploads the instance has open.
pub(crate) struct ObjectStoreCtx {
    store: Arc<GrantedStore>,
    runtime: Handle,
    budget: Arc<MemoryBudget>,
    open_uploads: usize,
}

/// How long before a call's deadline a host call gives up, so that the provider gets its
/// `timed-out` error back before diagmon stops it.
const DEADLINE_MARGIN: Duration = Duration::from_millis(250);

/// At most this much of a provider call's time goes to looking whether a failed complete
/// committed all the same.
const COMMIT_CHECK_TIME: Duration = Duration::from_secs(5);

/// Most multipart uploads one instance may have open at once (an instance stores one artifact).
const MAX_OPEN_UPLOADS: usize = 4;

impl ObjectStoreCtx {
    /// The grant for an instance created on a thread of the runtime (a provider's blocking
    /// thread), charging host buffers to `budget`.
    pub(crate) fn new(
        store: Arc<GrantedStore>,
        budget: Arc<MemoryBudget>,
    ) -> Result<ObjectStoreCtx, String> {
        let runtime = Handle::try_current()
            .map_err(|_| "the provider's thread is not inside diagmon's runtime".to_owned())?;
        Ok(ObjectStoreCtx {
            store,
            runtime,
            budget,
            open_uploads: 0,
        })
    }

    /// Runs `future` until `deadline` (less a margin); `what` names the operation for the
    /// timeout message.
    fn block_on<T>(
        &self,
        deadline: Instant,
        what: &str,
        future: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let until = deadline.checked_sub(DEADLINE_MARGIN).unwrap_or(deadline);
        wait_until(until, future).unwrap_or_else(|| Err(self.store.deadline_error(what)))
    }
}

/// What the object-store host calls need from an instance's store data, borrowed apart.
pub(crate) struct ObjectStoreView<'a> {
    /// The grant; `None` when the provider has none (the linker then has no object store).
    pub(crate) ctx: Option<&'a mut ObjectStoreCtx>,
    /// The instance's resource table, which holds its multipart uploads.
    pub(crate) table: &'a mut ResourceTable,
    /// When the provider call in progress must return.
    pub(crate) deadline: Instant,
    /// The provider's configured name, for logs.
    pub(crate) provider: &'a str,
}

/// The `HasData` of the object-store bindings: the host calls see an [`ObjectStoreView`].
pub(crate) struct ObjectStoreAccess;

impl HasData for ObjectStoreAccess {
    type Data<'a> = ObjectStoreView<'a>;
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

impl ObjectStoreView<'_> {
    fn ctx(&mut self) -> Result<&mut ObjectStoreCtx, StoreError> {
        self.ctx.as_deref_mut().ok_or_else(not_granted)
    }

    /// Takes `upload` out of the table for its last call (complete or abort); it no longer
    /// counts as open.
    fn take_upload(
        &mut self,
        upload: Resource<MultipartWrite>,
    ) -> Result<(&mut ObjectStoreCtx, MultipartWrite), StoreError> {
        let write = self.table.delete(upload).map_err(|_| unknown_upload())?;
        let ctx = self.ctx.as_deref_mut().ok_or_else(not_granted)?;
        ctx.open_uploads = ctx.open_uploads.saturating_sub(1);
        Ok((ctx, write))
    }
}

impl wit::Host for ObjectStoreView<'_> {
    fn describe(&mut self) -> String {
        match self.ctx() {
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
        let deadline = self.deadline;
        let result = self.ctx().and_then(|ctx| {
            // The bytes were copied out of the guest for this call: host memory until it ends.
            let _charged = ctx.budget.reserve(data.len()).map_err(|over| {
                StoreError::new(
                    StoreErrorKind::InvalidArgument,
                    format!("the object does not fit: {over}; store it in parts (`begin-multipart`) or raise `limits.memory_mib`"),
                )
            })?;
            let options = from_wit_options(options);
            let data = Bytes::from(data);
            ctx.block_on(deadline, "the put", ctx.store.put(&path, data, &options))
        });
        result
            .map(to_wit_info)
            .map_err(|e| to_wit(self.provider, e))
    }

    fn begin_multipart(
        &mut self,
        path: String,
        options: wit::ObjectOptions,
        parts_in_flight: u32,
    ) -> Result<Resource<MultipartWrite>, wit::StoreError> {
        let deadline = self.deadline;
        let result = (|| {
            let ctx = self.ctx()?;
            if ctx.open_uploads >= MAX_OPEN_UPLOADS {
                return Err(StoreError::new(
                    StoreErrorKind::InvalidArgument,
                    format!("at most {MAX_OPEN_UPLOADS} multipart uploads may be open at once"),
                ));
            }
            let options = from_wit_options(options);
            let runtime = ctx.runtime.clone();
            let store = ctx.store.clone();
            let budget = ctx.budget.clone();
            let upload = ctx.block_on(
                deadline,
                "starting the upload",
                store.begin_multipart(&path, &options, parts_in_flight, runtime, budget),
            )?;
            ctx.open_uploads += 1;
            self.table.push(upload).map_err(|e| {
                StoreError::new(
                    StoreErrorKind::Other,
                    format!("cannot keep the upload: {e}"),
                )
            })
        })();
        result.map_err(|e| to_wit(self.provider, e))
    }

    fn signed_url(
        &mut self,
        path: String,
        expires_in_seconds: u64,
    ) -> Result<String, wit::StoreError> {
        let deadline = self.deadline;
        let result = self.ctx().and_then(|ctx| {
            let expires_in = Duration::from_secs(expires_in_seconds);
            ctx.block_on(deadline, "signing", ctx.store.signed_url(&path, expires_in))
        });
        result.map_err(|e| to_wit(self.provider, e))
    }
}

impl wit::HostMultipartUpload for ObjectStoreView<'_> {
    fn put_part(
        &mut self,
        upload: Resource<MultipartWrite>,
        data: Vec<u8>,
    ) -> Result<(), wit::StoreError> {
        let deadline = self.deadline;
        let result = (|| {
            let ctx = self.ctx.as_deref_mut().ok_or_else(not_granted)?;
            let write = self.table.get_mut(&upload).map_err(|_| unknown_upload())?;
            ctx.block_on(
                deadline,
                "the part upload",
                write.put_part(Bytes::from(data)),
            )
        })();
        result.map_err(|e| to_wit(self.provider, e))
    }

    fn complete(
        &mut self,
        upload: Resource<MultipartWrite>,
    ) -> Result<wit::ObjectInfo, wit::StoreError> {
        let deadline = self.deadline;
        // A part of the time left is kept to look whether a complete that failed committed
        // all the same (its answer timed out, or a retry found the upload gone): then the
        // object is there and the provider is told so, not that it failed. Otherwise dropping
        // `write` aborts the upload in the background.
        let now = Instant::now();
        let check = (deadline.saturating_duration_since(now) / 4).min(COMMIT_CHECK_TIME);
        let result = self.take_upload(upload).and_then(|(ctx, mut write)| {
            let sent = SystemTime::now();
            let completing = deadline.checked_sub(check).unwrap_or(deadline);
            ctx.block_on(completing, "completing the upload", write.complete())
                .or_else(|error| {
                    let committed = async { Ok(write.committed_since(sent).await) };
                    match ctx.block_on(deadline, "checking the upload", committed) {
                        Ok(Some(info)) => Ok(info),
                        _ => Err(error),
                    }
                })
        });
        result
            .map(to_wit_info)
            .map_err(|e| to_wit(self.provider, e))
    }

    fn abort(&mut self, upload: Resource<MultipartWrite>) -> Result<(), wit::StoreError> {
        let deadline = self.deadline;
        let result = self.take_upload(upload).and_then(|(ctx, mut write)| {
            ctx.block_on(deadline, "aborting the upload", write.abort())
        });
        result.map_err(|e| to_wit(self.provider, e))
    }

    fn drop(&mut self, upload: Resource<MultipartWrite>) -> wasmtime::Result<()> {
        // Dropping an unfinished upload aborts it in the background (`MultipartWrite::drop`).
        if self.table.delete(upload).is_ok()
            && let Some(ctx) = self.ctx.as_deref_mut()
        {
            ctx.open_uploads = ctx.open_uploads.saturating_sub(1);
        }
        Ok(())
    }
}
