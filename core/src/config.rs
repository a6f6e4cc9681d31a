//! diagmon's configuration: built-in defaults < a config file (TOML, JSON or YAML) < environment
//! variables `DIAGMON_...` (`__` separates nested keys) < command-line flags.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Json, Serialized, Toml, Yaml};
use serde::{Deserialize, Serialize};

use crate::auth::AuthenticationConfig;
use crate::egress::EgressConfig;

/// The default listening address, as dotnet-monitor's but on plain loopback HTTP.
pub const DEFAULT_URL: &str = "http://127.0.0.1:52323";

/// Environment variables with the `DIAGMON_` prefix that are not configuration keys.
const NON_CONFIG_VARIABLES: &[&str] = &["log", "test_cache"];

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Addresses to serve the API on (`http://` or `https://`).
    pub urls: Vec<String>,
    /// Where runtimes create their sockets in connect mode; defaults to `$TMPDIR` or `/tmp`.
    pub socket_dir: Option<PathBuf>,
    /// Listen mode: diagmon's own diagnostic port. Omit for connect mode.
    pub diagnostic_port: Option<DiagnosticPortConfig>,
    /// Which process requests without `pid`, `uid` or `name` address.
    pub default_process: DefaultProcessConfig,
    /// Concurrency limits.
    pub limits: LimitsConfig,
    /// How long finished operations are kept.
    pub operations: OperationsConfig,
    /// API-key authentication.
    pub authentication: AuthenticationConfig,
    /// HTTPS certificate and key, for `https://` URLs.
    pub tls: Option<crate::tls::TlsConfig>,
    /// Egress providers.
    pub egress: EgressConfig,
    /// Counters of the observed processes on `/metrics`.
    #[serde(default)]
    pub metrics: MetricsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            urls: vec![DEFAULT_URL.to_owned()],
            socket_dir: None,
            diagnostic_port: None,
            default_process: DefaultProcessConfig::default(),
            limits: LimitsConfig::default(),
            operations: OperationsConfig::default(),
            authentication: AuthenticationConfig::default(),
            tls: None,
            egress: EgressConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

/// `[metrics]`: the background counter sessions behind `GET /metrics`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Whether counters are collected and `/metrics` serves them (otherwise it answers 400).
    pub enabled: bool,
    /// Seconds between two counter reports (`EventCounterIntervalSec`), 1 to 3600.
    pub interval_seconds: u32,
    /// EventCounter providers (EventSource names) whose counters are collected.
    pub providers: Vec<String>,
    /// Meters (`System.Diagnostics.Metrics`, .NET 6+) whose instruments are collected.
    pub meters: Vec<String>,
    /// Only processes matching every one of these filters are observed (empty: all).
    pub include: Vec<ProcessFilter>,
    /// Processes matching every one of these filters are not observed (empty: none excluded).
    pub exclude: Vec<ProcessFilter>,
    /// Whether `/metrics` needs an API key (dotnet-monitor: never).
    pub require_auth: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            interval_seconds: 5,
            providers: crate::metrics::DEFAULT_PROVIDERS
                .iter()
                .map(|provider| (*provider).to_owned())
                .collect(),
            meters: Vec::new(),
            include: Vec::new(),
            exclude: Vec::new(),
            require_auth: false,
        }
    }
}

/// Listen mode settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiagnosticPortConfig {
    /// The socket path runtimes connect to (`DOTNET_DiagnosticPorts=<path>`).
    pub endpoint_name: PathBuf,
}

/// The default process: every filter must match.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultProcessConfig {
    /// The filters; empty means "the single observable process".
    #[serde(default)]
    pub filters: Vec<ProcessFilter>,
}

/// One default-process filter.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessFilter {
    /// What to compare.
    #[serde(default)]
    pub key: ProcessFilterKey,
    /// The value to compare with (case-insensitive).
    pub value: String,
    /// Exact or substring match.
    #[serde(default, rename = "match")]
    pub match_type: MatchType,
}

/// The process property a filter compares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProcessFilterKey {
    /// The process id (always an exact match).
    #[default]
    ProcessId,
    /// The process name.
    ProcessName,
    /// The command line.
    CommandLine,
    /// The managed entry-point assembly name.
    ManagedEntryPointAssemblyName,
}

/// How a filter value is compared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MatchType {
    /// The whole value, case-insensitive.
    #[default]
    Exact,
    /// A substring, case-insensitive.
    Contains,
}

/// Concurrency limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Trace operations running at once, streamed and egressed alike; more get 429.
    pub max_concurrent_traces: usize,
    /// Process dump operations running at once; more get 429.
    pub max_concurrent_dumps: usize,
    /// GC dump operations running at once; more get 429.
    pub max_concurrent_gcdumps: usize,
    /// Live metrics operations running at once; more get 429.
    pub max_concurrent_livemetrics: usize,
    /// Log stream operations running at once; more get 429.
    pub max_concurrent_logs: usize,
    /// How long a streamed artifact waits for a client that takes no bytes before the operation
    /// fails (`ClientStalled`) and its slot is freed, in seconds.
    pub stream_send_timeout_seconds: u64,
    /// Largest accepted request body in bytes; larger bodies get 413.
    pub max_request_body_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_concurrent_traces: 3,
            max_concurrent_dumps: 1,
            max_concurrent_gcdumps: 1,
            max_concurrent_livemetrics: 3,
            max_concurrent_logs: 3,
            stream_send_timeout_seconds: 30,
            max_request_body_bytes: 1 << 20,
        }
    }
}

/// Retention of finished operations.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OperationsConfig {
    /// Seconds a finished operation stays readable.
    pub retention_seconds: u64,
    /// Finished operations kept at most (oldest dropped first).
    pub max_finished: usize,
}

impl Default for OperationsConfig {
    fn default() -> Self {
        OperationsConfig {
            retention_seconds: 3600,
            max_finished: 1000,
        }
    }
}

impl MetricsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=3600).contains(&self.interval_seconds) {
            return Err(ConfigError(format!(
                "`metrics.interval_seconds` must be 1 to 3600, not {}",
                self.interval_seconds
            )));
        }
        if let Some(index) = self.providers.iter().position(|p| p.trim().is_empty()) {
            return Err(ConfigError(format!(
                "`metrics.providers[{index}]` is empty; name an EventSource"
            )));
        }
        for (list, filters) in [("include", &self.include), ("exclude", &self.exclude)] {
            for (index, filter) in filters.iter().enumerate() {
                if filter.key == ProcessFilterKey::ProcessId && filter.value.parse::<u64>().is_err()
                {
                    return Err(ConfigError(format!(
                        "`metrics.{list}[{index}]`: ProcessId filter value `{}` is not a number",
                        filter.value
                    )));
                }
            }
        }
        Ok(())
    }
}

/// A configuration that could not be loaded: names the source, the key and what was expected.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl From<figment::Error> for ConfigError {
    fn from(error: figment::Error) -> Self {
        let messages: Vec<String> = error.into_iter().map(|e| e.to_string()).collect();
        ConfigError(messages.join("; "))
    }
}

/// The config file to use: `explicit` if given, else the first of `./diagmon.toml`,
/// `$XDG_CONFIG_HOME/diagmon/config.toml` (or `~/.config/...`), `/etc/diagmon/config.toml`.
pub fn config_file(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = explicit {
        return Some(path.to_owned());
    }
    let user_dir = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")));
    let candidates = [
        Some(PathBuf::from("diagmon.toml")),
        user_dir.map(|dir| dir.join("diagmon").join("config.toml")),
        Some(PathBuf::from("/etc/diagmon/config.toml")),
    ];
    candidates.into_iter().flatten().find(|path| path.is_file())
}

/// Merges defaults, the config file, `DIAGMON_` environment variables and `overrides` (command-line
/// flags, as a serializable partial structure), in that order of precedence.
pub fn load(file: Option<&Path>, overrides: impl Serialize) -> Result<Config, ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    if let Some(path) = file {
        if !path.is_file() {
            return Err(ConfigError(format!(
                "the config file {} does not exist",
                path.display()
            )));
        }
        figment = match path.extension().and_then(|ext| ext.to_str()) {
            Some("json") => figment.merge(Json::file_exact(path)),
            Some("yaml" | "yml") => figment.merge(Yaml::file_exact(path)),
            _ => figment.merge(Toml::file_exact(path)),
        };
    }
    let config: Config = figment
        .merge(
            Env::prefixed("DIAGMON_")
                .ignore(NON_CONFIG_VARIABLES)
                .split("__"),
        )
        .merge(Serialized::defaults(overrides))
        .extract()?;
    config.validate()?;
    Ok(config)
}

impl Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.urls.is_empty() {
            return Err(ConfigError("`urls` must list at least one address".into()));
        }
        let limits = &self.limits;
        for (key, value) in [
            ("max_concurrent_traces", limits.max_concurrent_traces as u64),
            ("max_concurrent_dumps", limits.max_concurrent_dumps as u64),
            (
                "max_concurrent_gcdumps",
                limits.max_concurrent_gcdumps as u64,
            ),
            (
                "max_concurrent_livemetrics",
                limits.max_concurrent_livemetrics as u64,
            ),
            (
                "stream_send_timeout_seconds",
                limits.stream_send_timeout_seconds,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError(format!("`limits.{key}` must be at least 1")));
            }
        }
        for filter in &self.default_process.filters {
            if filter.key == ProcessFilterKey::ProcessId && filter.value.parse::<u64>().is_err() {
                return Err(ConfigError(format!(
                    "`default_process.filters`: ProcessId filter value `{}` is not a number",
                    filter.value
                )));
            }
        }
        self.metrics.validate()?;
        Ok(())
    }

    /// The configuration as TOML, with secrets replaced by `:REDACTED:`.
    pub fn to_redacted_toml(&self) -> String {
        let mut value = match toml::Value::try_from(self) {
            Ok(value) => value,
            Err(error) => return format!("# cannot render the configuration: {error}\n"),
        };
        redact(&mut value);
        toml::to_string_pretty(&value).unwrap_or_else(|error| format!("# {error}\n"))
    }
}

/// Keys whose values are secrets.
fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "secret",
        "password",
        "private",
        "token",
        "access_key",
        "account_key",
        "sas",
    ]
    .iter()
    .any(|word| key.contains(word))
}

fn redact(value: &mut toml::Value) {
    match value {
        toml::Value::Table(table) => {
            for (key, value) in table.iter_mut() {
                if is_secret(key) {
                    *value = toml::Value::String(":REDACTED:".into());
                } else {
                    redact(value);
                }
            }
        }
        toml::Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_loopback_and_three_traces() {
        let config = load(None, serde_json::json!({})).unwrap();
        assert_eq!(config.urls, [DEFAULT_URL]);
        assert_eq!(config.limits.max_concurrent_traces, 3);
    }

    #[test]
    fn file_then_overrides_take_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "urls = [\"http://127.0.0.1:1\"]\n[limits]\nmax_concurrent_traces = 5\n\
             [[default_process.filters]]\nkey = \"ProcessName\"\nvalue = \"app\"\nmatch = \"Contains\"\n",
        )
        .unwrap();
        let config = load(
            Some(&path),
            serde_json::json!({"urls": ["http://127.0.0.1:2"]}),
        )
        .unwrap();
        assert_eq!(config.urls, ["http://127.0.0.1:2"]);
        assert_eq!(config.limits.max_concurrent_traces, 5);
        assert_eq!(
            config.default_process.filters[0].match_type,
            MatchType::Contains
        );
    }

    #[test]
    fn errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[limits]\nmax_concurrent_traces = \"many\"\n").unwrap();
        let error = load(Some(&path), serde_json::json!({}))
            .unwrap_err()
            .to_string();
        assert!(error.contains("max_concurrent_traces"), "{error}");
        std::fs::write(&path, "colour = 1\n").unwrap();
        let error = load(Some(&path), serde_json::json!({}))
            .unwrap_err()
            .to_string();
        assert!(error.contains("colour"), "{error}");
    }
}
