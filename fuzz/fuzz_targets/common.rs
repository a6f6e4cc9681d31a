//! What the nettrace targets share: splitting the input into the pieces a socket might deliver,
//! and a validator's verdict as comparable text.

use diagmon::diagnostics::nettrace::NettraceValidator;

/// How the trace bytes are cut into pieces: chunks of a size taken from the input's first byte.
pub struct Split {
    chunk: usize,
}

impl Split {
    /// The trace cut into this split's pieces.
    pub fn pieces<'a>(&self, trace: &'a [u8]) -> std::slice::Chunks<'a, u8> {
        trace.chunks(self.chunk)
    }
}

/// The first byte chooses the piece size (1 to 64 bytes); the rest is the trace.
pub fn split_points(data: &[u8]) -> (Split, &[u8]) {
    match data.split_first() {
        Some((first, trace)) => (
            Split {
                chunk: usize::from(*first % 64) + 1,
            },
            trace,
        ),
        None => (Split { chunk: 1 }, data),
    }
}

/// Feeds `pieces` to `validator` and describes the outcome: `complete: <summary>` or the error.
pub fn verdict<'a>(
    mut validator: NettraceValidator,
    pieces: impl IntoIterator<Item = &'a [u8]>,
) -> String {
    for piece in pieces {
        if let Err(error) = validator.feed(piece) {
            return error.to_string();
        }
    }
    match validator.finish() {
        Ok(summary) => format!("complete: {summary:?}"),
        Err(error) => error.to_string(),
    }
}
