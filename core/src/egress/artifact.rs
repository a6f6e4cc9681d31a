//! What the host tells a provider about an artifact ([`Artifact`]), and the kinds of artifact
//! diagmon captures ([`ArtifactKind`]) with the file names dotnet-monitor gives them.

use std::time::SystemTime;

/// What an artifact is. Its WIT form is the `kind` string of the `artifact` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArtifactKind {
    /// An EventPipe trace (nettrace).
    Trace,
    /// A process dump (an ELF core file on Linux).
    Dump,
    /// A GC heap dump (nettrace of the GC heap events).
    GcDump,
    /// Live metrics, a JSON sequence of metric objects.
    Metrics,
    /// Logs, as newline-delimited JSON.
    Logs,
}

impl ArtifactKind {
    /// Every kind.
    pub const ALL: [ArtifactKind; 5] = [
        ArtifactKind::Trace,
        ArtifactKind::Dump,
        ArtifactKind::GcDump,
        ArtifactKind::Metrics,
        ArtifactKind::Logs,
    ];

    /// The name providers receive in `artifact.kind`: `trace`, `dump`, `gcdump`, `metrics`,
    /// `logs`.
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::Trace => "trace",
            ArtifactKind::Dump => "dump",
            ArtifactKind::GcDump => "gcdump",
            ArtifactKind::Metrics => "metrics",
            ArtifactKind::Logs => "logs",
        }
    }

    /// The MIME type of the bytes.
    pub fn content_type(self) -> &'static str {
        match self {
            ArtifactKind::Trace | ArtifactKind::Dump | ArtifactKind::GcDump => {
                "application/octet-stream"
            }
            ArtifactKind::Metrics => "application/json-seq",
            ArtifactKind::Logs => "application/x-ndjson",
        }
    }

    /// The file name dotnet-monitor gives an artifact of this kind from process `pid` started at
    /// `started_at`, with its UTC timestamp `yyyyMMdd_HHmmss_fff`: `{ts}_{pid}.nettrace`,
    /// `core_{ts}` (a Linux dump: no pid, no extension), `{ts}_{pid}.gcdump`,
    /// `{ts}_{pid}.metrics.json`, `{ts}_{pid}.txt`.
    pub fn file_name(self, started_at: SystemTime, pid: u64) -> String {
        let stamp = timestamp(started_at);
        match self {
            ArtifactKind::Trace => format!("{stamp}_{pid}.nettrace"),
            ArtifactKind::Dump => format!("core_{stamp}"),
            ArtifactKind::GcDump => format!("{stamp}_{pid}.gcdump"),
            ArtifactKind::Metrics => format!("{stamp}_{pid}.metrics.json"),
            ArtifactKind::Logs => format!("{stamp}_{pid}.txt"),
        }
    }
}

impl std::fmt::Display for ArtifactKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `yyyyMMdd_HHmmss_fff`, UTC, as dotnet-monitor stamps artifact names.
fn timestamp(at: SystemTime) -> String {
    // "2026-11-26T07:24:08.123Z" -> "20261126_072408_123"
    let stamp = humantime::format_rfc3339_millis(at).to_string();
    let digits: String = stamp.chars().filter(char::is_ascii_digit).collect();
    let (date, rest) = digits.split_at(8.min(digits.len()));
    let (clock, millis) = rest.split_at(6.min(rest.len()));
    format!("{date}_{clock}_{millis}")
}

/// What the host knows about an artifact; passed to the provider's `begin`.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// The suggested file name (see [`ArtifactKind::file_name`]).
    pub file_name: String,
    /// The MIME type of the bytes (see [`ArtifactKind::content_type`]).
    pub content_type: String,
    /// What the artifact is.
    pub kind: ArtifactKind,
    /// The process it was captured from.
    pub pid: u64,
    /// The runtime instance cookie of that process.
    pub uid: uuid::Uuid,
    /// That process's name.
    pub process_name: String,
    /// The operation the artifact belongs to.
    pub operation_id: uuid::Uuid,
    /// Labels from the request.
    pub tags: Vec<String>,
    /// When the capture started.
    pub started_at: SystemTime,
}

impl Artifact {
    /// An artifact of `kind` from process `pid`, captured from `started_at`: named by
    /// [`ArtifactKind::file_name`], typed by [`ArtifactKind::content_type`].
    pub fn new(
        kind: ArtifactKind,
        pid: u64,
        uid: uuid::Uuid,
        process_name: impl Into<String>,
        operation_id: uuid::Uuid,
        tags: Vec<String>,
        started_at: SystemTime,
    ) -> Artifact {
        Artifact {
            file_name: kind.file_name(started_at, pid),
            content_type: kind.content_type().to_owned(),
            kind,
            pid,
            uid,
            process_name: process_name.into(),
            operation_id,
            tags,
            started_at,
        }
    }

    /// [`Artifact::new`] of a trace.
    pub fn trace(
        pid: u64,
        uid: uuid::Uuid,
        process_name: impl Into<String>,
        operation_id: uuid::Uuid,
        tags: Vec<String>,
        started_at: SystemTime,
    ) -> Artifact {
        Artifact::new(
            ArtifactKind::Trace,
            pid,
            uid,
            process_name,
            operation_id,
            tags,
            started_at,
        )
    }

    /// The file name of a trace: [`ArtifactKind::file_name`] of [`ArtifactKind::Trace`].
    pub fn trace_file_name(started_at: SystemTime, pid: u64) -> String {
        ArtifactKind::Trace.file_name(started_at, pid)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn file_names_follow_dotnet_monitor() {
        let time = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_141_848_123);
        let names: Vec<String> = ArtifactKind::ALL
            .iter()
            .map(|kind| kind.file_name(time, 42))
            .collect();
        assert_eq!(
            names,
            [
                "20251126_072408_123_42.nettrace",
                "core_20251126_072408_123",
                "20251126_072408_123_42.gcdump",
                "20251126_072408_123_42.metrics.json",
                "20251126_072408_123_42.txt",
            ]
        );
        assert_eq!(
            Artifact::trace_file_name(time, 42),
            "20251126_072408_123_42.nettrace"
        );
    }

    #[test]
    fn kinds_have_their_wit_names() {
        let names: Vec<&str> = ArtifactKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names, ["trace", "dump", "gcdump", "metrics", "logs"]);
    }
}
