//! Events read out of a trace as its bytes pass: the `CollectTrace` action's stopping event.
//!
//! [`EventReader`] decodes a nettrace stream's events with the stream's own metadata (see
//! [`crate::diagnostics::payload`]) and hands each one to a callback; events it cannot decode
//! are skipped. [`StoppingTraceSpec`] is a trace that stops itself, gracefully and complete,
//! once its [`StoppingEvent`] went by.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;

use super::config::{StoppingEvent, float_text};
use crate::diagnostics::nettrace::NettraceValidator;
use crate::diagnostics::payload::{DecodedEvent, EventDecoder, Value};
use crate::diagnostics::{DiagnosticsClient, EventPipeSession};
use crate::egress::ArtifactKind;
use crate::operations::{
    ArtifactSource, ArtifactSpec, GracefulStop, OperationError, SummaryKind, TraceSpec,
};
use crate::processes::ProcessRecord;

/// Reads the events of a nettrace stream from its bytes, in order, and hands every event it can
/// decode to a callback.
pub struct EventReader {
    validator: NettraceValidator,
}

impl std::fmt::Debug for EventReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventReader").finish_non_exhaustive()
    }
}

impl EventReader {
    /// A reader expecting the first byte of a stream, calling `on_event` with each event.
    pub fn new(mut on_event: impl FnMut(&DecodedEvent<'_>) + Send + 'static) -> Self {
        let mut decoder = EventDecoder::new();
        let validator = NettraceValidator::with_observer(Box::new(move |record| {
            // Rundown and runtime events without a field description do not decode: skip them.
            if let Ok(Some(event)) = decoder.on_record(record) {
                on_event(&event);
            }
        }));
        EventReader { validator }
    }

    /// Takes the next bytes of the stream. An error means the stream broke the nettrace format:
    /// nothing after it can be read.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), String> {
        self.validator
            .feed(chunk)
            .map_err(|error| error.to_string())
    }
}

impl StoppingEvent {
    /// Whether `event` is the stopping event: its provider (compared without case, as EventPipe
    /// does), its name, and every payload filter field.
    pub fn matches(&self, event: &DecodedEvent<'_>) -> bool {
        event
            .metadata
            .provider
            .eq_ignore_ascii_case(&self.provider_name)
            && event_names_match(&event.metadata.name, &self.event_name)
            && self.payload_filter.iter().all(|(field, expected)| {
                event.payload.field(field).and_then(value_text).as_deref() == Some(expected)
            })
    }
}

/// Whether the metadata's event name is `wanted`, given as is or in TraceEvent's `Task/Opcode`
/// form (`Activity1/Start` for `Activity1Start`).
pub fn event_names_match(name: &str, wanted: &str) -> bool {
    name == wanted || (wanted.contains('/') && name == wanted.replace('/', ""))
}

/// A payload value as text, for comparison with a `payload_filter`: integers in decimal, floats
/// as [`float_text`] writes them, booleans `True` and `False` (as .NET does), a DateTime as its
/// 100 ns ticks; `None` for objects, arrays and raw bytes.
pub fn value_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Int(number) => Some(number.to_string()),
        Value::UInt(number) => Some(number.to_string()),
        Value::Float(number) => Some(float_text(*number)),
        Value::Bool(true) => Some("True".to_owned()),
        Value::Bool(false) => Some("False".to_owned()),
        Value::DateTime(ticks) => Some(ticks.to_string()),
        Value::Null | Value::Bytes(_) | Value::Object(_) | Value::Array(_) => None,
    }
}

/// A trace that asks to be stopped once `event` went by (or is stopped after its duration,
/// whichever comes first); it is then complete, rundown and end of stream included.
#[derive(Debug, Clone)]
pub struct StoppingTraceSpec {
    /// The trace.
    pub trace: TraceSpec,
    /// The event that stops it.
    pub event: StoppingEvent,
}

/// A running trace watching for its stopping event.
#[derive(Debug)]
pub struct StoppingTrace {
    session: EventPipeSession,
    reader: Option<EventReader>,
    seen: Arc<AtomicBool>,
}

impl ArtifactSpec for StoppingTraceSpec {
    type Source = StoppingTrace;

    fn kind(&self) -> ArtifactKind {
        ArtifactKind::Trace
    }

    async fn open(
        self,
        client: DiagnosticsClient,
        process: &ProcessRecord,
    ) -> Result<StoppingTrace, OperationError> {
        let session = self.trace.open(client, process).await?;
        let seen = Arc::new(AtomicBool::new(false));
        let reader = EventReader::new({
            let seen = Arc::clone(&seen);
            let event = self.event;
            move |decoded| {
                if !seen.load(Ordering::Relaxed) && event.matches(decoded) {
                    seen.store(true, Ordering::Relaxed);
                }
            }
        });
        Ok(StoppingTrace {
            session,
            reader: Some(reader),
            seen,
        })
    }
}

impl ArtifactSource for StoppingTrace {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, OperationError> {
        let chunk = ArtifactSource::next_chunk(&mut self.session).await?;
        if let (Some(bytes), Some(reader)) = (&chunk, &mut self.reader) {
            if let Err(error) = reader.feed(bytes) {
                // The pipeline's own validation reports the broken stream; stop watching.
                tracing::debug!(%error, "the stopping event can no longer be looked for");
                self.reader = None;
            } else if self.seen.load(Ordering::Relaxed) {
                self.reader = None;
                tracing::info!("the stopping event went by; the trace asks to be stopped");
            }
        }
        Ok(chunk)
    }

    fn wants_to_stop(&self) -> bool {
        self.seen.load(Ordering::Relaxed)
    }

    fn graceful_stop(&self) -> Option<Arc<dyn GracefulStop>> {
        self.session.graceful_stop()
    }

    fn summary_kind(&self) -> SummaryKind {
        SummaryKind::Nettrace
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostics::payload::EventMetadata;

    fn event(provider: &str, name: &str, payload: Value) -> (EventMetadata, Value) {
        (
            EventMetadata {
                id: 1,
                provider: provider.into(),
                event_id: 5,
                name: name.into(),
                fields: Vec::new(),
            },
            payload,
        )
    }

    #[test]
    fn the_stopping_event_matches_provider_name_and_payload_filter() {
        let stopping = StoppingEvent {
            provider_name: "Microsoft-Diagnostics-DiagnosticSource".into(),
            event_name: "Activity1/Stop".into(),
            payload_filter: [("EventName".to_owned(), "Stop".to_owned())].into(),
        };
        let payload = |name: &str| {
            Value::Object(vec![
                ("EventName".into(), Value::String(name.into())),
                ("Count".into(), Value::Int(3)),
            ])
        };
        let cases = [
            (
                "microsoft-diagnostics-diagnosticsource",
                "Activity1Stop",
                "Stop",
                true,
            ),
            (
                "Microsoft-Diagnostics-DiagnosticSource",
                "Activity1Start",
                "Stop",
                false,
            ),
            ("Other", "Activity1Stop", "Stop", false),
            (
                "Microsoft-Diagnostics-DiagnosticSource",
                "Activity1Stop",
                "Start",
                false,
            ),
        ];
        for (provider, name, field, expected) in cases {
            let (metadata, payload) = event(provider, name, payload(field));
            let decoded = DecodedEvent {
                metadata: &metadata,
                payload,
            };
            assert_eq!(
                stopping.matches(&decoded),
                expected,
                "{provider} {name} {field}"
            );
        }
        let numeric = StoppingEvent {
            payload_filter: [("Count".to_owned(), "3".to_owned())].into(),
            event_name: "Activity1Stop".into(),
            ..stopping.clone()
        };
        let (metadata, payload) = event(
            "Microsoft-Diagnostics-DiagnosticSource",
            "Activity1Stop",
            payload("x"),
        );
        assert!(numeric.matches(&DecodedEvent {
            metadata: &metadata,
            payload
        }));
    }
}
