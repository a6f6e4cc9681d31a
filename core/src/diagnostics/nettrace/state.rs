//! The parser's state: how deep it reads, the unit it expects next, the object and block kinds,
//! the counts it keeps, and where the block being read is.

use super::*;

/// How deep a validator reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Depth {
    /// Every block's contents, every event.
    Events,
    /// Only the framing around blocks.
    Framing,
}

/// The unit the validator expects next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// The first 8 bytes: `Nettrace`, or NetPerf's signature length and the signature's start.
    Magic,
    /// After `Nettrace`: 20 (FastSerialization, V4/V5) or 0 (V6).
    NettraceVersion,
    /// The rest of `!FastSerialization.1`, from this byte of it.
    Signature { from: usize },
    /// V6 major and minor version.
    V6Version,
    /// A begin-object tag or the end-of-stream marker.
    ObjectTag,
    /// The type header up to the type name.
    TypeHeader,
    /// The type name and the type's end tag.
    TypeName,
    /// The Trace object's 48 bytes and end tag.
    TraceBody,
    /// A block object's `i32 blockSize`.
    BlockSize(ObjectKind),
    /// Padding, the block's contents and its end tag.
    BlockBody { kind: ObjectKind, padding: usize },
    /// Framing only: the end tag of a block of `size` bytes whose contents were passed over.
    BlockEnd { kind: ObjectKind, size: usize },
    /// A V6 block's `size | kind` header.
    V6BlockHeader,
    /// A V6 block's contents.
    V6BlockBody(V6Kind),
    /// The end-of-stream marker was seen.
    Done,
}

/// The FastSerialization object types a nettrace stream may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ObjectKind {
    Trace,
    EventBlock,
    MetadataBlock,
    StackBlock,
    SequencePointBlock,
}

impl ObjectKind {
    pub(super) fn from_name(name: &[u8]) -> Option<Self> {
        Some(match name {
            b"Trace" => ObjectKind::Trace,
            b"EventBlock" => ObjectKind::EventBlock,
            b"MetadataBlock" => ObjectKind::MetadataBlock,
            b"StackBlock" => ObjectKind::StackBlock,
            b"SPBlock" => ObjectKind::SequencePointBlock,
            _ => return None,
        })
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            ObjectKind::Trace => "Trace",
            ObjectKind::EventBlock => "EventBlock",
            ObjectKind::MetadataBlock => "MetadataBlock",
            ObjectKind::StackBlock => "StackBlock",
            ObjectKind::SequencePointBlock => "SPBlock",
        }
    }
}

/// V6 block kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum V6Kind {
    EndOfStream,
    Trace,
    Event,
    Metadata,
    SequencePoint,
    Stack,
    Thread,
    RemoveThread,
    LabelList,
    Unknown(u8),
}

impl V6Kind {
    /// True for the blocks a framing-only validator passes over: all but Trace and EndOfStream.
    pub(super) fn is_contents(self) -> bool {
        !matches!(self, V6Kind::Trace | V6Kind::EndOfStream)
    }

    pub(super) fn from_byte(byte: u8) -> Self {
        match byte {
            0 => V6Kind::EndOfStream,
            1 => V6Kind::Trace,
            2 => V6Kind::Event,
            3 => V6Kind::Metadata,
            4 => V6Kind::SequencePoint,
            5 => V6Kind::Stack,
            6 => V6Kind::Thread,
            7 => V6Kind::RemoveThread,
            8 => V6Kind::LabelList,
            other => V6Kind::Unknown(other),
        }
    }

    pub(super) fn block_name(self) -> &'static str {
        match self {
            V6Kind::EndOfStream => "EndOfStream",
            V6Kind::Trace => "Trace",
            V6Kind::Event => "Event",
            V6Kind::Metadata => "Metadata",
            V6Kind::SequencePoint => "SequencePoint",
            V6Kind::Stack => "Stack",
            V6Kind::Thread => "Thread",
            V6Kind::RemoveThread => "RemoveThread",
            V6Kind::LabelList => "LabelList",
            V6Kind::Unknown(_) => "unknown",
        }
    }
}

impl fmt::Display for V6Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            V6Kind::Unknown(byte) => write!(f, "a block of unknown kind {byte}"),
            other => write!(f, "a {} block", other.block_name()),
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct TraceInfo {
    pub(super) pointer_size: u32,
    pub(super) process_id: Option<u64>,
    pub(super) sampling_rate_ns: Option<u32>,
}

#[derive(Debug, Default)]
pub(super) struct Counts {
    pub(super) event_blocks: u64,
    pub(super) metadata_blocks: u64,
    pub(super) stack_blocks: u64,
    pub(super) sequence_point_blocks: u64,
    pub(super) events: u64,
    pub(super) metadata_records: u64,
    pub(super) stacks: u64,
}

impl Counts {
    pub(super) fn count_block(&mut self, kind: ObjectKind) {
        match kind {
            ObjectKind::Trace => {}
            ObjectKind::EventBlock => self.event_blocks += 1,
            ObjectKind::MetadataBlock => self.metadata_blocks += 1,
            ObjectKind::StackBlock => self.stack_blocks += 1,
            ObjectKind::SequencePointBlock => self.sequence_point_blocks += 1,
        }
    }

    pub(super) fn count_v6_block(&mut self, kind: V6Kind) {
        match kind {
            V6Kind::Event => self.event_blocks += 1,
            V6Kind::Metadata => self.metadata_blocks += 1,
            V6Kind::SequencePoint => self.sequence_point_blocks += 1,
            V6Kind::Stack => self.stack_blocks += 1,
            _ => {}
        }
    }
}

/// Where a block's contents are, for error messages.
#[derive(Debug, Clone, Copy)]
pub(super) struct Block {
    pub(super) name: &'static str,
    /// Stream offset of the contents' first byte.
    pub(super) start: u64,
    pub(super) len: usize,
}

impl Block {
    pub(super) fn at(&self, pos: usize) -> u64 {
        self.start.saturating_add(pos as u64)
    }

    /// `what` could not be read: it runs past the block, or holds an overlong integer.
    #[cold]
    pub(super) fn overrun(&self, r: &Reader<'_>, what: &str) -> NettraceError {
        let offset = self.at(r.pos);
        if r.bad_varint {
            malformed(
                offset,
                format!(
                    "{what} in the {} block holds a variable-length integer too large for its type",
                    self.name
                ),
            )
        } else {
            malformed(
                offset,
                format!(
                    "{what} runs past the end of the {} block ({} bytes of contents starting at \
                     byte {}); the block size is wrong or the block is corrupt",
                    self.name, self.len, self.start
                ),
            )
        }
    }

    /// Bytes remain after the last item the block declares.
    #[cold]
    pub(super) fn leftover(&self, r: &Reader<'_>, after: &str) -> NettraceError {
        malformed(
            self.at(r.pos),
            format!(
                "{} unexpected bytes follow {after} in the {} block ({} bytes of contents \
                 starting at byte {}); the block size does not match its contents",
                r.remaining(),
                self.name,
                self.len,
                self.start
            ),
        )
    }
}
