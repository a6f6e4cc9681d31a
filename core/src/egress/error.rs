//! What can go wrong in egress, in terms a user can act on.

use std::time::Duration;

/// The case of an error a provider reported (the WIT `error` variant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderErrorKind {
    /// The settings are wrong (`invalid-settings`).
    InvalidSettings,
    /// The destination refused (`denied`).
    Denied,
    /// Storing or sending failed (`io`).
    Io,
    /// The destination is unreachable for now (`unavailable`).
    Unavailable,
    /// Anything else (`other`).
    Other,
}

impl ProviderErrorKind {
    /// The WIT name of the case.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderErrorKind::InvalidSettings => "invalid-settings",
            ProviderErrorKind::Denied => "denied",
            ProviderErrorKind::Io => "io",
            ProviderErrorKind::Unavailable => "unavailable",
            ProviderErrorKind::Other => "other",
        }
    }
}

impl std::fmt::Display for ProviderErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An egress failure. A provider's own answer ([`EgressError::Provider`]) is kept apart from the
/// host stopping it ([`EgressError::Trap`], [`EgressError::DeadlineExceeded`],
/// [`EgressError::MemoryLimit`]): after the latter the instance is discarded.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum EgressError {
    /// No provider of that name is configured.
    #[error("egress provider `{0}` does not exist; configure it under [egress.providers.{0}]")]
    UnknownProvider(String),

    /// The provider reported an error from one of its calls.
    #[error("egress provider `{provider}` failed in {call}: {message} ({kind})")]
    Provider {
        /// The provider's configured name.
        provider: String,
        /// The call that failed: `configure`, `begin`, `write` or `finish`.
        call: &'static str,
        /// The case of the provider's error.
        kind: ProviderErrorKind,
        /// The provider's message, as it wrote it (cut at 4 KiB).
        message: String,
    },

    /// The provider trapped (a panic, an invalid operation, a host refusal that traps).
    #[error("egress provider `{provider}` crashed in {call}: {reason}{}", output_suffix(.output))]
    Trap {
        /// The provider's configured name.
        provider: String,
        /// The call that trapped.
        call: &'static str,
        /// Why, as wasmtime tells it (`wasm `unreachable` instruction executed`).
        reason: String,
        /// The tail of what the provider wrote to its stdout and stderr (a panic message).
        output: Option<String>,
    },

    /// A call ran past its deadline and was interrupted.
    #[error("egress provider `{provider}` exceeded its {} deadline in {call} and was stopped", humantime::format_duration(*.deadline))]
    DeadlineExceeded {
        /// The provider's configured name.
        provider: String,
        /// The call that ran too long.
        call: &'static str,
        /// The deadline of that call.
        deadline: Duration,
    },

    /// The provider tried to grow a memory or a table past its memory limit.
    #[error("egress provider `{provider}` exceeded its memory limit of {} MiB in {call} (growing a {what}; raise `limits.memory_mib` if it needs more){}", .limit_bytes >> 20, output_suffix(.output))]
    MemoryLimit {
        /// The provider's configured name.
        provider: String,
        /// The call during which the limit was hit.
        call: &'static str,
        /// The limit, in bytes.
        limit_bytes: u64,
        /// What could not grow: `memory` or `table`.
        what: &'static str,
        /// The tail of the provider's stdout and stderr.
        output: Option<String>,
    },

    /// Every instance the provider may have (`limits.max_instances`) stayed busy for the wait.
    #[error("egress provider `{provider}` has all its {max_instances} instances busy (`limits.max_instances`) and none came free within {}", humantime::format_duration(*.waited))]
    Busy {
        /// The provider's configured name.
        provider: String,
        /// Its `limits.max_instances`.
        max_instances: usize,
        /// How long the upload waited for an instance.
        waited: Duration,
    },

    /// A provider could not be loaded: the component is missing, is not a component, targets
    /// another world version, needs an import that is not granted, or refused its settings.
    #[error("egress provider `{provider}` cannot be loaded: {cause}")]
    Load {
        /// The provider's configured name (or the file, for `plugin check`).
        provider: String,
        /// What is wrong, and what to do when known.
        cause: String,
    },

    /// The upload was used after it failed or closed.
    #[error("egress provider `{provider}`: the upload is closed after an earlier failure: {first}")]
    Closed {
        /// The provider's configured name.
        provider: String,
        /// The first failure.
        first: Box<EgressError>,
    },

    /// diagmon itself failed (a thread could not start, a channel broke).
    #[error("egress provider `{provider}`: internal error: {message}")]
    Host {
        /// The provider's configured name.
        provider: String,
        /// What failed.
        message: String,
    },
}

fn output_suffix(output: &Option<String>) -> String {
    match output {
        Some(text) if !text.trim().is_empty() => format!("; provider output: {}", text.trim()),
        _ => String::new(),
    }
}

impl EgressError {
    /// A machine-readable kind, for the operation's error record.
    pub fn kind(&self) -> &'static str {
        match self {
            EgressError::UnknownProvider(_) => "UnknownEgressProvider",
            EgressError::Provider { .. } => "EgressProviderError",
            EgressError::Trap { .. } => "EgressProviderCrashed",
            EgressError::DeadlineExceeded { .. } => "EgressDeadlineExceeded",
            EgressError::MemoryLimit { .. } => "EgressMemoryLimitExceeded",
            EgressError::Busy { .. } => "EgressProviderBusy",
            EgressError::Load { .. } => "EgressProviderLoadFailed",
            EgressError::Closed { first, .. } => first.kind(),
            EgressError::Host { .. } => "EgressHostError",
        }
    }

    /// The provider's configured name, when the error concerns one.
    pub fn provider(&self) -> &str {
        match self {
            EgressError::UnknownProvider(provider)
            | EgressError::Provider { provider, .. }
            | EgressError::Trap { provider, .. }
            | EgressError::DeadlineExceeded { provider, .. }
            | EgressError::MemoryLimit { provider, .. }
            | EgressError::Busy { provider, .. }
            | EgressError::Load { provider, .. }
            | EgressError::Closed { provider, .. }
            | EgressError::Host { provider, .. } => provider,
        }
    }

    pub(crate) fn load(provider: &str, cause: impl Into<String>) -> EgressError {
        EgressError::Load {
            provider: provider.to_owned(),
            cause: cause.into(),
        }
    }

    pub(crate) fn host(provider: &str, message: impl Into<String>) -> EgressError {
        EgressError::Host {
            provider: provider.to_owned(),
            message: message.into(),
        }
    }
}

/// Cuts `text` to at most `max` bytes, on a character boundary, marking the cut.
pub(crate) fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}
