//! Trace profiles: named sets of providers (dotnet-monitor's `GET /trace?profile=`), shared by the
//! HTTP API and the `trace` command.

use crate::diagnostics::eventpipe::Rundown;
use crate::diagnostics::{EventProvider, SessionConfig};

/// The runtime's default keywords (GC, loader, JIT, exceptions, ...), TraceEvent's "Default".
pub const RUNTIME_DEFAULT_KEYWORDS: u64 = 0x0014_C14F_CCBD;

/// The profiles `GET /trace` uses when none are given.
pub const DEFAULT_PROFILES: &str = "Cpu,Http,Metrics,GcCollect";

/// DiagnosticSource specs selecting ASP.NET Core and HttpClient request activities.
const DIAGNOSTIC_SOURCE_SPECS: &str = "Microsoft.AspNetCore/Microsoft.AspNetCore.Hosting.HttpRequestIn.Start@Activity1Start:-Request.Scheme;Request.Host;Request.PathBase;Request.QueryString;Request.Path;Request.Method;ActivityStartTime=*Activity.StartTimeUtc.Ticks\r\n\
Microsoft.AspNetCore/Microsoft.AspNetCore.Hosting.HttpRequestIn.Stop@Activity1Stop:-Response.StatusCode;ActivityDuration=*Activity.Duration.Ticks\r\n\
HttpHandlerDiagnosticListener/System.Net.Http.HttpRequestOut.Start@Activity2Start:-Request.RequestUri;Request.Method;Request.RequestUri.Host;Request.RequestUri.Port\r\n\
HttpHandlerDiagnosticListener/System.Net.Http.HttpRequestOut.Stop@Activity2Stop:-Response.StatusCode;ActivityDuration=*Activity.Duration.Ticks";

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
    fn unknown_and_empty_profiles_are_errors() {
        assert!(session_config("Cpu,Gpu").unwrap_err().contains("`Gpu`"));
        assert!(session_config(" , ").is_err());
    }
}
