//! Trace providers, as requests name them: the one parser of keywords, levels and provider specs
//! (`Name[:Keywords[:Level[:key=value;...]]]`) that the HTTP API and the `trace` command share,
//! and the profiles (named sets of providers, dotnet-monitor's `GET /trace?profile=`).

use crate::diagnostics::eventpipe::Rundown;
use crate::diagnostics::{EventProvider, SessionConfig};

/// The runtime's default keywords (GC, loader, JIT, exceptions, ...), TraceEvent's "Default".
pub const RUNTIME_DEFAULT_KEYWORDS: u64 = 0x0014_C14F_CCBD;

/// The profiles `GET /trace` uses when none are given.
pub const DEFAULT_PROFILES: &str = "Cpu,Http,Metrics,GcCollect";

/// DiagnosticSource specs selecting ASP.NET Core and HttpClient request activities. The ASP.NET
/// triggers of collection rules ask for the same: a runtime keeps the specs one session gave the
/// DiagnosticSource provider for the others too, so every session asks for the same ones.
pub const DIAGNOSTIC_SOURCE_SPECS: &str = "Microsoft.AspNetCore/Microsoft.AspNetCore.Hosting.HttpRequestIn.Start@Activity1Start:-Request.Scheme;Request.Host;Request.PathBase;Request.QueryString;Request.Path;Request.Method;ActivityStartTime=*Activity.StartTimeUtc.Ticks;ActivityId=*Activity.Id\r\n\
Microsoft.AspNetCore/Microsoft.AspNetCore.Hosting.HttpRequestIn.Stop@Activity1Stop:-ActivityId=*Activity.Id;Request.Path;Response.StatusCode;ActivityDuration=*Activity.Duration.Ticks\r\n\
HttpHandlerDiagnosticListener/System.Net.Http.HttpRequestOut.Start@Activity2Start:-Request.RequestUri;Request.Method;Request.RequestUri.Host;Request.RequestUri.Port\r\n\
HttpHandlerDiagnosticListener/System.Net.Http.HttpRequestOut.Stop@Activity2Stop:-Response.StatusCode;ActivityDuration=*Activity.Duration.Ticks";

/// Event level names, by value (0 = LogAlways ... 5 = Verbose).
pub const LEVELS: [&str; 6] = [
    "LogAlways",
    "Critical",
    "Error",
    "Warning",
    "Informational",
    "Verbose",
];

/// The level a provider gets when none is given: Verbose.
pub const DEFAULT_LEVEL: u8 = 5;

/// The keywords a provider gets when none are given: every bit.
pub const DEFAULT_KEYWORDS: u64 = u64::MAX;

/// Why part of a provider spec is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderSpecError {
    /// The name is empty.
    #[error("a provider needs a name")]
    MissingName,
    /// The keywords are not a number under the one rule.
    #[error(
        "keywords `{0}` are not a decimal signed 64-bit number (\"-1\" is every bit) or a 0x-prefixed hexadecimal 64-bit number"
    )]
    Keywords(String),
    /// The level is not one of the six.
    #[error(
        "level `{0}` is not 0 to 5 or one of LogAlways, Critical, Error, Warning, Informational, Verbose"
    )]
    Level(String),
    /// An argument is not `key=value`.
    #[error("provider argument `{0}` is not key=value")]
    Argument(String),
}

/// Keywords as dotnet-monitor reads them: decimal signed 64-bit (so `-1` is every bit) or `0x`
/// hexadecimal up to 64 bits.
pub fn parse_keywords(text: &str) -> Result<u64, ProviderSpecError> {
    let trimmed = text.trim();
    match trimmed
        .strip_prefix("0x")
        .or_else(|| trimmed.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        // The bits of the signed value: -1 is every keyword.
        None => trimmed.parse::<i64>().ok().map(|value| value as u64),
    }
    .ok_or_else(|| ProviderSpecError::Keywords(text.to_owned()))
}

/// A level by number (`0` to `5`) or by name (case-insensitive).
pub fn parse_level(text: &str) -> Result<u8, ProviderSpecError> {
    let trimmed = text.trim();
    if let Ok(level @ 0..=5) = trimmed.parse::<u8>() {
        return Ok(level);
    }
    LEVELS
        .iter()
        .position(|name| name.eq_ignore_ascii_case(trimmed))
        .and_then(|level| u8::try_from(level).ok())
        .ok_or_else(|| ProviderSpecError::Level(text.to_owned()))
}

/// Parses `Name[:Keywords[:Level[:key=value;...]]]`; an empty part takes its default (every
/// keyword, Verbose).
pub fn parse_provider(spec: &str) -> Result<EventProvider, ProviderSpecError> {
    let mut parts = spec.splitn(4, ':');
    let name = parts.next().unwrap_or_default().trim();
    if name.is_empty() {
        return Err(ProviderSpecError::MissingName);
    }
    let keywords = match parts.next().filter(|text| !text.is_empty()) {
        None => DEFAULT_KEYWORDS,
        Some(text) => parse_keywords(text)?,
    };
    let level = match parts.next().filter(|text| !text.is_empty()) {
        None => DEFAULT_LEVEL,
        Some(text) => parse_level(text)?,
    };
    let mut provider = EventProvider::new(name, keywords, level);
    for pair in parts.next().unwrap_or_default().split(';') {
        if pair.is_empty() {
            continue;
        }
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| ProviderSpecError::Argument(pair.to_owned()))?;
        provider.arguments.insert(key.to_owned(), value.to_owned());
    }
    Ok(provider)
}

fn with_argument(mut provider: EventProvider, key: &str, value: &str) -> EventProvider {
    provider.arguments.insert(key.to_owned(), value.to_owned());
    provider
}

/// The providers of one profile and whether it wants rundown; `None` for an unknown name.
fn profile(name: &str) -> Option<(bool, Vec<EventProvider>)> {
    Some(match name.to_ascii_lowercase().as_str() {
        "cpu" => (
            true,
            vec![
                EventProvider::new("Microsoft-DotNETCore-SampleProfiler", 0, 4),
                EventProvider::new(
                    "Microsoft-Windows-DotNETRuntime",
                    RUNTIME_DEFAULT_KEYWORDS,
                    4,
                ),
            ],
        ),
        "http" => (
            true,
            vec![with_argument(
                EventProvider::new("Microsoft-Diagnostics-DiagnosticSource", 0x3, 5),
                "FilterAndPayloadSpecs",
                DIAGNOSTIC_SOURCE_SPECS,
            )],
        ),
        "logs" => (
            false,
            vec![with_argument(
                EventProvider::new("Microsoft-Extensions-Logging", 0xC, 0),
                "FilterSpecs",
                "UseAppFilters",
            )],
        ),
        "metrics" => (
            false,
            [
                "System.Runtime",
                "Microsoft.AspNetCore.Hosting",
                "Grpc.AspNetCore.Server",
            ]
            .into_iter()
            .map(|name| {
                with_argument(
                    EventProvider::new(name, 0, 4),
                    "EventCounterIntervalSec",
                    "5",
                )
            })
            .collect(),
        ),
        "gccollect" => (
            false,
            vec![
                EventProvider::new("Microsoft-Windows-DotNETRuntime", 0x1, 4),
                EventProvider::new("Microsoft-Windows-DotNETRuntimePrivate", 0x1, 4),
            ],
        ),
        _ => return None,
    })
}

/// One session for a comma-separated list of profiles (case-insensitive): providers shared by
/// several profiles are merged (keywords OR-ed, the higher level kept); rundown if any profile
/// wants it. The error names the unknown profile.
pub fn session_config(profiles: &str) -> Result<SessionConfig, String> {
    let mut providers: Vec<EventProvider> = Vec::new();
    let mut rundown = false;
    for name in profiles.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (wants_rundown, added) = profile(name).ok_or_else(|| {
            format!("`{name}` is not a profile: use Cpu, Http, Logs, Metrics or GcCollect.")
        })?;
        rundown |= wants_rundown;
        for provider in added {
            match providers.iter_mut().find(|p| p.name == provider.name) {
                Some(existing) => {
                    existing.keywords |= provider.keywords;
                    existing.level = existing.level.max(provider.level);
                    existing.arguments.extend(provider.arguments);
                }
                None => providers.push(provider),
            }
        }
    }
    if providers.is_empty() {
        return Err("At least one profile is required.".to_owned());
    }
    let mut config = SessionConfig::new(providers);
    if !rundown {
        config.rundown = Rundown::Off;
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_merge_shared_providers() {
        let config = session_config("cpu, GcCollect").unwrap();
        let runtime: Vec<_> = config
            .providers
            .iter()
            .filter(|p| p.name == "Microsoft-Windows-DotNETRuntime")
            .collect();
        assert_eq!(runtime.len(), 1);
        assert_eq!(runtime[0].keywords, RUNTIME_DEFAULT_KEYWORDS | 0x1);
        assert_eq!(config.rundown, Rundown::On);
        assert_eq!(session_config("Metrics").unwrap().rundown, Rundown::Off);
    }

    #[test]
    fn keywords_are_signed_decimal_or_hex_for_every_caller() {
        assert_eq!(parse_keywords("-1"), Ok(u64::MAX));
        assert_eq!(
            parse_keywords(" 0x14C14FCCBD "),
            Ok(RUNTIME_DEFAULT_KEYWORDS)
        );
        assert_eq!(parse_keywords("0XFF"), Ok(0xFF));
        assert_eq!(parse_keywords("12"), Ok(12));
        for bad in [
            "",
            "0x",
            "0xZZ",
            "18446744073709551615",
            "0x1FFFFFFFFFFFFFFFF",
            "1.5",
        ] {
            assert!(parse_keywords(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn levels_are_numbers_or_names() {
        assert_eq!(parse_level("informational"), Ok(4));
        assert_eq!(parse_level("0"), Ok(0));
        assert!(parse_level("6").is_err());
        assert!(parse_level("Loud").is_err());
    }

    #[test]
    fn provider_specs_take_defaults_for_empty_parts() {
        let provider = parse_provider("P:-1:Warning:a=1;b=x=y").unwrap();
        assert_eq!(provider.keywords, u64::MAX);
        assert_eq!(provider.level, 3);
        assert_eq!(provider.arguments["b"], "x=y");
        let bare = parse_provider("P::").unwrap();
        assert_eq!(
            (bare.keywords, bare.level),
            (DEFAULT_KEYWORDS, DEFAULT_LEVEL)
        );
        assert_eq!(parse_provider(":1"), Err(ProviderSpecError::MissingName));
        assert!(matches!(
            parse_provider("P:1:5:novalue"),
            Err(ProviderSpecError::Argument(_))
        ));
    }

    #[test]
    fn unknown_and_empty_profiles_are_errors() {
        assert!(session_config("Cpu,Gpu").unwrap_err().contains("`Gpu`"));
        assert!(session_config(" , ").is_err());
    }
}
