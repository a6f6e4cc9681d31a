//! diagmon's configuration: built-in defaults < a config file (TOML, JSON or YAML) < environment
//! variables `DIAGMON_...` (`__` separates nested keys) < command-line flags.

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml, Yaml};
use serde::{Deserialize, Serialize};

use crate::auth::AuthenticationConfig;
use crate::diagnostics::Timeouts;
use crate::diagnostics::reverse::PortLimits;
use crate::egress::EgressConfig;
use crate::secret::{REDACTED, is_secret_key};

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
    /// How long diagmon waits for runtimes.
    pub runtime: RuntimeConfig,
    /// Which process requests without `pid`, `uid` or `name` address (dotnet-monitor's
    /// `DefaultProcess` section too; left out of the printed configuration while it has no
    /// filters, so that a file may use either name).
    #[serde(
        default,
        alias = "DefaultProcess",
        skip_serializing_if = "DefaultProcessConfig::is_empty"
    )]
    pub default_process: DefaultProcessConfig,
    /// Concurrency limits.
    pub limits: LimitsConfig,
    /// How long finished operations are kept.
    pub operations: OperationsConfig,
    /// API-key authentication.
    pub authentication: AuthenticationConfig,
    /// HTTPS certificate and key, for `https://` URLs.
    pub tls: Option<crate::tls::TlsConfig>,
    /// Connection limits, timeouts, the shutdown deadline and the Host allow-list.
    pub http: HttpConfig,
    /// Egress providers.
    pub egress: EgressConfig,
    /// Where the runtime writes dumps before diagmon sends them on.
    pub storage: StorageConfig,
    /// Counters of the observed processes on `/metrics`.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Collection rules, as written (`[collection_rules.NAME]`, plus `allow_execute`,
    /// `defaults` and `templates`); `rules::config::parse` checks them at start-up and on reload.
    #[serde(
        default = "empty_table",
        alias = "CollectionRules",
        skip_serializing_if = "is_empty_table"
    )]
    pub collection_rules: serde_json::Value,
    /// dotnet-monitor's top-level `Templates` section: moved into `collection_rules.templates`
    /// when the configuration loads.
    #[serde(
        default = "empty_table",
        alias = "Templates",
        skip_serializing_if = "is_empty_table"
    )]
    templates: serde_json::Value,
    /// dotnet-monitor's top-level `CollectionRuleDefaults` section: moved into
    /// `collection_rules.defaults` when the configuration loads.
    #[serde(
        default = "empty_table",
        alias = "CollectionRuleDefaults",
        skip_serializing_if = "is_empty_table"
    )]
    collection_rule_defaults: serde_json::Value,
    /// The JSON schema a settings file names (`$schema`, as dotnet-monitor's carry): accepted
    /// and ignored.
    #[serde(rename = "$schema", default, skip_serializing)]
    #[allow(dead_code)]
    schema: Option<serde::de::IgnoredAny>,
}

fn empty_table() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// Whether `value` is the empty default of `collection_rules` (left out of the built-in
/// defaults, so that a file may use dotnet-monitor's section name `CollectionRules`).
fn is_empty_table(value: &serde_json::Value) -> bool {
    value.as_object().is_some_and(serde_json::Map::is_empty)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            urls: vec![DEFAULT_URL.to_owned()],
            socket_dir: None,
            diagnostic_port: None,
            runtime: RuntimeConfig::default(),
            default_process: DefaultProcessConfig::default(),
            limits: LimitsConfig::default(),
            operations: OperationsConfig::default(),
            authentication: AuthenticationConfig::default(),
            tls: None,
            http: HttpConfig::default(),
            egress: EgressConfig::default(),
            storage: StorageConfig::default(),
            metrics: MetricsConfig::default(),
            collection_rules: empty_table(),
            templates: empty_table(),
            collection_rule_defaults: empty_table(),
            schema: None,
        }
    }
}

/// dotnet-monitor's default counter providers.
pub const DEFAULT_METRICS_PROVIDERS: &[&str] = &[
    "System.Runtime",
    "Microsoft.AspNetCore.Hosting",
    "Grpc.AspNetCore.Server",
];

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
    /// Extra listeners that serve only `/metrics` (dotnet-monitor's metrics URLs), so that a
    /// scraper can reach it on an address where the API is not served. Empty: none.
    pub urls: Vec<String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            interval_seconds: 5,
            providers: DEFAULT_METRICS_PROVIDERS
                .iter()
                .map(|provider| (*provider).to_owned())
                .collect(),
            meters: Vec::new(),
            include: Vec::new(),
            exclude: Vec::new(),
            require_auth: false,
            urls: Vec::new(),
        }
    }
}

/// Listen mode settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiagnosticPortConfig {
    /// The socket path runtimes connect to (`DOTNET_DiagnosticPorts=<path>`).
    pub endpoint_name: PathBuf,
    /// Runtimes (instance cookies) listed at once; connections advertising more are closed.
    #[serde(default = "default_max_runtimes")]
    pub max_runtimes: usize,
    /// Idle connections kept per runtime (a runtime opens one at a time); extras are closed.
    #[serde(default = "default_max_connections_per_runtime")]
    pub max_connections_per_runtime: usize,
}

impl DiagnosticPortConfig {
    /// The port's connection limits.
    pub fn limits(&self) -> PortLimits {
        PortLimits {
            max_runtimes: self.max_runtimes,
            max_connections_per_runtime: self.max_connections_per_runtime,
        }
    }
}

fn default_max_runtimes() -> usize {
    PortLimits::default().max_runtimes
}

fn default_max_connections_per_runtime() -> usize {
    PortLimits::default().max_connections_per_runtime
}

/// How long diagmon waits for runtimes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Seconds after a graceful stop request within which StopTracing is retried and the runtime
    /// must end the trace; a trace still running then is cut off and reported truncated (Failed).
    pub stop_timeout_seconds: u64,
}

/// The longest accepted `runtime.stop_timeout_seconds`: a day.
const MAX_STOP_TIMEOUT_SECONDS: u64 = 24 * 60 * 60;

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            stop_timeout_seconds: Timeouts::default().stop.as_secs(),
        }
    }
}

impl RuntimeConfig {
    /// The timeouts of the diagnostics client.
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            stop: std::time::Duration::from_secs(self.stop_timeout_seconds),
            ..Timeouts::default()
        }
    }
}

/// The default process: every filter must match.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultProcessConfig {
    /// The filters; empty means "the single observable process".
    #[serde(default, alias = "Filters")]
    pub filters: Vec<ProcessFilter>,
}

impl DefaultProcessConfig {
    /// No filters: the single observable process is the default.
    fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }
}

/// One process filter (of the default process, or of the processes `/metrics` observes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ProcessFilterSpec")]
pub struct ProcessFilter {
    /// What to compare.
    pub key: ProcessFilterKey,
    /// The value to compare with (case-insensitive).
    pub value: String,
    /// Exact or substring match.
    #[serde(rename = "match")]
    pub match_type: MatchType,
}

/// A process filter as written: `key`, `value` and `match`, or dotnet-monitor's shorthand that
/// names the property (`{ ProcessName = "dotnet" }`); dotnet-monitor's `Key`, `Value` and
/// `MatchType` spellings too.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProcessFilterSpec {
    #[serde(default, alias = "Key")]
    key: Option<ProcessFilterKey>,
    #[serde(default, alias = "Value")]
    value: Option<FilterText>,
    #[serde(default, rename = "match", alias = "MatchType", alias = "match_type")]
    match_type: MatchType,
    #[serde(default, alias = "ProcessId")]
    process_id: Option<FilterText>,
    #[serde(default, alias = "ProcessName")]
    process_name: Option<FilterText>,
    #[serde(default, alias = "CommandLine")]
    command_line: Option<FilterText>,
    #[serde(default, alias = "ManagedEntryPointAssemblyName")]
    managed_entry_point_assembly_name: Option<FilterText>,
}

/// A filter's value: text, or a number (a process id written as one).
#[derive(Deserialize)]
#[serde(untagged)]
enum FilterText {
    Text(String),
    Number(u64),
}

impl From<FilterText> for String {
    fn from(text: FilterText) -> String {
        match text {
            FilterText::Text(text) => text,
            FilterText::Number(number) => number.to_string(),
        }
    }
}

impl TryFrom<ProcessFilterSpec> for ProcessFilter {
    type Error = String;

    fn try_from(spec: ProcessFilterSpec) -> Result<ProcessFilter, String> {
        let shorthands = [
            (ProcessFilterKey::ProcessId, spec.process_id),
            (ProcessFilterKey::ProcessName, spec.process_name),
            (ProcessFilterKey::CommandLine, spec.command_line),
            (
                ProcessFilterKey::ManagedEntryPointAssemblyName,
                spec.managed_entry_point_assembly_name,
            ),
        ];
        let mut named = shorthands
            .into_iter()
            .filter_map(|(key, value)| Some((key, value?)));
        let (key, value) = match (named.next(), named.next()) {
            (None, _) => {
                let value = spec.value.ok_or(
                    "a filter needs `key` and `value` (or names the property itself: \
                     `ProcessName = \"dotnet\"`)",
                )?;
                (spec.key.unwrap_or_default(), value)
            }
            (Some((key, value)), None) if spec.key.is_none() && spec.value.is_none() => {
                (key, value)
            }
            (Some(_), None) => {
                return Err(
                    "a filter that names the property itself takes no `key` or `value` beside it"
                        .to_owned(),
                );
            }
            (Some(_), Some(_)) => {
                return Err(
                    "a filter compares one property; give each property a filter of its own"
                        .to_owned(),
                );
            }
        };
        Ok(ProcessFilter {
            key,
            value: value.into(),
            match_type: spec.match_type,
        })
    }
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

/// `[http]`: how the server treats connections, shutdown and Host names.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Seconds a client has to send a request's headers, from the moment the server waits for
    /// them (a new connection, or a kept-alive one between requests); then the connection is
    /// closed. Also bounds the TLS handshake.
    pub header_read_timeout_seconds: u64,
    /// Seconds a connection may stay open with no request in flight and no bytes moving.
    pub idle_timeout_seconds: u64,
    /// Connections served at once, over all listeners. Further clients wait in the listen
    /// backlog until one closes.
    pub max_connections: usize,
    /// Seconds a shutdown (SIGTERM, Ctrl-C) waits for running operations and open
    /// connections; then unfinished operations are cancelled and connections dropped.
    pub shutdown_timeout_seconds: u64,
    /// With authentication off (`--no-auth`): Host names accepted besides the loopback ones
    /// (`localhost`, `127.0.0.1`, `[::1]`), as `name` or `name:port`. Other Host headers are
    /// refused (DNS rebinding).
    pub allowed_hosts: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_read_timeout_seconds: 10,
            idle_timeout_seconds: 120,
            max_connections: 512,
            shutdown_timeout_seconds: 30,
            allowed_hosts: Vec::new(),
        }
    }
}

/// The dump folder: the runtime's `createdump` writes each dump there (at a path the *target*
/// resolves), diagmon streams it on and deletes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// The folder; the target must see it at the same path (in containers: the same volume
    /// mounted at the same path in both). Default: a private (0700) folder under the system
    /// temporary directory, `diagmon-dumps-{uid}`.
    pub dump_temp_folder: Option<PathBuf>,
    /// Free space the folder must have before a dump is asked for, in MiB.
    pub dump_min_free_mib: u64,
    /// At start-up, dump files diagmon left behind (a crash, a kill) that were last written longer
    /// ago than this are removed, in seconds.
    pub dump_leftover_max_age_seconds: u64,
    /// How long the runtime may take to write a dump, in seconds.
    pub dump_timeout_seconds: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            dump_temp_folder: None,
            dump_min_free_mib: 256,
            dump_leftover_max_age_seconds: 900,
            dump_timeout_seconds: 600,
        }
    }
}

impl HttpConfig {
    /// [`HttpConfig::header_read_timeout_seconds`] as a duration.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_seconds)
    }

    /// [`HttpConfig::idle_timeout_seconds`] as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_seconds)
    }

    /// [`HttpConfig::shutdown_timeout_seconds`] as a duration.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_seconds)
    }
}

/// The largest `limits.max_concurrent_*`: each operation holds a runtime session, a
/// connection and buffers, so more than this is a typo, not a plan.
pub const MAX_CONCURRENT_OPERATIONS: usize = 1024;

/// The largest `http.max_connections`.
pub const MAX_CONNECTIONS: usize = 1 << 20;

/// The largest value of the `http` timeouts, in seconds (one day).
pub const MAX_TIMEOUT_SECONDS: u64 = 86_400;

/// The scheme of a listen URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS, with the `[tls]` certificate.
    Https,
}

impl Scheme {
    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// One entry of `urls`, checked: its scheme and a bindable `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenUrl {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// `host:port` (`[v6]:port` for IPv6), for `TcpListener::bind`.
    pub address: String,
    /// Whether the host is a loopback address or `localhost`.
    pub is_loopback: bool,
}

impl ListenUrl {
    /// Parses `http(s)://host[:port]` (no path beyond `/`); the error says what is wrong
    /// without naming the key (the caller knows it).
    pub fn parse(url: &str) -> Result<ListenUrl, String> {
        let uri: axum::http::Uri = url
            .parse()
            .map_err(|error| format!("`{url}` is not a URL: {error}"))?;
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            Some(other) => {
                return Err(format!(
                    "`{url}`: the scheme `{other}` is not supported; use http:// or https://"
                ));
            }
            None => {
                return Err(format!(
                    "`{url}` needs a scheme, e.g. http://127.0.0.1:52323"
                ));
            }
        };
        let host = uri
            .host()
            .filter(|host| !host.is_empty())
            .ok_or_else(|| format!("`{url}` has no host"))?;
        if uri
            .path_and_query()
            .is_some_and(|path| path.as_str() != "/")
        {
            return Err(format!(
                "`{url}` has a path; give only scheme, host and port"
            ));
        }
        let authority = uri.authority().map_or("", |authority| authority.as_str());
        let after_host = &authority[authority.rfind(']').map_or(0, |end| end + 1)..];
        if after_host.contains(':') && uri.port_u16().is_none() {
            return Err(format!(
                "`{url}`: the port must be a number from 0 to 65535"
            ));
        }
        let port = uri.port_u16().unwrap_or(match scheme {
            Scheme::Https => 443,
            Scheme::Http => 80,
        });
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let is_loopback = host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        let address = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(ListenUrl {
            scheme,
            address,
            is_loopback,
        })
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
        let messages: Vec<String> = error.into_iter().map(|e| describe_error(&e)).collect();
        ConfigError(messages.join("; "))
    }
}

/// One loading error as a person reads it: the key as written in the file (without figment's
/// `default.` profile prefix), what is wrong, and where the value came from.
fn describe_error(error: &figment::Error) -> String {
    use figment::error::Kind;
    let quote = |names: &[&str]| {
        names
            .iter()
            .map(|name| format!("`{name}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (key, what) = match &error.kind {
        Kind::UnknownField(field, expected) => {
            // The path ends with the unknown key itself: name the table it is in.
            let table = error.path[..error.path.len().saturating_sub(1)].join(".");
            let place = if table.is_empty() {
                "at the top level".to_owned()
            } else {
                format!("in `{table}`")
            };
            (
                String::new(),
                format!(
                    "unknown key `{field}` {place}; the keys there are {}",
                    quote(expected)
                ),
            )
        }
        Kind::MissingField(field) => (
            error.path.join("."),
            format!("the key `{field}` is missing"),
        ),
        other => (error.path.join("."), other.to_string()),
    };
    let origin = error
        .metadata
        .as_ref()
        .map(|metadata| match &metadata.source {
            Some(source) => format!(" (in {source})"),
            None => format!(" (from {})", metadata.name),
        })
        .unwrap_or_default();
    if key.is_empty() {
        format!("{what}{origin}")
    } else {
        format!("`{key}`: {what}{origin}")
    }
}

/// How deep a JSON config file may nest arrays and objects (serde_json's own limit).
const MAX_JSON_NESTING: usize = 128;

/// The deepest nesting of `[` and `{` in JSON5 text, outside strings and comments.
fn json_nesting(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                while let Some(inner) = chars.next() {
                    match inner {
                        '\\' => {
                            chars.next();
                        }
                        quote if quote == c => break,
                        _ => {}
                    }
                }
            }
            '/' if chars.peek() == Some(&'/') => {
                for inner in chars.by_ref() {
                    if inner == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut previous = ' ';
                for inner in chars.by_ref() {
                    if previous == '*' && inner == '/' {
                        break;
                    }
                    previous = inner;
                }
            }
            '[' | '{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// A JSON config file, read as .NET's configuration reads one: dotnet-monitor's settings files
/// may hold comments and trailing commas. It is parsed as JSON5, a superset of JSON that allows
/// both.
struct JsonFile(PathBuf);

impl figment::Provider for JsonFile {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::from("JSON file", self.0.as_path())
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        let text = std::fs::read_to_string(&self.0)
            .map_err(|error| format!("cannot read {}: {error}", self.0.display()))?;
        // The JSON5 parser recurses without a limit; a configuration is never this deep.
        if json_nesting(&text) > MAX_JSON_NESTING {
            return Err(format!(
                "{} nests arrays and objects more than {MAX_JSON_NESTING} deep",
                self.0.display()
            )
            .into());
        }
        let value: figment::value::Value = json5::from_str(&text)
            .map_err(|error| format!("{} is not valid JSON: {error}", self.0.display()))?;
        Serialized::defaults(value).data()
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
            Some("json") => figment.merge(JsonFile(path.to_owned())),
            Some("yaml" | "yml") => figment.merge(Yaml::file_exact(path)),
            _ => figment.merge(Toml::file_exact(path)),
        };
    }
    let mut config: Config = figment
        .merge(
            Env::prefixed("DIAGMON_")
                .ignore(NON_CONFIG_VARIABLES)
                .split("__"),
        )
        .merge(Serialized::defaults(overrides))
        .extract()?;
    config.move_dotnet_monitor_sections()?;
    config.validate()?;
    Ok(config)
}

impl Config {
    /// Moves dotnet-monitor's top-level `Templates` and `CollectionRuleDefaults` into
    /// `collection_rules`, where the rules are read from.
    fn move_dotnet_monitor_sections(&mut self) -> Result<(), ConfigError> {
        let moves = [
            (
                "Templates",
                "templates",
                std::mem::replace(&mut self.templates, empty_table()),
            ),
            (
                "CollectionRuleDefaults",
                "defaults",
                std::mem::replace(&mut self.collection_rule_defaults, empty_table()),
            ),
        ];
        for (section, key, value) in moves {
            if value.is_null() || is_empty_table(&value) {
                continue;
            }
            if self.collection_rules.is_null() {
                self.collection_rules = empty_table();
            }
            let Some(rules) = self.collection_rules.as_object_mut() else {
                return Err(ConfigError(
                    "`collection_rules` must be a table of rules".to_owned(),
                ));
            };
            // `templates` / `Templates`, `defaults` / `Defaults`: one word, so case is all.
            if rules
                .keys()
                .any(|existing| existing.eq_ignore_ascii_case(key))
            {
                return Err(ConfigError(format!(
                    "`{section}` and `collection_rules.{key}` are both given; keep one of them"
                )));
            }
            rules.insert(key.to_owned(), value);
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.urls.is_empty() {
            return Err(ConfigError("`urls` must list at least one address".into()));
        }
        for (index, url) in self.urls.iter().enumerate() {
            let url = ListenUrl::parse(url)
                .map_err(|error| ConfigError(format!("`urls[{index}]`: {error}")))?;
            if url.scheme == Scheme::Https && self.tls.is_none() {
                return Err(ConfigError(format!(
                    "`urls[{index}]` is an https:// address but no [tls] certificate and key are configured"
                )));
            }
        }
        let limits = &self.limits;
        for (key, value) in [
            ("limits.max_concurrent_traces", limits.max_concurrent_traces),
            ("limits.max_concurrent_dumps", limits.max_concurrent_dumps),
            (
                "limits.max_concurrent_gcdumps",
                limits.max_concurrent_gcdumps,
            ),
            (
                "limits.max_concurrent_livemetrics",
                limits.max_concurrent_livemetrics,
            ),
            ("limits.max_concurrent_logs", limits.max_concurrent_logs),
        ] {
            check_range(key, value, 1, MAX_CONCURRENT_OPERATIONS)?;
        }
        check_range(
            "limits.stream_send_timeout_seconds",
            limits.stream_send_timeout_seconds,
            1,
            MAX_TIMEOUT_SECONDS,
        )?;
        check_range(
            "http.max_connections",
            self.http.max_connections,
            1,
            MAX_CONNECTIONS,
        )?;
        for (key, seconds) in [
            (
                "http.header_read_timeout_seconds",
                self.http.header_read_timeout_seconds,
            ),
            ("http.idle_timeout_seconds", self.http.idle_timeout_seconds),
            (
                "http.shutdown_timeout_seconds",
                self.http.shutdown_timeout_seconds,
            ),
        ] {
            check_range(key, seconds, 1, MAX_TIMEOUT_SECONDS)?;
        }
        for (index, host) in self.http.allowed_hosts.iter().enumerate() {
            if host.is_empty() || host.parse::<axum::http::uri::Authority>().is_err() {
                return Err(ConfigError(format!(
                    "`http.allowed_hosts[{index}]`: `{host}` is not a host name or host:port"
                )));
            }
        }
        if !(1..=MAX_STOP_TIMEOUT_SECONDS).contains(&self.runtime.stop_timeout_seconds) {
            return Err(ConfigError(format!(
                "`runtime.stop_timeout_seconds` must be between 1 and {MAX_STOP_TIMEOUT_SECONDS}"
            )));
        }
        if let Some(port) = &self.diagnostic_port
            && (port.max_runtimes == 0 || port.max_connections_per_runtime == 0)
        {
            return Err(ConfigError(
                "`diagnostic_port.max_runtimes` and `diagnostic_port.max_connections_per_runtime` must be at least 1".into(),
            ));
        }
        if let Some(folder) = &self.storage.dump_temp_folder
            && (!folder.is_absolute() || folder.to_string_lossy().contains('%'))
        {
            return Err(ConfigError(format!(
                "`storage.dump_temp_folder` must be an absolute path without `%` (the target \
                 resolves it, and createdump expands `%` patterns): `{}`",
                folder.display()
            )));
        }
        if self.storage.dump_timeout_seconds == 0 {
            return Err(ConfigError(
                "`storage.dump_timeout_seconds` must be at least 1".into(),
            ));
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
        self.listen_urls()?;
        self.metrics_listen_urls()?;
        Ok(())
    }

    /// The checked `urls`, in order.
    pub fn listen_urls(&self) -> Result<Vec<ListenUrl>, ConfigError> {
        parse_urls("urls", &self.urls)
    }

    /// The checked `metrics.urls`, in order.
    pub fn metrics_listen_urls(&self) -> Result<Vec<ListenUrl>, ConfigError> {
        parse_urls("metrics.urls", &self.metrics.urls)
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

/// Parses every URL of the list `key`, naming the one that is wrong.
fn parse_urls(key: &str, urls: &[String]) -> Result<Vec<ListenUrl>, ConfigError> {
    urls.iter()
        .enumerate()
        .map(|(index, url)| {
            ListenUrl::parse(url).map_err(|error| ConfigError(format!("`{key}[{index}]`: {error}")))
        })
        .collect()
}

/// Fails unless `min <= value <= max`, naming `key`.
fn check_range<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    min: T,
    max: T,
) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError(format!(
            "`{key}` is {value}; it must be between {min} and {max}"
        )));
    }
    Ok(())
}

/// Replaces the values of secret keys (see [`is_secret_key`]) with [`REDACTED`]; tables are
/// searched, not replaced, so that `{ env = "NAME" }` references stay visible.
fn redact(value: &mut toml::Value) {
    match value {
        toml::Value::Table(table) => {
            for (key, value) in table.iter_mut() {
                match value {
                    toml::Value::Table(_) => redact(value),
                    _ if is_secret_key(key) => *value = toml::Value::String(REDACTED.into()),
                    _ => redact(value),
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
    fn the_example_config_is_understood_and_states_the_defaults() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/diagmon.toml");
        let loaded = load(Some(&example), serde_json::json!({}))
            .unwrap_or_else(|error| panic!("config/diagmon.toml: {error}"));
        // Every value the example sets is the default: it documents them, it changes none.
        assert_eq!(
            toml::Value::try_from(&loaded).unwrap(),
            toml::Value::try_from(Config::default()).unwrap()
        );
    }

    #[test]
    fn an_unknown_key_is_named_in_its_table_without_the_profile_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[egress.providers.x]\ncomponent = \"filesystem\"\ndirectroy = \"/tmp/x\"\n",
        )
        .unwrap();
        let message = load(Some(&path), serde_json::json!({}))
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with(
                "invalid configuration: unknown key `directroy` in `egress.providers.x`; \
                 the keys there are `component`, `directory`,"
            ),
            "{message}"
        );
        assert!(
            message.ends_with(&format!("(in {})", path.display())),
            "{message}"
        );
        assert!(!message.contains("default."), "{message}");
        assert!(!message.contains("``"), "{message}");
    }

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
    fn out_of_range_values_and_bad_urls_are_errors_naming_the_key() {
        for (toml, key) in [
            (
                "[limits]\nmax_concurrent_traces = 9223372036854775807\n",
                "limits.max_concurrent_traces",
            ),
            (
                "[limits]\nmax_concurrent_traces = 0\n",
                "limits.max_concurrent_traces",
            ),
            ("[http]\nmax_connections = 0\n", "http.max_connections"),
            (
                "[http]\nshutdown_timeout_seconds = 0\n",
                "http.shutdown_timeout_seconds",
            ),
            (
                "[http]\nheader_read_timeout_seconds = 99999999\n",
                "http.header_read_timeout_seconds",
            ),
            (
                "[http]\nallowed_hosts = [\"a b\"]\n",
                "http.allowed_hosts[0]",
            ),
            ("urls = [\"http://127.0.0.1:1\", \"ftp://x\"]\n", "urls[1]"),
            ("urls = [\"127.0.0.1:52323\"]\n", "urls[0]"),
            ("urls = [\"http://127.0.0.1:99999\"]\n", "urls[0]"),
            ("urls = [\"http://127.0.0.1:1/api\"]\n", "urls[0]"),
            ("urls = [\"https://127.0.0.1:1\"]\n", "urls[0]"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("c.toml");
            std::fs::write(&path, toml).unwrap();
            let error = load(Some(&path), serde_json::json!({}))
                .unwrap_err()
                .to_string();
            assert!(error.contains(&format!("`{key}`")), "{toml}: {error}");
        }
    }

    #[test]
    fn listen_urls_are_parsed_once() {
        let url = ListenUrl::parse("http://[::1]:8080").unwrap();
        assert_eq!(
            (url.scheme, url.address.as_str(), url.is_loopback),
            (Scheme::Http, "[::1]:8080", true)
        );
        let url = ListenUrl::parse("https://0.0.0.0").unwrap();
        assert_eq!(
            (url.scheme, url.address.as_str(), url.is_loopback),
            (Scheme::Https, "0.0.0.0:443", false)
        );
        assert!(ListenUrl::parse("http://localhost:1").unwrap().is_loopback);
    }

    #[test]
    fn config_show_redacts_secrets_in_provider_settings_but_shows_references() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[egress.providers.hook]\ncomponent = \"filesystem\"\n\
             [egress.providers.hook.settings]\nurl = \"https://example.com\"\n\
             authorization = \"Bearer hunter2\"\napi_key = \"hunter3\"\n\
             headers = { x-api-key = \"hunter4\", accept = \"text/plain\" }\n\
             token = { env = \"HOOK_TOKEN\" }\n\
             [[default_process.filters]]\nkey = \"ProcessName\"\nvalue = \"app\"\n",
        )
        .unwrap();
        let shown = load(Some(&path), serde_json::json!({}))
            .unwrap()
            .to_redacted_toml();
        for secret in ["hunter2", "hunter3", "hunter4"] {
            assert!(!shown.contains(secret), "{secret} leaked:\n{shown}");
        }
        for visible in [
            "https://example.com",
            "text/plain",
            "HOOK_TOKEN",
            "ProcessName",
        ] {
            assert!(shown.contains(visible), "{visible} is hidden:\n{shown}");
        }
        assert_eq!(shown.matches(REDACTED).count(), 3, "{shown}");
    }

    #[test]
    fn dotnet_monitor_spellings_load_and_conflicts_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let write = |text: &str| {
            let path = dir.path().join("settings.json");
            std::fs::write(&path, text).unwrap();
            path
        };
        let path = write(
            r#"{
              // Filters by shorthand and with dotnet-monitor's key names.
              "default_process": { "filters": [
                { "ProcessName": "dotnet" },
                { "Key": "CommandLine", "Value": "app.dll", "MatchType": "Contains" },
                { "ProcessId": 42 },
              ] },
            }"#,
        );
        let config = load(Some(&path), serde_json::json!({})).unwrap();
        let filters = &config.default_process.filters;
        assert_eq!(
            (filters[0].key, filters[0].value.as_str()),
            (ProcessFilterKey::ProcessName, "dotnet")
        );
        assert_eq!(filters[1].match_type, MatchType::Contains);
        assert_eq!(
            (filters[2].key, filters[2].value.as_str()),
            (ProcessFilterKey::ProcessId, "42")
        );

        // dotnet-monitor's section names, as its documentation writes them.
        let path = write(r#"{ "DefaultProcess": { "Filters": [{ "ProcessName": "w3wp" }] } }"#);
        let config = load(Some(&path), serde_json::json!({})).unwrap();
        assert_eq!(config.default_process.filters[0].value, "w3wp");

        let path = write(
            r#"{ "default_process": { "filters": [{ "ProcessName": "a", "CommandLine": "b" }] } }"#,
        );
        let error = load(Some(&path), serde_json::json!({}))
            .unwrap_err()
            .to_string();
        assert!(error.contains("one property"), "{error}");

        let path = write(
            r#"{ "Templates": { "CollectionRuleFilters": {} },
                 "collection_rules": { "templates": {} } }"#,
        );
        let error = load(Some(&path), serde_json::json!({}))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`Templates` and `collection_rules.templates`"),
            "{error}"
        );

        let deep = format!(
            "{{\"a\": {}1{} }}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let path = write(&deep);
        let error = load(Some(&path), serde_json::json!({}))
            .unwrap_err()
            .to_string();
        assert!(error.contains("more than 128 deep"), "{error}");
        assert_eq!(
            json_nesting(r#"{ "a": "[[{", /* [[ */ b: ['x\'['] } // {{"#),
            2
        );

        let path = write(r#"{ "urls": ["http://127.0.0.1:1"] "#);
        let error = load(Some(&path), serde_json::json!({}))
            .unwrap_err()
            .to_string();
        assert!(error.contains("settings.json is not valid JSON"), "{error}");
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
