//! diagmon's built-in object-storage egress provider: stores each artifact as an object in the
//! store its configuration grants (`object_store = { url = "s3://bucket/prefix", ... }`: S3,
//! Azure Blob Storage, Google Cloud Storage or a directory), through the host's
//! `diagmon:egress/object-store` interface. The provider never sees a credential: the host holds
//! them, with the connections, timeouts and retries.
//!
//! - `write` gathers the artifact's chunks into parts of `part_size_mib`. The first full part
//!   starts a multipart upload of `{prefix}/{name}`; each part goes to the host, which uploads
//!   at most `parts_in_flight` at once: memory stays bounded by (parts in flight + 1) × part size
//!   whatever the artifact's size. No object appears under the name until `finish`.
//! - `finish` sends the last part and completes the upload, or stores an artifact smaller than
//!   a part with a single put; `abort` (or a failure) aborts the upload, so that the store keeps
//!   no parts and no object that looks complete.
//! - Nothing is sent to the store before the first part is full, so every store failure
//!   (credentials, a missing bucket, an unreachable store) fails the operation, not the request
//!   that started it.
//! - The object carries its artifact's `content_type` and metadata: `pid`, `uid`,
//!   `process_name`, `operation_id`, `kind` (`trace`, `dump`, ...), `file_name`, `started_at` and
//!   `tags` (names valid on Azure and S3 alike; values
//!   percent-encoded where they are not printable ASCII).
//! - The result's location is the object's URL, or a signed URL when `signed_url_expiry` is set.
//!
//! Settings (all optional):
//! - `name_template`: the object's name under the prefix, with placeholders `{file_name}` (the
//!   suggested name, as dotnet-monitor names the artifact's kind: `{ts}_{pid}.nettrace` for a
//!   trace, `core_{ts}` for a dump, `{ts}_{pid}.gcdump`, `{ts}_{pid}.metrics.json`,
//!   `{ts}_{pid}.txt` for logs), `{pid}`, `{uid}`, `{process_name}`, `{operation_id}`,
//!   `{kind}` (`trace`, `dump`, `gcdump`, `metrics`, `logs`), `{timestamp}`
//!   (`yyyyMMdd_HHmmss_fff`, UTC), `{date}` (`yyyy-MM-dd`). It may contain `/` to make
//!   "folders" (`{kind}/{date}/{file_name}`). Default `{file_name}`.
//! - `part_size_mib`: the size of a part, 5 to 512; default 8.
//! - `parts_in_flight`: how many parts upload at once, 1 to 16; default 4.
//! - `signed_url_expiry`: return a signed URL valid this long (`90s`, `15m`, `12h`, `7d`; at
//!   most 7 days) instead of the plain URL, where the store can sign one. The URL grants read
//!   access to whoever holds it.

use diagmon_name_template::{self as name_template, Fields, Shape, UtcTime};
use std::cell::RefCell;

wit_bindgen::generate!({
    path: "../../wit/diagmon-egress@0.1.0",
    world: "object-storage-provider",
});

use diagmon::egress::log::{Level, log};
use diagmon::egress::object_store::{self as store, MultipartUpload, ObjectOptions, StoreError};
use diagmon::egress::types::{Artifact, EgressResult, Error};
use exports::diagmon::egress::provider::{Guest, GuestUpload, Upload};

/// Smallest and largest part, in MiB (S3's minimum; the host's maximum).
const PART_MIB: (u64, u64) = (5, 512);
const DEFAULT_PART_MIB: u64 = 8;
/// Parts uploading at once (the host's bounds).
const PARTS_IN_FLIGHT: (u32, u32) = (1, 16);
const DEFAULT_PARTS_IN_FLIGHT: u32 = 4;
/// Longest signed URL expiry, in seconds.
const MAX_SIGNED_URL_EXPIRY: u64 = 7 * 24 * 3600;

/// The settings, as `configure` validated them.
#[derive(Clone)]
struct Settings {
    name_template: String,
    part_size: usize,
    parts_in_flight: u32,
    signed_url_expiry: Option<u64>,
}

thread_local! {
    static SETTINGS: RefCell<Option<Settings>> = const { RefCell::new(None) };
}

/// The host's store error as the provider's, keeping the host's words ("credentials rejected",
/// "bucket missing", "storage unreachable", "storage timed out").
fn store_error(error: StoreError) -> Error {
    match error {
        StoreError::CredentialsRejected(m) | StoreError::ContainerMissing(m) => Error::Denied(m),
        StoreError::Unreachable(m) | StoreError::TimedOut(m) => Error::Unavailable(m),
        StoreError::InvalidArgument(m) => Error::Other(m),
        StoreError::Other(m) => Error::Io(m),
    }
}

fn parse_number<T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy>(
    key: &str,
    value: &str,
    (min, max): (T, T),
) -> Result<T, Error> {
    match value.parse::<T>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => Err(Error::InvalidSettings(format!(
            "`{key}` must be a whole number from {min} to {max}, not `{value}`"
        ))),
    }
}

/// `90s`, `15m`, `12h`, `7d` (or plain seconds) as seconds.
fn parse_expiry(value: &str) -> Result<u64, Error> {
    let bad = || {
        Error::InvalidSettings(format!(
            "`signed_url_expiry` must be a duration like `15m`, `12h` or `7d` (at most 7 days), not `{value}`"
        ))
    };
    let (number, unit) = match value.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => value.split_at(at),
        None => (value, "s"),
    };
    let number: u64 = number.parse().map_err(|_| bad())?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    match number.checked_mul(scale) {
        Some(seconds) if seconds > 0 && seconds <= MAX_SIGNED_URL_EXPIRY => Ok(seconds),
        _ => Err(bad()),
    }
}

/// Percent-encodes what is not printable ASCII (and `%` itself), for metadata values.
fn header_safe(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if (0x20..0x7f).contains(&byte) && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// What the name template's placeholders stand for.
fn name_fields(artifact: &Artifact) -> Fields<'_> {
    Fields {
        file_name: &artifact.file_name,
        pid: artifact.pid,
        uid: &artifact.uid,
        process_name: &artifact.process_name,
        operation_id: &artifact.operation_id,
        kind: &artifact.kind,
        started_at_seconds: artifact.started_at.seconds,
        started_at_nanoseconds: artifact.started_at.nanoseconds,
    }
}

/// The metadata stored with the object.
fn metadata(artifact: &Artifact) -> Vec<(String, String)> {
    let started_at =
        UtcTime::new(artifact.started_at.seconds, artifact.started_at.nanoseconds).iso8601();
    vec![
        ("pid".to_owned(), artifact.pid.to_string()),
        ("uid".to_owned(), header_safe(&artifact.uid)),
        (
            "process_name".to_owned(),
            header_safe(&artifact.process_name),
        ),
        (
            "operation_id".to_owned(),
            header_safe(&artifact.operation_id),
        ),
        ("kind".to_owned(), header_safe(&artifact.kind)),
        ("file_name".to_owned(), header_safe(&artifact.file_name)),
        ("started_at".to_owned(), started_at),
        ("tags".to_owned(), header_safe(&artifact.tags.join(","))),
    ]
}

fn settings() -> Result<Settings, Error> {
    SETTINGS.with(|s| {
        s.borrow()
            .clone()
            .ok_or_else(|| Error::Other("begin was called before configure".to_owned()))
    })
}

struct Component;

impl Guest for Component {
    type Upload = ObjectUpload;

    fn configure(settings: Vec<(String, String)>) -> Result<(), Error> {
        let mut parsed = Settings {
            name_template: "{file_name}".to_owned(),
            part_size: (DEFAULT_PART_MIB as usize) << 20,
            parts_in_flight: DEFAULT_PARTS_IN_FLIGHT,
            signed_url_expiry: None,
        };
        for (key, value) in settings {
            match key.as_str() {
                "name_template" => {
                    name_template::check(&value, Shape::RelativePath)
                        .map_err(Error::InvalidSettings)?;
                    parsed.name_template = value;
                }
                "part_size_mib" => {
                    parsed.part_size = (parse_number(&key, &value, PART_MIB)? as usize) << 20;
                }
                "parts_in_flight" => {
                    parsed.parts_in_flight = parse_number(&key, &value, PARTS_IN_FLIGHT)?;
                }
                "signed_url_expiry" => parsed.signed_url_expiry = Some(parse_expiry(&value)?),
                _ => {
                    return Err(Error::InvalidSettings(format!(
                        "unknown setting `{key}`; the object-storage provider knows `name_template`, \
                         `part_size_mib`, `parts_in_flight` and `signed_url_expiry` (the store itself \
                         is the `object_store` grant, not a setting)"
                    )));
                }
            }
        }
        SETTINGS.with(|s| *s.borrow_mut() = Some(parsed));
        Ok(())
    }

    fn begin(artifact: Artifact) -> Result<Upload, Error> {
        let settings = settings()?;
        let name = name_template::render(
            &settings.name_template,
            &name_fields(&artifact),
            Shape::RelativePath,
        )
        .map_err(Error::InvalidSettings)?;
        let options = ObjectOptions {
            content_type: Some(artifact.content_type.clone()),
            metadata: metadata(&artifact),
        };
        log(
            Level::Debug,
            &format!("storing {} as {}/{name}", artifact.kind, store::describe()),
        );
        Ok(Upload::new(ObjectUpload {
            name,
            options,
            state: RefCell::new(State::Gathering),
            buffer: RefCell::new(Vec::with_capacity(settings.part_size)),
            part_size: settings.part_size,
            parts_in_flight: settings.parts_in_flight,
            signed_url_expiry: settings.signed_url_expiry,
        }))
    }
}

/// Where an upload stands.
enum State {
    /// Less than a part so far: nothing sent. An artifact smaller than a part is stored with one
    /// `put` at `finish`.
    Gathering,
    /// A multipart upload is under way.
    Uploading(MultipartUpload),
    /// Completed, aborted or failed: nothing more is sent.
    Closed,
}

/// One artifact on its way to the store.
struct ObjectUpload {
    name: String,
    options: ObjectOptions,
    state: RefCell<State>,
    /// The part being gathered.
    buffer: RefCell<Vec<u8>>,
    part_size: usize,
    parts_in_flight: u32,
    signed_url_expiry: Option<u64>,
}

impl ObjectUpload {
    fn closed() -> Error {
        Error::Other("the upload is closed after an earlier failure".to_owned())
    }

    /// Hands a full part to the host, starting the multipart upload with the first one. After a
    /// failure the upload is closed (and aborted, when it had started).
    fn put_part(&self, part: &[u8]) -> Result<(), Error> {
        let mut state = self.state.borrow_mut();
        if matches!(*state, State::Gathering) {
            match store::begin_multipart(&self.name, &self.options, self.parts_in_flight) {
                Ok(upload) => *state = State::Uploading(upload),
                Err(error) => {
                    *state = State::Closed;
                    return Err(store_error(error));
                }
            }
        }
        let State::Uploading(upload) = &*state else {
            return Err(Self::closed());
        };
        if let Err(error) = upload.put_part(part) {
            if let State::Uploading(upload) = std::mem::replace(&mut *state, State::Closed) {
                let _ = MultipartUpload::abort(upload);
            }
            return Err(store_error(error));
        }
        Ok(())
    }

    /// A signed URL for the object, when the settings ask for one.
    fn signed_url(&self) -> Result<Option<String>, Error> {
        match self.signed_url_expiry {
            Some(expiry) => store::signed_url(&self.name, expiry)
                .map(Some)
                .map_err(store_error),
            None => Ok(None),
        }
    }
}

impl GuestUpload for ObjectUpload {
    fn write(&self, chunk: Vec<u8>) -> Result<(), Error> {
        let mut buffer = self.buffer.borrow_mut();
        let mut rest = chunk.as_slice();
        // A whole part straight from the chunk when nothing is gathered: no copy.
        while buffer.is_empty() && rest.len() >= self.part_size {
            let (part, tail) = rest.split_at(self.part_size);
            self.put_part(part)?;
            rest = tail;
        }
        while !rest.is_empty() {
            let take = (self.part_size - buffer.len()).min(rest.len());
            buffer.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if buffer.len() == self.part_size {
                self.put_part(&buffer)?;
                buffer.clear();
            }
        }
        Ok(())
    }

    fn finish(this: Upload) -> Result<EgressResult, Error> {
        let upload: ObjectUpload = this.into_inner();
        let last = std::mem::take(&mut *upload.buffer.borrow_mut());
        let state = upload.state.replace(State::Closed);
        let (info, signed) = match state {
            State::Closed => return Err(ObjectUpload::closed()),
            // Smaller than a part: one request.
            State::Gathering => {
                // Signed first: when the store cannot sign, nothing is stored.
                let signed = upload.signed_url()?;
                let info = store::put(&upload.name, &last, &upload.options).map_err(store_error)?;
                (info, signed)
            }
            State::Uploading(handle) => {
                upload.state.replace(State::Uploading(handle));
                if !last.is_empty() {
                    upload.put_part(&last)?;
                }
                let State::Uploading(handle) = upload.state.replace(State::Closed) else {
                    return Err(ObjectUpload::closed());
                };
                let signed = match upload.signed_url() {
                    Ok(signed) => signed,
                    Err(error) => {
                        let _ = MultipartUpload::abort(handle);
                        return Err(error);
                    }
                };
                // On error the host has aborted the upload already.
                let info = MultipartUpload::complete(handle).map_err(store_error)?;
                (info, signed)
            }
        };
        log(
            Level::Info,
            &format!("stored {} bytes in {}", info.size, info.url),
        );
        Ok(EgressResult {
            location: signed.unwrap_or(info.url),
        })
    }

    fn abort(this: Upload) -> Result<(), Error> {
        let upload: ObjectUpload = this.into_inner();
        match upload.state.replace(State::Closed) {
            State::Uploading(handle) => MultipartUpload::abort(handle).map_err(store_error),
            State::Gathering | State::Closed => Ok(()),
        }
    }
}

export!(Component);
