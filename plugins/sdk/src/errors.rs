//! WASI errors as the provider's [`Error`], with short messages a person can act on: the case
//! follows the cause (`denied` for permissions, `unavailable` for a full disk, `io` otherwise),
//! and the message says what failed on which path, never a `{:?}` dump of the error code.

use wasip2::filesystem::types::ErrorCode;

use crate::Error;

/// The provider error for a failed filesystem call: `what` the provider tried (`cannot create`),
/// on `path`, and why in plain words.
pub fn filesystem(what: &str, path: &str, code: ErrorCode) -> Error {
    let message = format!("{what} {path}: {}", describe(code));
    match code {
        ErrorCode::Access | ErrorCode::NotPermitted | ErrorCode::ReadOnly => Error::Denied(message),
        ErrorCode::InsufficientSpace | ErrorCode::Quota => Error::Unavailable(message),
        _ => Error::Io(message),
    }
}

/// A WASI filesystem error code in plain words, with the fix when the cause is the sandbox.
pub fn describe(code: ErrorCode) -> String {
    match code {
        ErrorCode::NoEntry => "no such file or directory (paths are relative to the granted \
                               directory; `..` and other directories are not reachable)"
            .to_owned(),
        ErrorCode::NotPermitted | ErrorCode::Access => {
            "permission denied (check the granted directory's owner and mode)".to_owned()
        }
        ErrorCode::Exist => "it already exists".to_owned(),
        ErrorCode::InsufficientSpace => "no space left on the device".to_owned(),
        ErrorCode::Quota => "the disk quota is exhausted".to_owned(),
        other => other.message().to_owned(),
    }
}

/// The message an [`Error`] carries, for a log line (`Error`'s `Debug` repeats the case name).
pub fn message(error: &Error) -> &str {
    match error {
        Error::InvalidSettings(m)
        | Error::Denied(m)
        | Error::Io(m)
        | Error::Unavailable(m)
        | Error::Other(m) => m,
    }
}

/// A `std::io::Error` (from an encoder writing into a [`crate::fs::PartialFile`], or from
/// `std::fs`) as an `io` error saying what failed: its own message, without the `Debug` dump.
pub fn from_io(what: &str, error: &std::io::Error) -> Error {
    match error.kind() {
        std::io::ErrorKind::PermissionDenied => Error::Denied(format!("{what}: {error}")),
        std::io::ErrorKind::StorageFull => Error::Unavailable(format!("{what}: {error}")),
        _ => Error::Io(format!("{what}: {error}")),
    }
}
