//! `[collection_rules]`: parsing and validating the rules, with every error naming the rule and
//! the key (`collection_rules.NAME.actions[0].settings.profile: ...`).
//!
//! Keys are snake_case (`provider_name`); dotnet-monitor's PascalCase (`ProviderName`) is
//! accepted too. Type names (`EventCounter`, `CollectTrace`) are compared without case and
//! underscores. Durations are dotnet-monitor's TimeSpan (`[d.]hh:mm:ss[.fff]`) or a number with a
//! unit (`30s`, `500ms`, `2m`, `1h`, `1d`; a bare number is seconds).
//!
//! Numbers and booleans may be written as strings (`"10"`, `"false"`), as .NET's configuration
//! binder reads them. A process filter is `key`, `value` and `match_type`, or dotnet-monitor's
//! shorthand that names the property (`{ ProcessName = "dotnet" }`).
//!
//! Three keys of `[collection_rules]` are not rules: `allow_execute` (the `Execute` action is
//! refused unless it is true), `defaults` (`actions.egress`, `limits.*`,
//! `triggers.sliding_window_duration`, `triggers.request_count`, `triggers.response_count`) and
//! `templates` (`triggers`, `actions`, `filters`, `limits`, or dotnet-monitor's
//! `CollectionRuleTriggers` and so on: named pieces a rule can use by giving the template's name,
//! compared without case, instead of the object). dotnet-monitor's top-level `Templates` and
//! `CollectionRuleDefaults` sections are moved here when the configuration loads.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::config::{MatchType, ProcessFilter, ProcessFilterKey};
use crate::diagnostics::dump::DumpType;
use crate::diagnostics::eventpipe::Rundown;
use crate::diagnostics::{EventProvider, SessionConfig};
use crate::metrics::live::LiveMetricsSpec;
use crate::profiles;

/// Keys of `[collection_rules]` that are not rule names.
pub const RESERVED_KEYS: [&str; 3] = ["allow_execute", "defaults", "templates"];
/// dotnet-monitor's default `limits.action_count`.
pub const DEFAULT_ACTION_COUNT: u32 = 5;
/// dotnet-monitor's default trigger sliding window: a minute.
pub const DEFAULT_SLIDING_WINDOW: Duration = Duration::from_secs(60);
/// The shortest sliding window of a trigger (dotnet-monitor's): a second.
const MIN_SLIDING_WINDOW: Duration = Duration::from_secs(1);
/// The longest sliding window, trace or live-metrics duration (dotnet-monitor's): a day.
const MAX_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);
/// The default duration of a `CollectTrace` or `CollectLiveMetrics` action.
pub const DEFAULT_ARTIFACT_DURATION: Duration = Duration::from_secs(30);
/// dotnet-monitor's default `request_duration` of `AspNetRequestDuration`.
pub const DEFAULT_REQUEST_DURATION: Duration = Duration::from_secs(5);
/// The longest `request_duration` (dotnet-monitor's): an hour.
const MAX_REQUEST_DURATION: Duration = Duration::from_secs(60 * 60);
/// The default timeout of an `Execute` action.
pub const DEFAULT_EXECUTE_TIMEOUT: Duration = Duration::from_secs(60);

/// A rule configuration that cannot be used; the message names the rule and the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid collection rule: `{key}`: {message}")]
pub struct RuleConfigError {
    /// The full key, `collection_rules.NAME.…`.
    pub key: String,
    /// What is wrong and what to do.
    pub message: String,
}

fn error(key: &str, message: impl Into<String>) -> RuleConfigError {
    RuleConfigError {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// Every rule, checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RulesConfig {
    /// Whether `Execute` actions may run.
    pub allow_execute: bool,
    /// The rules by name.
    pub rules: BTreeMap<String, Rule>,
}

/// One collection rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Its name (the key under `[collection_rules]`).
    pub name: String,
    /// The processes it applies to: every filter must match (empty: every process).
    pub filters: Vec<ProcessFilter>,
    /// What starts its actions.
    pub trigger: Trigger,
    /// What it does, in order.
    pub actions: Vec<Action>,
    /// How often and how long.
    pub limits: Limits,
}

/// A rule's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How many times the actions run (in the sliding window, if one is set; else in all).
    pub action_count: u32,
    /// The window `action_count` applies to; none: the rule finishes after `action_count` runs.
    pub action_count_sliding_window_duration: Option<Duration>,
    /// The rule finishes this long after it started on a process.
    pub rule_duration: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            action_count: DEFAULT_ACTION_COUNT,
            action_count_sliding_window_duration: None,
            rule_duration: None,
        }
    }
}

/// What starts a rule's actions.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// Once, when the rule starts on a process.
    Startup,
    /// A counter (EventCounter or meter instrument) staying in range for a window.
    Counter(CounterTrigger),
    /// Enough ASP.NET Core requests of a kind within a window.
    AspNet(AspNetTrigger),
}

impl Trigger {
    /// The trigger's type name, as configured (`Startup`, `EventCounter`, `CPUUsage`, ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            Trigger::Startup => "Startup",
            Trigger::Counter(counter) => counter.type_name,
            Trigger::AspNet(trigger) => trigger.condition.type_name(),
        }
    }
}

/// A counter trigger: fires when every report of the counter during `sliding_window_duration`
/// is above `greater_than` and below `less_than` (those given).
#[derive(Debug, Clone, PartialEq)]
pub struct CounterTrigger {
    /// `EventCounter`, `CPUUsage`, `GCHeapSize`, `ThreadpoolQueueLength` or `EventMeter`.
    pub type_name: &'static str,
    /// The EventSource (or meter) name.
    pub provider_name: String,
    /// The counter (or instrument) name.
    pub counter_name: String,
    /// True for a meter instrument (`EventMeter`), false for an EventCounter.
    pub meter: bool,
    /// The value must be above this.
    pub greater_than: Option<f64>,
    /// The value must be below this.
    pub less_than: Option<f64>,
    /// How long the value must stay in range.
    pub sliding_window_duration: Duration,
}

impl CounterTrigger {
    /// Whether `value` is in the trigger's range.
    pub fn in_range(&self, value: f64) -> bool {
        self.greater_than.is_none_or(|low| value > low)
            && self.less_than.is_none_or(|high| value < high)
    }
}

/// An ASP.NET Core request trigger: fires when `count` requests that meet `condition` and
/// whose path is included (and not excluded) counted within `sliding_window_duration` (a
/// request counts when the condition says: at its start, its stop, or once it has run too
/// long).
#[derive(Debug, Clone, PartialEq)]
pub struct AspNetTrigger {
    /// What a request must do to count.
    pub condition: AspNetCondition,
    /// How many requests (`request_count`, or `response_count` for `AspNetResponseStatus`).
    pub count: u32,
    /// The window the requests must fall within.
    pub sliding_window_duration: Duration,
    /// Path globs a request must match one of (none: every path); `*` is any text without a
    /// `/`, `**/` any number of whole segments.
    pub include_paths: Vec<String>,
    /// Path globs a request must match none of (they win over `include_paths`).
    pub exclude_paths: Vec<String>,
}

/// What a request must do to count for an [`AspNetTrigger`].
#[derive(Debug, Clone, PartialEq)]
pub enum AspNetCondition {
    /// `AspNetRequestCount`: every request counts (when it starts).
    RequestCount,
    /// `AspNetRequestDuration`: a request that took (or, unfinished, has been running) at least
    /// this long.
    RequestDuration(Duration),
    /// `AspNetResponseStatus`: a response whose status is in one of these inclusive ranges.
    ResponseStatus(Vec<(u16, u16)>),
}

impl AspNetCondition {
    /// The trigger type name.
    pub fn type_name(&self) -> &'static str {
        match self {
            AspNetCondition::RequestCount => "AspNetRequestCount",
            AspNetCondition::RequestDuration(_) => "AspNetRequestDuration",
            AspNetCondition::ResponseStatus(_) => "AspNetResponseStatus",
        }
    }
}

/// One action of a rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    /// Its name (given, or `action{index}`): `$(Actions.NAME.…)` refers to its outputs.
    pub name: String,
    /// Whether the next action waits until this one completed (otherwise only until it
    /// started; the rule still waits for every action before it triggers again). Default false,
    /// as in dotnet-monitor.
    pub wait_for_completion: bool,
    /// What it does.
    pub kind: ActionKind,
}

/// What an action does.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionKind {
    /// A trace, sent to an egress provider.
    CollectTrace {
        /// The session to start.
        session: SessionConfig,
        /// Its length (the longest, with a stopping event).
        duration: Duration,
        /// The event that ends it early, complete.
        stopping_event: Option<StoppingEvent>,
        /// The egress provider.
        egress: String,
    },
    /// A process dump, sent to an egress provider.
    CollectDump {
        /// What the dump holds.
        dump_type: DumpType,
        /// The egress provider.
        egress: String,
    },
    /// A heap snapshot (`.gcdump`, see `docs/gcdump.md`), sent to an egress provider.
    CollectGCDump {
        /// The egress provider.
        egress: String,
    },
    /// Counter reports as json-seq, sent to an egress provider.
    CollectLiveMetrics {
        /// The request body, in `POST /livemetrics`'s shape (checked at start-up).
        body: Value,
        /// Its length.
        duration: Duration,
        /// The egress provider.
        egress: String,
    },
    /// Runs a program (no shell); its exit code is the output `ExitCode`.
    Execute {
        /// The program (tokens substituted when it runs).
        path: String,
        /// Its arguments (tokens substituted when it runs).
        arguments: Vec<String>,
        /// A non-zero exit code is not a failure.
        ignore_exit_code: bool,
        /// The program is killed after this long (and the action fails).
        timeout: Duration,
    },
    /// Reads one environment variable of the process; its value is the output `Value`.
    GetEnvironmentVariable {
        /// The variable (tokens substituted when it runs).
        name: String,
    },
}

/// The event that ends a `CollectTrace` early (dotnet-monitor's `StoppingEvent`): the trace
/// stops, complete, after the first event of `provider_name` named `event_name` whose payload
/// has every field of `payload_filter` with the value given.
#[derive(Debug, Clone, PartialEq)]
pub struct StoppingEvent {
    /// The provider; one of the trace's providers.
    pub provider_name: String,
    /// The event's name as the trace's metadata gives it (`Activity1Start`), or TraceEvent's
    /// `Task/Opcode` form of it (`Activity1/Start`).
    pub event_name: String,
    /// Payload field name → the value's text (numbers in decimal, booleans `True`/`False`).
    pub payload_filter: BTreeMap<String, String>,
}

impl ActionKind {
    /// The action's type name.
    pub fn type_name(&self) -> &'static str {
        match self {
            ActionKind::CollectTrace { .. } => "CollectTrace",
            ActionKind::CollectDump { .. } => "CollectDump",
            ActionKind::CollectGCDump { .. } => "CollectGCDump",
            ActionKind::CollectLiveMetrics { .. } => "CollectLiveMetrics",
            ActionKind::Execute { .. } => "Execute",
            ActionKind::GetEnvironmentVariable { .. } => "GetEnvironmentVariable",
        }
    }

    /// The outputs the action gives to later actions.
    pub fn outputs(&self) -> &'static [&'static str] {
        match self {
            ActionKind::CollectTrace { .. }
            | ActionKind::CollectDump { .. }
            | ActionKind::CollectGCDump { .. }
            | ActionKind::CollectLiveMetrics { .. } => &["EgressPath"],
            ActionKind::Execute { .. } => &["ExitCode"],
            ActionKind::GetEnvironmentVariable { .. } => &["Value"],
        }
    }
}

/// `key` in snake_case: `ProviderName` → `provider_name`, `CPUUsage` → `cpu_usage`; snake_case
/// keys are unchanged.
pub fn snake_case(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    let mut out = String::with_capacity(key.len() + 4);
    for (index, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let previous = index.checked_sub(1).map(|i| chars[i]);
            let next_lower = chars.get(index + 1).is_some_and(|n| n.is_lowercase());
            let boundary = match previous {
                Some(p) => {
                    p.is_lowercase() || p.is_ascii_digit() || (p.is_uppercase() && next_lower)
                }
                None => false,
            };
            if boundary && !out.ends_with('_') {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else if c == '-' {
            out.push('_');
        } else {
            out.push(c);
        }
    }
    out
}

/// A type name compared without case and underscores.
fn type_key(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Parses a duration: `[-][d.]hh:mm:ss[.fffffff]` (TimeSpan), or a number with `ms`, `s`, `m`,
/// `h` or `d` (a bare number is seconds). Negative durations are refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.starts_with('-') {
        return Err(format!(
            "`{text}` is negative; give a duration of 0 or more"
        ));
    }
    let bad = || {
        format!(
            "`{text}` is not a duration; write a TimeSpan (`00:00:30`, `1.00:00:00`) or a number with a unit (`30s`, `500ms`, `2m`, `1h`, `1d`)"
        )
    };
    if text.contains(':') {
        let parts: Vec<&str> = text.split(':').collect();
        let [hours, minutes, seconds] = parts.as_slice() else {
            return Err(bad());
        };
        let (days, hours) = match hours.split_once('.') {
            Some((days, hours)) => (days.parse::<u64>().map_err(|_| bad())?, hours),
            None => (0, *hours),
        };
        let hours: u64 = hours.parse().map_err(|_| bad())?;
        let minutes: u64 = minutes.parse().map_err(|_| bad())?;
        let seconds: f64 = seconds.parse().map_err(|_| bad())?;
        if hours > 23 || minutes > 59 || !(0.0..60.0).contains(&seconds) {
            return Err(bad());
        }
        let whole = days
            .checked_mul(86_400)
            .and_then(|d| d.checked_add(hours * 3600 + minutes * 60))
            .ok_or_else(bad)?;
        return Duration::from_secs(whole)
            .checked_add(Duration::from_secs_f64(seconds))
            .ok_or_else(bad);
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit.trim() {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" | "min" => number * 60.0,
        "h" => number * 3600.0,
        "d" => number * 86_400.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| bad())
}

/// A TimeSpan as dotnet-monitor writes it: `[d.]hh:mm:ss`.
pub fn format_timespan(duration: Duration) -> String {
    let total = duration.as_secs();
    let (days, rest) = (total / 86_400, total % 86_400);
    let body = format!(
        "{:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    );
    if days > 0 {
        format!("{days}.{body}")
    } else {
        body
    }
}

/// `true`, `false`, or a string saying one of them (any case).
fn bool_value(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(value) => Some(*value),
        Value::String(text) if text.trim().eq_ignore_ascii_case("true") => Some(true),
        Value::String(text) if text.trim().eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// One object of the configuration, read key by key; keys left unread are errors.
struct Obj<'a> {
    path: String,
    map: &'a Map<String, Value>,
    read: BTreeSet<String>,
    known: Vec<&'static str>,
}

impl<'a> Obj<'a> {
    fn new(path: &str, value: &'a Value) -> Result<Obj<'a>, RuleConfigError> {
        let map = value
            .as_object()
            .ok_or_else(|| error(path, "must be a table (an object)"))?;
        Ok(Obj {
            path: path.to_owned(),
            map,
            read: BTreeSet::new(),
            known: Vec::new(),
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.known.push(key);
        let (original, value) = self
            .map
            .iter()
            .find(|(original, _)| snake_case(original) == key)?;
        self.read.insert(original.clone());
        (!value.is_null()).then_some(value)
    }

    fn string(&mut self, key: &'static str) -> Result<Option<String>, RuleConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(text)) if !text.trim().is_empty() => Ok(Some(text.clone())),
            Some(Value::String(_)) => Err(error(&self.key(key), "is empty")),
            Some(_) => Err(error(&self.key(key), "must be a string")),
        }
    }

    fn required_string(&mut self, key: &'static str) -> Result<String, RuleConfigError> {
        self.string(key)?
            .ok_or_else(|| error(&self.key(key), "is required"))
    }

    /// A boolean; `"true"` and `"false"` too (any case), as .NET's configuration binder reads
    /// them (environment variables and Kubernetes config maps only have strings).
    fn bool(&mut self, key: &'static str) -> Result<Option<bool>, RuleConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(value) => bool_value(value)
                .map(Some)
                .ok_or_else(|| error(&self.key(key), "must be true or false")),
        }
    }

    /// A number; a string holding one too (`"10"`), as .NET's configuration binder reads it.
    fn number(&mut self, key: &'static str) -> Result<Option<f64>, RuleConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(value) => match value {
                Value::String(text) => text.trim().parse::<f64>().ok(),
                other => other.as_f64(),
            }
            .filter(|n| n.is_finite())
            .map(Some)
            .ok_or_else(|| error(&self.key(key), "must be a number")),
        }
    }

    fn duration(&mut self, key: &'static str) -> Result<Option<Duration>, RuleConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(text)) => parse_duration(text)
                .map(Some)
                .map_err(|message| error(&self.key(key), message)),
            Some(Value::Number(number)) => match number.as_f64() {
                Some(seconds) if seconds < 0.0 => Err(error(
                    &self.key(key),
                    format!("{seconds} is negative; give a duration of 0 or more"),
                )),
                Some(seconds) => Duration::try_from_secs_f64(seconds)
                    .map(Some)
                    .map_err(|_| error(&self.key(key), "is not a duration")),
                None => Err(error(&self.key(key), "is not a duration")),
            },
            Some(_) => Err(error(
                &self.key(key),
                "must be a duration such as \"00:00:30\" or \"30s\"",
            )),
        }
    }

    fn duration_in(
        &mut self,
        key: &'static str,
        min: Duration,
        max: Duration,
    ) -> Result<Option<Duration>, RuleConfigError> {
        let value = self.duration(key)?;
        if let Some(value) = value
            && (value < min || value > max)
        {
            return Err(error(
                &self.key(key),
                format!(
                    "is {}; it must be between {} and {}",
                    format_timespan(value),
                    format_timespan(min),
                    format_timespan(max)
                ),
            ));
        }
        Ok(value)
    }

    fn finish(self) -> Result<(), RuleConfigError> {
        for key in self.map.keys() {
            if !self.read.contains(key) {
                let mut known = self.known.clone();
                known.sort_unstable();
                known.dedup();
                return Err(error(
                    &self.key(key),
                    format!(
                        "is not a setting here; the settings are: {}",
                        known.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// `[collection_rules.defaults]`.
#[derive(Debug, Default)]
struct Defaults {
    egress: Option<String>,
    limits: Limits,
    sliding_window_duration: Option<Duration>,
    /// For `AspNetRequestCount` and `AspNetRequestDuration` triggers that give none.
    request_count: Option<u32>,
    /// For `AspNetResponseStatus` triggers that give none.
    response_count: Option<u32>,
}

/// A count of requests or responses: a whole number of at least 1.
fn whole_count(key: &str, count: f64) -> Result<u32, RuleConfigError> {
    if count >= 1.0 && count <= f64::from(i32::MAX) && count.fract() == 0.0 {
        Ok(count as u32)
    } else {
        Err(error(
            key,
            format!("is {count}; it must be a whole number of at least 1"),
        ))
    }
}

/// `[collection_rules.templates]`: the named pieces, as written.
#[derive(Debug, Default)]
struct Templates<'a> {
    triggers: BTreeMap<String, &'a Value>,
    actions: BTreeMap<String, &'a Value>,
    filters: BTreeMap<String, &'a Value>,
    limits: BTreeMap<String, &'a Value>,
}

impl<'a> Templates<'a> {
    /// `value`, or the template it names.
    fn resolve(
        &self,
        kind: &'static str,
        path: &str,
        value: &'a Value,
    ) -> Result<&'a Value, RuleConfigError> {
        let Value::String(name) = value else {
            return Ok(value);
        };
        let table = match kind {
            "triggers" => &self.triggers,
            "actions" => &self.actions,
            "filters" => &self.filters,
            _ => &self.limits,
        };
        // Names are compared without case, as .NET's configuration compares keys.
        let found = table
            .iter()
            .find(|(template, _)| template.eq_ignore_ascii_case(name))
            .map(|(_, template)| *template);
        found.ok_or_else(|| {
            error(
                path,
                format!(
                    "names the template `{name}`, but `collection_rules.templates.{kind}` has no such template"
                ),
            )
        })
    }
}

/// Parses `[collection_rules]` (as the configuration holds it). `egress_providers` are the
/// loaded egress providers, which artifact actions must name.
pub fn parse(value: &Value, egress_providers: &[String]) -> Result<RulesConfig, RuleConfigError> {
    const ROOT: &str = "collection_rules";
    let map = match value {
        Value::Null => return Ok(RulesConfig::default()),
        Value::Object(map) => map,
        _ => return Err(error(ROOT, "must be a table of rules")),
    };
    let reserved = |key: &str| RESERVED_KEYS.contains(&snake_case(key).as_str());
    let mut config = RulesConfig::default();
    let mut defaults = Defaults::default();
    let mut templates = Templates::default();
    for (key, value) in map.iter().filter(|(key, _)| reserved(key)) {
        let path = format!("{ROOT}.{}", snake_case(key));
        match snake_case(key).as_str() {
            "allow_execute" => {
                config.allow_execute =
                    bool_value(value).ok_or_else(|| error(&path, "must be true or false"))?;
            }
            "defaults" => defaults = parse_defaults(&path, value)?,
            _ => templates = parse_templates(&path, value)?,
        }
    }
    let context = Context {
        defaults: &defaults,
        templates: &templates,
        egress_providers,
        allow_execute: config.allow_execute,
    };
    for (name, value) in map.iter().filter(|(key, _)| !reserved(key)) {
        let rule = parse_rule(&context, name, value)?;
        config.rules.insert(name.clone(), rule);
    }
    Ok(config)
}

fn parse_defaults(path: &str, value: &Value) -> Result<Defaults, RuleConfigError> {
    let mut obj = Obj::new(path, value)?;
    let mut defaults = Defaults::default();
    if let Some(actions) = obj.get("actions") {
        let mut actions = Obj::new(&obj.key("actions"), actions)?;
        defaults.egress = actions.string("egress")?;
        actions.finish()?;
    }
    if let Some(limits) = obj.get("limits") {
        defaults.limits = parse_limits(&obj.key("limits"), limits, &Limits::default())?;
    }
    if let Some(triggers) = obj.get("triggers") {
        let mut triggers = Obj::new(&obj.key("triggers"), triggers)?;
        defaults.sliding_window_duration =
            triggers.duration_in("sliding_window_duration", MIN_SLIDING_WINDOW, MAX_WINDOW)?;
        for (key, target) in [
            ("request_count", &mut defaults.request_count),
            ("response_count", &mut defaults.response_count),
        ] {
            if let Some(count) = triggers.number(key)? {
                *target = Some(whole_count(&triggers.key(key), count)?);
            }
        }
        triggers.finish()?;
    }
    obj.finish()?;
    Ok(defaults)
}

fn parse_templates<'a>(path: &str, value: &'a Value) -> Result<Templates<'a>, RuleConfigError> {
    let mut obj = Obj::new(path, value)?;
    let mut templates = Templates::default();
    // dotnet-monitor's `Templates` section names them `CollectionRuleTriggers` and so on.
    for (kind, long) in [
        ("triggers", "collection_rule_triggers"),
        ("actions", "collection_rule_actions"),
        ("filters", "collection_rule_filters"),
        ("limits", "collection_rule_limits"),
    ] {
        let (key, table) = match (obj.get(kind), obj.get(long)) {
            (None, None) => continue,
            (Some(_), Some(_)) => {
                return Err(error(
                    &obj.key(long),
                    format!("is `{kind}` again under dotnet-monitor's name; keep one of them"),
                ));
            }
            (Some(table), None) => (kind, table),
            (None, Some(table)) => (long, table),
        };
        let table = table
            .as_object()
            .ok_or_else(|| error(&obj.key(key), "must be a table of named templates"))?;
        let target = match kind {
            "triggers" => &mut templates.triggers,
            "actions" => &mut templates.actions,
            "filters" => &mut templates.filters,
            _ => &mut templates.limits,
        };
        for (name, template) in table {
            target.insert(name.clone(), template);
        }
    }
    obj.finish()?;
    Ok(templates)
}

/// What every rule is parsed with.
struct Context<'a> {
    defaults: &'a Defaults,
    templates: &'a Templates<'a>,
    egress_providers: &'a [String],
    allow_execute: bool,
}

fn parse_rule(context: &Context<'_>, name: &str, value: &Value) -> Result<Rule, RuleConfigError> {
    let path = format!("collection_rules.{name}");
    let mut obj = Obj::new(&path, value)?;
    let mut filters = Vec::new();
    if let Some(list) = obj.get("filters") {
        let list = list
            .as_array()
            .ok_or_else(|| error(&obj.key("filters"), "must be a list of filters"))?;
        for (index, filter) in list.iter().enumerate() {
            let key = format!("{}[{index}]", obj.key("filters"));
            let filter = context.templates.resolve("filters", &key, filter)?;
            filters.push(parse_filter(&key, filter)?);
        }
    }
    let trigger = obj.get("trigger").ok_or_else(|| {
        error(
            &obj.key("trigger"),
            "is required: say what starts the actions",
        )
    })?;
    let trigger_key = obj.key("trigger");
    let trigger = context
        .templates
        .resolve("triggers", &trigger_key, trigger)?;
    let trigger = parse_trigger(context, &trigger_key, trigger)?;
    let mut actions: Vec<Action> = Vec::new();
    if let Some(list) = obj.get("actions") {
        let list = list
            .as_array()
            .ok_or_else(|| error(&obj.key("actions"), "must be a list of actions"))?;
        for (index, action) in list.iter().enumerate() {
            let key = format!("{}[{index}]", obj.key("actions"));
            let action = context.templates.resolve("actions", &key, action)?;
            let action = parse_action(context, &key, index, action, &actions)?;
            actions.push(action);
        }
    }
    let limits = match obj.get("limits") {
        Some(limits) => {
            let key = obj.key("limits");
            let limits = context.templates.resolve("limits", &key, limits)?;
            parse_limits(&key, limits, &context.defaults.limits)?
        }
        None => context.defaults.limits,
    };
    obj.finish()?;
    Ok(Rule {
        name: name.to_owned(),
        filters,
        trigger,
        actions,
        limits,
    })
}

/// A process filter: `key`, `value` and `match_type`, or dotnet-monitor's shorthand that names
/// the property as the key (`{ ProcessName = "dotnet" }`).
fn parse_filter(path: &str, value: &Value) -> Result<ProcessFilter, RuleConfigError> {
    const SHORTHANDS: [(&str, ProcessFilterKey); 4] = [
        ("process_id", ProcessFilterKey::ProcessId),
        ("process_name", ProcessFilterKey::ProcessName),
        ("command_line", ProcessFilterKey::CommandLine),
        (
            "managed_entry_point_assembly_name",
            ProcessFilterKey::ManagedEntryPointAssemblyName,
        ),
    ];
    let mut obj = Obj::new(path, value)?;
    let named_key = obj.string("key")?;
    let named_value = obj.get("value");
    let shorthands: Vec<_> = SHORTHANDS
        .iter()
        .filter_map(|&(name, key)| Some((name, key, obj.get(name)?)))
        .collect();
    let (key, value_key, filter_value) = match shorthands.as_slice() {
        [] => {
            let key = match named_key.as_deref().map(type_key).as_deref() {
                None | Some("processid") => ProcessFilterKey::ProcessId,
                Some("processname") => ProcessFilterKey::ProcessName,
                Some("commandline") => ProcessFilterKey::CommandLine,
                Some("managedentrypointassemblyname") => {
                    ProcessFilterKey::ManagedEntryPointAssemblyName
                }
                Some(_) => {
                    return Err(error(
                        &obj.key("key"),
                        "must be ProcessId, ProcessName, CommandLine or ManagedEntryPointAssemblyName",
                    ));
                }
            };
            (key, "value", named_value)
        }
        [(name, key, value)] if named_key.is_none() && named_value.is_none() => {
            (*key, *name, Some(*value))
        }
        [(name, ..)] => {
            return Err(error(
                &obj.key(name),
                "names the property itself, so the filter takes no `key` or `value` beside it",
            ));
        }
        [_, (name, ..), ..] => {
            return Err(error(
                &obj.key(name),
                "is a second property in one filter; give each property a filter of its own",
            ));
        }
    };
    let filter_value = match filter_value {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Number(number)) => number.to_string(),
        _ => return Err(error(&obj.key(value_key), "is required (a string)")),
    };
    if key == ProcessFilterKey::ProcessId && filter_value.parse::<u64>().is_err() {
        return Err(error(
            &obj.key(value_key),
            format!("`{filter_value}` is not a process id"),
        ));
    }
    let match_type = obj.string("match")?.or(obj.string("match_type")?);
    let match_type = match match_type.as_deref().map(type_key).as_deref() {
        None | Some("exact") => MatchType::Exact,
        Some("contains") => MatchType::Contains,
        Some(_) => return Err(error(&obj.key("match"), "must be Exact or Contains")),
    };
    obj.finish()?;
    Ok(ProcessFilter {
        key,
        value: filter_value,
        match_type,
    })
}

fn parse_limits(path: &str, value: &Value, defaults: &Limits) -> Result<Limits, RuleConfigError> {
    let mut obj = Obj::new(path, value)?;
    let action_count = match obj.number("action_count")? {
        None => defaults.action_count,
        Some(count) if count >= 1.0 && count.fract() == 0.0 && count <= f64::from(u32::MAX) => {
            count as u32
        }
        Some(count) => {
            return Err(error(
                &obj.key("action_count"),
                format!("is {count}; it must be a whole number of at least 1"),
            ));
        }
    };
    let window = obj
        .duration_in(
            "action_count_sliding_window_duration",
            MIN_SLIDING_WINDOW,
            MAX_WINDOW,
        )?
        .or(defaults.action_count_sliding_window_duration);
    let rule_duration = obj.duration("rule_duration")?;
    if rule_duration == Some(Duration::ZERO) {
        return Err(error(
            &obj.key("rule_duration"),
            "is 0; give a positive duration or leave it out",
        ));
    }
    obj.finish()?;
    Ok(Limits {
        action_count,
        action_count_sliding_window_duration: window,
        rule_duration: rule_duration.or(defaults.rule_duration),
    })
}

fn parse_trigger(
    context: &Context<'_>,
    path: &str,
    value: &Value,
) -> Result<Trigger, RuleConfigError> {
    let mut obj = Obj::new(path, value)?;
    let type_name = obj.required_string("type")?;
    let settings_key = obj.key("settings");
    let settings = obj.get("settings");
    obj.finish()?;
    let empty = Value::Object(Map::new());
    let mut settings = Obj::new(&settings_key, settings.unwrap_or(&empty))?;
    let window_default = context
        .defaults
        .sliding_window_duration
        .unwrap_or(DEFAULT_SLIDING_WINDOW);
    let shortcut = |type_name: &'static str, counter: &str, default_above: f64| {
        (type_name, counter.to_owned(), default_above)
    };
    let trigger = match type_key(&type_name).as_str() {
        "startup" => Trigger::Startup,
        "eventcounter" | "eventmeter" => {
            let meter = type_key(&type_name) == "eventmeter";
            let (provider_key, counter_key) = if meter {
                ("meter_name", "instrument_name")
            } else {
                ("provider_name", "counter_name")
            };
            let provider_name = settings.required_string(provider_key)?;
            let counter_name = settings.required_string(counter_key)?;
            if meter && settings.get("histogram_percentile").is_some() {
                return Err(error(
                    &settings.key("histogram_percentile"),
                    "histogram instruments are not supported yet; trigger on a counter, \
                     up-down counter or gauge instrument",
                ));
            }
            let greater_than = settings.number("greater_than")?;
            let less_than = settings.number("less_than")?;
            if greater_than.is_none() && less_than.is_none() {
                return Err(error(
                    &settings.key("greater_than"),
                    "give greater_than, less_than or both",
                ));
            }
            if let (Some(low), Some(high)) = (greater_than, less_than)
                && low >= high
            {
                return Err(error(
                    &settings.key("less_than"),
                    format!("is {high}, not above greater_than ({low}): no value could match"),
                ));
            }
            let window = settings
                .duration_in("sliding_window_duration", MIN_SLIDING_WINDOW, MAX_WINDOW)?
                .unwrap_or(window_default);
            Trigger::Counter(CounterTrigger {
                type_name: if meter { "EventMeter" } else { "EventCounter" },
                provider_name,
                counter_name,
                meter,
                greater_than,
                less_than,
                sliding_window_duration: window,
            })
        }
        "cpuusage" | "gcheapsize" | "threadpoolqueuelength" => {
            let (name, counter, default_above) = match type_key(&type_name).as_str() {
                "cpuusage" => shortcut("CPUUsage", "cpu-usage", 50.0),
                "gcheapsize" => shortcut("GCHeapSize", "gc-heap-size", 10.0),
                _ => shortcut("ThreadpoolQueueLength", "threadpool-queue-length", 200.0),
            };
            let mut greater_than = settings.number("greater_than")?;
            let less_than = settings.number("less_than")?;
            if greater_than.is_none() && less_than.is_none() {
                greater_than = Some(default_above);
            }
            if name == "CPUUsage" {
                for (key, value) in [("greater_than", greater_than), ("less_than", less_than)] {
                    if let Some(value) = value
                        && !(0.0..=100.0).contains(&value)
                    {
                        return Err(error(
                            &settings.key(key),
                            format!("is {value}; a CPU percentage is 0 to 100"),
                        ));
                    }
                }
            }
            let window = settings
                .duration_in("sliding_window_duration", MIN_SLIDING_WINDOW, MAX_WINDOW)?
                .unwrap_or(window_default);
            Trigger::Counter(CounterTrigger {
                type_name: name,
                provider_name: "System.Runtime".to_owned(),
                counter_name: counter,
                meter: false,
                greater_than,
                less_than,
                sliding_window_duration: window,
            })
        }
        "aspnetrequestcount" | "aspnetrequestduration" | "aspnetresponsestatus" => {
            Trigger::AspNet(parse_aspnet_trigger(
                &type_key(&type_name),
                &mut settings,
                window_default,
                context.defaults,
            )?)
        }
        _ => {
            return Err(error(
                &format!("{path}.type"),
                format!(
                    "`{type_name}` is not a trigger type; use Startup, EventCounter, EventMeter, \
                     CPUUsage, GCHeapSize, ThreadpoolQueueLength, AspNetRequestCount, \
                     AspNetRequestDuration or AspNetResponseStatus"
                ),
            ));
        }
    };
    settings.finish()?;
    Ok(trigger)
}

/// The settings of `AspNetRequestCount`, `AspNetRequestDuration` (`type_key` without case and
/// underscores) and `AspNetResponseStatus`, with dotnet-monitor's defaults and ranges.
fn parse_aspnet_trigger(
    type_key: &str,
    settings: &mut Obj<'_>,
    window_default: Duration,
    defaults: &Defaults,
) -> Result<AspNetTrigger, RuleConfigError> {
    let (count_key, count_default) = if type_key == "aspnetresponsestatus" {
        ("response_count", defaults.response_count)
    } else {
        ("request_count", defaults.request_count)
    };
    let count = match settings.number(count_key)? {
        Some(count) => whole_count(&settings.key(count_key), count)?,
        None => count_default.ok_or_else(|| {
            error(
                &settings.key(count_key),
                format!("is required (or set collection_rules.defaults.triggers.{count_key})"),
            )
        })?,
    };
    let condition = match type_key {
        "aspnetrequestduration" => AspNetCondition::RequestDuration(
            settings
                .duration_in("request_duration", Duration::ZERO, MAX_REQUEST_DURATION)?
                .unwrap_or(DEFAULT_REQUEST_DURATION),
        ),
        "aspnetresponsestatus" => {
            let key = settings.key("status_codes");
            let codes = settings
                .get("status_codes")
                .ok_or_else(|| error(&key, "is required: give ranges such as [\"400-499\"]"))?;
            let texts: Vec<String> = match codes {
                Value::String(text) => vec![text.clone()],
                Value::Array(items) if !items.is_empty() => items
                    .iter()
                    .map(|item| match item {
                        Value::String(text) => Some(text.clone()),
                        Value::Number(number) => Some(number.to_string()),
                        _ => None,
                    })
                    .collect::<Option<_>>()
                    .ok_or_else(|| error(&key, "must be a list of status codes or ranges"))?,
                _ => {
                    return Err(error(
                        &key,
                        "must be a list of status codes or ranges such as [\"400-499\"]",
                    ));
                }
            };
            let ranges = texts
                .iter()
                .map(|text| parse_status_range(text).map_err(|message| error(&key, message)))
                .collect::<Result<Vec<_>, _>>()?;
            AspNetCondition::ResponseStatus(ranges)
        }
        _ => AspNetCondition::RequestCount,
    };
    let mut paths = |key: &'static str| -> Result<Vec<String>, RuleConfigError> {
        let full = settings.key(key);
        let paths: Vec<String> = match settings.get(key) {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or_else(|| error(&full, "must be a list of paths"))?,
            Some(_) => {
                return Err(error(
                    &full,
                    "must be a list of paths such as [\"/api/**/*\"]",
                ));
            }
        };
        if let Some(path) = paths.iter().find(|path| path.contains("***")) {
            return Err(error(
                &full,
                format!("`{path}`: only `*` and `**/` are wildcards"),
            ));
        }
        Ok(paths)
    };
    let include_paths = paths("include_paths")?;
    let exclude_paths = paths("exclude_paths")?;
    let sliding_window_duration = settings
        .duration_in("sliding_window_duration", MIN_SLIDING_WINDOW, MAX_WINDOW)?
        .unwrap_or(window_default);
    Ok(AspNetTrigger {
        condition,
        count,
        sliding_window_duration,
        include_paths,
        exclude_paths,
    })
}

/// `"404"` or `"400-499"`: an inclusive range of HTTP status codes (100 to 599).
fn parse_status_range(text: &str) -> Result<(u16, u16), String> {
    let code = |part: &str| {
        part.trim()
            .parse::<u16>()
            .ok()
            .filter(|code| (100..600).contains(code))
            .ok_or_else(|| {
                format!("`{text}` is not a status code (100 to 599) or a range such as 400-499")
            })
    };
    let (low, high) = match text.split_once('-') {
        Some((low, high)) => (code(low)?, code(high)?),
        None => (code(text)?, code(text)?),
    };
    if low > high {
        return Err(format!("`{text}`: the range's start is above its end"));
    }
    Ok((low, high))
}

fn parse_action(
    context: &Context<'_>,
    path: &str,
    index: usize,
    value: &Value,
    earlier: &[Action],
) -> Result<Action, RuleConfigError> {
    let mut obj = Obj::new(path, value)?;
    let type_name = obj.required_string("type")?;
    let name = obj
        .string("name")?
        .unwrap_or_else(|| format!("action{index}"));
    if earlier.iter().any(|action| action.name == name) {
        return Err(error(
            &obj.key("name"),
            format!("`{name}` names an earlier action too; action names must be unique"),
        ));
    }
    let wait_for_completion = obj.bool("wait_for_completion")?.unwrap_or(false);
    let settings_key = obj.key("settings");
    let settings = obj.get("settings");
    obj.finish()?;
    let empty = Value::Object(Map::new());
    let mut settings = Obj::new(&settings_key, settings.unwrap_or(&empty))?;
    let egress = |settings: &mut Obj<'_>| -> Result<String, RuleConfigError> {
        let egress = settings
            .string("egress")?
            .or_else(|| context.defaults.egress.clone())
            .ok_or_else(|| {
                error(
                    &settings.key("egress"),
                    "is required: name an egress provider (or set collection_rules.defaults.actions.egress)",
                )
            })?;
        if !context
            .egress_providers
            .iter()
            .any(|provider| provider.eq_ignore_ascii_case(&egress))
        {
            return Err(error(
                &settings.key("egress"),
                format!(
                    "`{egress}` is not a configured egress provider (configured: {})",
                    if context.egress_providers.is_empty() {
                        "none".to_owned()
                    } else {
                        context.egress_providers.join(", ")
                    }
                ),
            ));
        }
        Ok(egress)
    };
    let kind = match type_key(&type_name).as_str() {
        "collecttrace" => parse_collect_trace(&mut settings, egress)?,
        "collectdump" => {
            // A name, or dotnet-monitor's enum number (as .NET's binder reads it).
            let dump_type = match settings.get("type") {
                None => DumpType::default(),
                Some(value) => {
                    let text = match value {
                        Value::Number(number) => number.to_string(),
                        Value::String(text) => text.clone(),
                        _ => return Err(error(&settings.key("type"), "must be a dump type")),
                    };
                    text.parse::<DumpType>()
                        .map_err(|e| error(&settings.key("type"), e.to_string()))?
                }
            };
            ActionKind::CollectDump {
                dump_type,
                egress: egress(&mut settings)?,
            }
        }
        "collectgcdump" => ActionKind::CollectGCDump {
            egress: egress(&mut settings)?,
        },
        "collectlivemetrics" => {
            let duration = settings
                .duration_in("duration", Duration::from_secs(1), MAX_WINDOW)?
                .unwrap_or(DEFAULT_ARTIFACT_DURATION);
            let mut body = Map::new();
            for (key, camel) in [
                ("include_default_providers", "includeDefaultProviders"),
                ("providers", "providers"),
                ("meters", "meters"),
            ] {
                if let Some(value) = settings.get(key) {
                    // `"false"` as .NET's binder reads it.
                    let value = match bool_value(value) {
                        Some(flag) if key == "include_default_providers" => Value::Bool(flag),
                        _ => camel_case_keys(value),
                    };
                    body.insert(camel.to_owned(), value);
                }
            }
            let body = Value::Object(body);
            if let Err(errors) = LiveMetricsSpec::from_json(&body, Duration::from_secs(1)) {
                let (field, message) = errors.into_iter().next().unwrap_or_default();
                return Err(error(&settings.key(&snake_case(&field)), message));
            }
            ActionKind::CollectLiveMetrics {
                body,
                duration,
                egress: egress(&mut settings)?,
            }
        }
        "execute" => {
            let path_key = settings.key("path");
            if !context.allow_execute {
                return Err(error(
                    &path_key,
                    "Execute actions are off: set `collection_rules.allow_execute = true` to let rules run programs",
                ));
            }
            let program = settings.required_string("path")?;
            let arguments = match settings.get("arguments") {
                None => Vec::new(),
                Some(Value::String(text)) => split_arguments(text)
                    .map_err(|message| error(&settings.key("arguments"), message))?,
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|item| item.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        error(
                            &settings.key("arguments"),
                            "must be a string or a list of strings",
                        )
                    })?,
                Some(_) => {
                    return Err(error(
                        &settings.key("arguments"),
                        "must be a string or a list of strings",
                    ));
                }
            };
            ActionKind::Execute {
                path: program,
                arguments,
                ignore_exit_code: settings.bool("ignore_exit_code")?.unwrap_or(false),
                timeout: settings
                    .duration_in("timeout", Duration::from_millis(1), MAX_WINDOW)?
                    .unwrap_or(DEFAULT_EXECUTE_TIMEOUT),
            }
        }
        "getenvironmentvariable" => ActionKind::GetEnvironmentVariable {
            name: settings.required_string("name")?,
        },
        _ => {
            return Err(error(
                &format!("{path}.type"),
                format!(
                    "`{type_name}` is not an action type; use CollectTrace, CollectDump, \
                     CollectGCDump, CollectLiveMetrics, Execute or GetEnvironmentVariable"
                ),
            ));
        }
    };
    settings.finish()?;
    let action = Action {
        name,
        wait_for_completion,
        kind,
    };
    check_references(&settings_key, &action, earlier)?;
    Ok(action)
}

fn parse_collect_trace(
    settings: &mut Obj<'_>,
    egress: impl Fn(&mut Obj<'_>) -> Result<String, RuleConfigError>,
) -> Result<ActionKind, RuleConfigError> {
    let profile = settings.get("profile");
    let providers = settings.get("providers");
    let mut session = match (profile, providers) {
        (Some(_), Some(_)) => {
            return Err(error(
                &settings.key("providers"),
                "give either `profile` or `providers`, not both",
            ));
        }
        (None, None) => {
            return Err(error(
                &settings.key("profile"),
                "give `profile` (Cpu, Http, Logs, Metrics, GcCollect) or `providers`",
            ));
        }
        (Some(profile), None) => {
            let text = match profile {
                Value::String(text) => text.clone(),
                Value::Array(items) => items
                    .iter()
                    .map(|item| item.as_str().unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(","),
                _ => return Err(error(&settings.key("profile"), "must be a string")),
            };
            profiles::session_config(&text).map_err(|e| error(&settings.key("profile"), e))?
        }
        (None, Some(list)) => {
            let key = settings.key("providers");
            let list = list
                .as_array()
                .filter(|list| !list.is_empty())
                .ok_or_else(|| error(&key, "must be a list of at least one provider"))?;
            let mut providers = Vec::new();
            for (index, provider) in list.iter().enumerate() {
                providers.push(parse_provider(&format!("{key}[{index}]"), provider)?);
            }
            SessionConfig::new(providers)
        }
    };
    if let Some(rundown) = settings.bool("request_rundown")? {
        session.rundown = if rundown { Rundown::On } else { Rundown::Off };
    }
    if let Some(size) = settings.number("buffer_size_megabytes")? {
        if !(1.0..=1024.0).contains(&size) || size.fract() != 0.0 {
            return Err(error(
                &settings.key("buffer_size_megabytes"),
                format!("is {size}; it must be a whole number from 1 to 1024"),
            ));
        }
        session.buffer_size_mb = size as u32;
    }
    let stopping_event = match settings.get("stopping_event") {
        None => None,
        Some(_) if profile.is_some() => {
            return Err(error(
                &settings.key("stopping_event"),
                "a stopping event needs `providers`, not `profile`: list the event's provider",
            ));
        }
        Some(value) => Some(parse_stopping_event(
            &settings.key("stopping_event"),
            value,
            &session,
        )?),
    };
    let duration = settings
        .duration_in("duration", Duration::from_secs(1), MAX_WINDOW)?
        .unwrap_or(DEFAULT_ARTIFACT_DURATION);
    Ok(ActionKind::CollectTrace {
        session,
        duration,
        stopping_event,
        egress: egress(settings)?,
    })
}

/// `stopping_event = {provider_name, event_name, payload_filter?}`; the provider must be one of
/// `session`'s (compared exactly, as dotnet-monitor does).
fn parse_stopping_event(
    path: &str,
    value: &Value,
    session: &SessionConfig,
) -> Result<StoppingEvent, RuleConfigError> {
    let mut obj = Obj::new(path, value)?;
    let provider_name = obj.required_string("provider_name")?;
    let event_name = obj.required_string("event_name")?;
    let mut payload_filter = BTreeMap::new();
    if let Some(filter) = obj.get("payload_filter") {
        let key = obj.key("payload_filter");
        let filter = filter
            .as_object()
            .ok_or_else(|| error(&key, "must be a table of field names and values"))?;
        for (field, expected) in filter {
            let expected = match expected {
                Value::String(text) => text.clone(),
                // A float as an event's float is written (`1000.0` is `1000`).
                Value::Number(number) => match number.as_f64() {
                    Some(float) if number.is_f64() => float_text(float),
                    _ => number.to_string(),
                },
                Value::Bool(true) => "True".to_owned(),
                Value::Bool(false) => "False".to_owned(),
                _ => {
                    return Err(error(
                        &format!("{key}.{field}"),
                        "must be a string, a number or a boolean",
                    ));
                }
            };
            payload_filter.insert(field.clone(), expected);
        }
    }
    if !session
        .providers
        .iter()
        .any(|provider| provider.name == provider_name)
    {
        return Err(error(
            &obj.key("provider_name"),
            format!(
                "`{provider_name}` is not one of the trace's providers ({}); add it to `providers`",
                session
                    .providers
                    .iter()
                    .map(|provider| provider.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    obj.finish()?;
    Ok(StoppingEvent {
        provider_name,
        event_name,
        payload_filter,
    })
}

fn parse_provider(path: &str, value: &Value) -> Result<EventProvider, RuleConfigError> {
    let mut obj = Obj::new(path, value)?;
    let name = obj.required_string("name")?;
    let keywords = match obj.get("keywords") {
        None => profiles::DEFAULT_KEYWORDS,
        Some(Value::String(text)) => profiles::parse_keywords(text)
            .map_err(|e| error(&obj.key("keywords"), e.to_string()))?,
        Some(Value::Number(number)) => profiles::parse_keywords(&number.to_string())
            .map_err(|e| error(&obj.key("keywords"), e.to_string()))?,
        Some(_) => return Err(error(&obj.key("keywords"), "must be a number or a string")),
    };
    let level = match obj.get("event_level") {
        None => profiles::DEFAULT_LEVEL,
        Some(Value::String(text)) => profiles::parse_level(text)
            .map_err(|e| error(&obj.key("event_level"), e.to_string()))?,
        Some(Value::Number(number)) => profiles::parse_level(&number.to_string())
            .map_err(|e| error(&obj.key("event_level"), e.to_string()))?,
        Some(_) => {
            return Err(error(
                &obj.key("event_level"),
                "must be a level name or 0 to 5",
            ));
        }
    };
    let mut provider = EventProvider::new(name, keywords, level);
    if let Some(arguments) = obj.get("arguments") {
        let arguments = arguments
            .as_object()
            .ok_or_else(|| error(&obj.key("arguments"), "must be a table of strings"))?;
        for (key, value) in arguments {
            let value = value.as_str().ok_or_else(|| {
                error(
                    &format!("{}.{key}", obj.key("arguments")),
                    "must be a string",
                )
            })?;
            provider.arguments.insert(key.clone(), value.to_owned());
        }
    }
    obj.finish()?;
    Ok(provider)
}

/// `value` with every object key in camelCase (for the `POST /livemetrics` body shape).
fn camel_case_keys(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| {
                    let snake = snake_case(key);
                    let mut camel = String::new();
                    let mut upper = false;
                    for c in snake.chars() {
                        if c == '_' {
                            upper = true;
                        } else if upper {
                            camel.extend(c.to_uppercase());
                            upper = false;
                        } else {
                            camel.push(c);
                        }
                    }
                    (camel, camel_case_keys(value))
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(camel_case_keys).collect()),
        other => other.clone(),
    }
}

/// Splits an `Execute` action's `arguments` string as .NET's `Process.Start` splits
/// `ProcessStartInfo.Arguments` on Linux, so that a dotnet-monitor rule runs the same command:
/// spaces and tabs separate arguments outside double quotes; `""` inside quotes is a literal
/// quote; backslashes are literal (`C:\dir\app.dll` stays whole) except before a double quote,
/// where each pair gives one backslash and an odd one makes the quote literal. Single quotes are
/// ordinary characters. An unclosed quote is an error (.NET would take the rest of the line).
pub fn split_arguments(text: &str) -> Result<Vec<String>, String> {
    let chars: Vec<char> = text.chars().collect();
    let separator = |c: char| c == ' ' || c == '\t';
    let mut arguments = Vec::new();
    let mut i = 0;
    loop {
        while chars.get(i).copied().is_some_and(separator) {
            i += 1;
        }
        if i >= chars.len() {
            return Ok(arguments);
        }
        let mut argument = String::new();
        let mut quoted = false;
        while let Some(&c) = chars.get(i) {
            if c == '\\' {
                let run = chars[i..].iter().take_while(|&&c| c == '\\').count();
                i += run;
                if chars.get(i) == Some(&'"') {
                    argument.extend(std::iter::repeat_n('\\', run / 2));
                    if run % 2 == 1 {
                        argument.push('"');
                        i += 1;
                    }
                } else {
                    argument.extend(std::iter::repeat_n('\\', run));
                }
            } else if c == '"' {
                if quoted && chars.get(i + 1) == Some(&'"') {
                    argument.push('"');
                    i += 2;
                } else {
                    quoted = !quoted;
                    i += 1;
                }
            } else if separator(c) && !quoted {
                break;
            } else {
                argument.push(c);
                i += 1;
            }
        }
        if quoted {
            return Err("has an unclosed double quote".to_owned());
        }
        arguments.push(argument);
    }
}

/// The `$(…)` tokens of `text`, without the `$(` and `)`.
pub fn tokens(text: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("$(") {
        let after = &rest[start + 2..];
        let Some(end) = after.find(')') else {
            break;
        };
        found.push(&after[..end]);
        rest = &after[end + 1..];
    }
    found
}

/// The tokens a process gives.
pub const PROCESS_TOKENS: [&str; 4] = [
    "Process.ProcessId",
    "Process.RuntimeId",
    "Process.Name",
    "Process.CommandLine",
];

/// Checks that the tokens of an action's substituted settings are process tokens or outputs of
/// earlier actions.
fn check_references(
    path: &str,
    action: &Action,
    earlier: &[Action],
) -> Result<(), RuleConfigError> {
    let texts: Vec<(&str, &str)> = match &action.kind {
        ActionKind::Execute {
            path: program,
            arguments,
            ..
        } => std::iter::once(("path", program.as_str()))
            .chain(arguments.iter().map(|a| ("arguments", a.as_str())))
            .collect(),
        ActionKind::GetEnvironmentVariable { name } => vec![("name", name.as_str())],
        _ => Vec::new(),
    };
    for (key, text) in texts {
        for token in tokens(text) {
            if PROCESS_TOKENS.contains(&token) {
                continue;
            }
            let known = token
                .strip_prefix("Actions.")
                .and_then(|rest| rest.rsplit_once('.'))
                .is_some_and(|(name, output)| {
                    earlier
                        .iter()
                        .any(|a| a.name == name && a.kind.outputs().contains(&output))
                });
            if !known {
                return Err(error(
                    &format!("{path}.{key}"),
                    format!(
                        "`$({token})` is not a token: use {} or `$(Actions.NAME.OUTPUT)` of an earlier action (outputs: EgressPath of Collect* actions, ExitCode of Execute, Value of GetEnvironmentVariable)",
                        PROCESS_TOKENS.map(|t| format!("$({t})")).join(", ")
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// How a floating-point value is written for comparison with a stopping event's
/// `payload_filter`, on both sides: Rust's shortest form, so a whole number has no fraction
/// (`1000`, `0.5`).
pub fn float_text(number: f64) -> String {
    number.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn egress() -> Vec<String> {
        vec!["files".to_owned()]
    }

    fn parse_toml(text: &str) -> Result<RulesConfig, RuleConfigError> {
        let value: toml::Value = toml::from_str(text).unwrap();
        let json = serde_json::to_value(value).unwrap();
        parse(&json["collection_rules"], &egress())
    }

    #[test]
    fn durations_accept_timespans_and_units() {
        for (text, seconds) in [
            ("00:00:30", 30.0),
            ("01:02:03", 3723.0),
            ("1.00:00:00", 86_400.0),
            ("00:00:00.5", 0.5),
            ("30s", 30.0),
            ("30", 30.0),
            ("500ms", 0.5),
            ("2m", 120.0),
            ("1h", 3600.0),
            ("1d", 86_400.0),
        ] {
            assert_eq!(
                parse_duration(text).unwrap(),
                Duration::from_secs_f64(seconds),
                "{text}"
            );
        }
        for bad in [
            "-00:00:01",
            "-5s",
            "00:61:00",
            "soon",
            "1:2",
            "5 parsecs",
            "",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(format_timespan(Duration::from_secs(90_061)), "1.01:01:01");
        assert_eq!(format_timespan(Duration::from_secs(30)), "00:00:30");
    }

    #[test]
    fn keys_are_snake_case_or_pascal_case() {
        assert_eq!(snake_case("ProviderName"), "provider_name");
        assert_eq!(snake_case("provider_name"), "provider_name");
        assert_eq!(snake_case("CPUUsage"), "cpu_usage");
        assert_eq!(
            snake_case("ActionCountSlidingWindowDuration"),
            "action_count_sliding_window_duration"
        );
        let snake = parse_toml(
            r#"
            [collection_rules.high]
            trigger = { type = "EventCounter", settings = { provider_name = "P", counter_name = "c", greater_than = 40, sliding_window_duration = "00:00:02" } }
            actions = [{ type = "CollectTrace", settings = { profile = "Cpu", duration = "5s", egress = "files" } }]
            limits = { action_count = 1 }
            "#,
        )
        .unwrap();
        let pascal = parse(
            &json!({
                "high": {
                    "Trigger": {"Type": "EventCounter", "Settings": {"ProviderName": "P", "CounterName": "c", "GreaterThan": 40, "SlidingWindowDuration": "2s"}},
                    "Actions": [{"Type": "CollectTrace", "Settings": {"Profile": "Cpu", "Duration": "00:00:05", "Egress": "files"}}],
                    "Limits": {"ActionCount": 1}
                }
            }),
            &egress(),
        )
        .unwrap();
        assert_eq!(snake, pascal);
        let rule = &snake.rules["high"];
        let Trigger::Counter(trigger) = &rule.trigger else {
            panic!("{rule:?}")
        };
        assert_eq!(trigger.sliding_window_duration, Duration::from_secs(2));
        assert_eq!(trigger.greater_than, Some(40.0));
        assert!(trigger.in_range(42.5) && !trigger.in_range(40.0));
        assert_eq!(rule.limits.action_count, 1);
        assert_eq!(rule.actions[0].name, "action0");
        assert!(matches!(
            rule.actions[0].kind,
            ActionKind::CollectTrace { duration, .. } if duration == Duration::from_secs(5)
        ));
    }

    #[test]
    fn shortcuts_have_dotnet_monitors_defaults() {
        let config = parse(
            &json!({
                "cpu": {"trigger": {"type": "CPUUsage"}},
                "heap": {"trigger": {"type": "GCHeapSize", "settings": {"sliding_window_duration": "5s"}}},
                "queue": {"trigger": {"type": "ThreadpoolQueueLength"}},
            }),
            &egress(),
        )
        .unwrap();
        for (rule, counter, above, window) in [
            ("cpu", "cpu-usage", 50.0, 60),
            ("heap", "gc-heap-size", 10.0, 5),
            ("queue", "threadpool-queue-length", 200.0, 60),
        ] {
            let Trigger::Counter(trigger) = &config.rules[rule].trigger else {
                panic!()
            };
            assert_eq!(trigger.provider_name, "System.Runtime");
            assert_eq!(trigger.counter_name, counter);
            assert_eq!(trigger.greater_than, Some(above));
            assert_eq!(trigger.sliding_window_duration, Duration::from_secs(window));
            assert_eq!(config.rules[rule].limits, Limits::default());
        }
    }

    #[test]
    fn bad_rules_are_errors_naming_the_rule_and_key() {
        for (rule, key) in [
            (
                json!({"trigger": {"type": "Sometimes"}}),
                "collection_rules.r.trigger.type",
            ),
            (
                json!({"trigger": {"type": "Startup"}, "actions": [{"type": "CollectTrace", "settings": {"profile": "Cpu", "providers": [{"name": "X"}], "egress": "files"}}]}),
                "collection_rules.r.actions[0].settings.providers",
            ),
            (
                json!({"trigger": {"type": "Startup"}, "actions": [{"type": "CollectTrace", "settings": {"profile": "Cpu", "duration": "-00:00:05", "egress": "files"}}]}),
                "collection_rules.r.actions[0].settings.duration",
            ),
            (
                json!({"trigger": {"type": "Startup"}, "limits": {"rule_duration": "-5s"}}),
                "collection_rules.r.limits.rule_duration",
            ),
            (
                json!({"trigger": {"type": "Startup"}, "limits": {"action_count": 0}}),
                "collection_rules.r.limits.action_count",
            ),
            (
                json!({"trigger": {"type": "EventCounter", "settings": {"provider_name": "P", "counter_name": "c"}}}),
                "collection_rules.r.trigger.settings.greater_than",
            ),
            (
                json!({"trigger": {"type": "EventCounter", "settings": {"provider_name": "P", "counter_name": "c", "greater_than": 1, "colour": 2}}}),
                "collection_rules.r.trigger.settings.colour",
            ),
            (
                json!({"trigger": {"type": "Startup"}, "actions": [{"type": "CollectDump", "settings": {"egress": "nowhere"}}]}),
                "collection_rules.r.actions[0].settings.egress",
            ),
            (
                json!({"trigger": {"type": "Startup"}, "actions": [{"type": "CollectDump", "settings": {"type": "Huge", "egress": "files"}}]}),
                "collection_rules.r.actions[0].settings.type",
            ),
            (
                json!({"trigger": {"type": "Startup"}, "actions": [{"type": "Execute", "settings": {"path": "/bin/true"}}]}),
                "collection_rules.r.actions[0].settings.path",
            ),
            (
                json!({"trigger": {"type": "Startup"}, "actions": [{"type": "GetEnvironmentVariable", "settings": {"name": "$(Actions.later.Value)"}}]}),
                "collection_rules.r.actions[0].settings.name",
            ),
            (json!({"trigger": "missing"}), "collection_rules.r.trigger"),
            (json!({"actions": []}), "collection_rules.r.trigger"),
            (
                json!({"trigger": {"type": "AspNetRequestCount"}}),
                "collection_rules.r.trigger.settings.request_count",
            ),
            (
                json!({"trigger": {"type": "AspNetRequestCount", "settings": {"request_count": 0}}}),
                "collection_rules.r.trigger.settings.request_count",
            ),
            (
                json!({"trigger": {"type": "AspNetResponseStatus", "settings": {"response_count": 2, "status_codes": ["500-404"]}}}),
                "collection_rules.r.trigger.settings.status_codes",
            ),
            (
                json!({"trigger": {"type": "AspNetResponseStatus", "settings": {"response_count": 2, "status_codes": ["99"]}}}),
                "collection_rules.r.trigger.settings.status_codes",
            ),
            (
                json!({"trigger": {"type": "AspNetResponseStatus", "settings": {"request_count": 2, "status_codes": ["500"]}}}),
                "collection_rules.r.trigger.settings.response_count",
            ),
            (
                json!({"trigger": {"type": "AspNetRequestDuration", "settings": {"request_count": 2, "request_duration": "02:00:00"}}}),
                "collection_rules.r.trigger.settings.request_duration",
            ),
            (
                json!({"trigger": {"type": "AspNetRequestCount", "settings": {"request_count": 2, "include_paths": ["/a/***"]}}}),
                "collection_rules.r.trigger.settings.include_paths",
            ),
            (
                json!({"trigger": {"type": "Startup"}, "actions": [{"type": "CollectTrace", "settings": {"profile": "Http", "egress": "files", "stopping_event": {"provider_name": "Microsoft-Diagnostics-DiagnosticSource", "event_name": "Activity1Stop"}}}]}),
                "collection_rules.r.actions[0].settings.stopping_event",
            ),
            (
                json!({"trigger": {"type": "Startup"}, "actions": [{"type": "CollectTrace", "settings": {"providers": [{"name": "A"}], "egress": "files", "stopping_event": {"provider_name": "B", "event_name": "E"}}}]}),
                "collection_rules.r.actions[0].settings.stopping_event.provider_name",
            ),
            (
                json!({"trigger": {"type": "Startup"}, "actions": [{"type": "CollectTrace", "settings": {"providers": [{"name": "A"}], "egress": "files", "stopping_event": {"provider_name": "A"}}}]}),
                "collection_rules.r.actions[0].settings.stopping_event.event_name",
            ),
        ] {
            let error = parse(&json!({ "r": rule }), &egress()).unwrap_err();
            assert_eq!(error.key, key, "{rule}: {error}");
            assert!(error.to_string().contains(key), "{error}");
        }
    }

    #[test]
    fn payload_filter_numbers_are_written_as_event_values_are() {
        use crate::diagnostics::payload::Value as PayloadValue;
        let config = parse_toml(
            r#"
            [collection_rules.r.trigger]
            type = "Startup"
            [[collection_rules.r.actions]]
            type = "CollectTrace"
            settings = { providers = [{ name = "MyEventSource" }], egress = "files", stopping_event = { provider_name = "MyEventSource", event_name = "Tick", payload_filter = { Elapsed = 1000.0, Ratio = 0.5, Count = 3, Done = true } } }
            "#,
        )
        .unwrap();
        let ActionKind::CollectTrace { stopping_event, .. } = &config.rules["r"].actions[0].kind
        else {
            panic!("not a trace");
        };
        let filter = &stopping_event.as_ref().unwrap().payload_filter;
        let text = |value| super::super::events::value_text(&value).unwrap();
        assert_eq!(filter["Elapsed"], "1000");
        assert_eq!(filter["Elapsed"], text(PayloadValue::Float(1000.0)));
        assert_eq!(filter["Ratio"], text(PayloadValue::Float(0.5)));
        assert_eq!(filter["Count"], text(PayloadValue::Int(3)));
        assert_eq!(filter["Done"], text(PayloadValue::Bool(true)));
    }

    #[test]
    fn aspnet_triggers_and_stopping_events_have_dotnet_monitors_shape_and_defaults() {
        let config = parse_toml(
            r#"
            [collection_rules.r.trigger]
            type = "AspNetResponseStatus"
            settings = { ResponseCount = 3, StatusCodes = ["400-499", "503"], ExcludePaths = ["/health"] }
            [[collection_rules.r.actions]]
            type = "CollectTrace"
            settings = { providers = [{ name = "Microsoft-Diagnostics-DiagnosticSource" }], egress = "files", duration = "00:01:00", stopping_event = { provider_name = "Microsoft-Diagnostics-DiagnosticSource", event_name = "Activity1/Stop", payload_filter = { EventName = "Microsoft.AspNetCore.Hosting.HttpRequestIn.Stop" } } }
            [collection_rules.d.trigger]
            type = "AspNetRequestDuration"
            settings = { request_count = 2 }
            "#,
        )
        .unwrap();
        let Trigger::AspNet(status) = &config.rules["r"].trigger else {
            panic!("not an ASP.NET trigger");
        };
        assert_eq!(
            status.condition,
            AspNetCondition::ResponseStatus(vec![(400, 499), (503, 503)])
        );
        assert_eq!(status.count, 3);
        assert_eq!(status.sliding_window_duration, DEFAULT_SLIDING_WINDOW);
        assert_eq!(status.exclude_paths, ["/health"]);
        let ActionKind::CollectTrace { stopping_event, .. } = &config.rules["r"].actions[0].kind
        else {
            panic!("not a trace");
        };
        let stopping_event = stopping_event.as_ref().unwrap();
        assert_eq!(stopping_event.event_name, "Activity1/Stop");
        assert_eq!(
            stopping_event.payload_filter["EventName"],
            "Microsoft.AspNetCore.Hosting.HttpRequestIn.Stop"
        );
        let Trigger::AspNet(duration) = &config.rules["d"].trigger else {
            panic!("not an ASP.NET trigger");
        };
        assert_eq!(
            duration.condition,
            AspNetCondition::RequestDuration(DEFAULT_REQUEST_DURATION)
        );
    }

    #[test]
    fn execute_needs_allow_execute_and_outputs_are_tokens() {
        let config = parse(
            &json!({
                "allow_execute": true,
                "r": {
                    "trigger": {"type": "Startup"},
                    "actions": [
                        {"name": "env", "type": "GetEnvironmentVariable", "settings": {"name": "HOME"}},
                        {"type": "Execute", "settings": {"path": "/bin/echo", "arguments": "$(Process.ProcessId) \"a b\" $(Actions.env.Value)"}},
                    ]
                }
            }),
            &egress(),
        )
        .unwrap();
        assert!(config.allow_execute);
        let ActionKind::Execute { arguments, .. } = &config.rules["r"].actions[1].kind else {
            panic!()
        };
        assert_eq!(
            arguments,
            &["$(Process.ProcessId)", "a b", "$(Actions.env.Value)"]
        );
    }

    #[test]
    fn defaults_and_templates_apply() {
        let config = parse_toml(
            r#"
            [collection_rules.defaults]
            actions = { egress = "files" }
            limits = { action_count = 2, action_count_sliding_window_duration = "1m" }
            triggers = { sliding_window_duration = "10s" }
            [collection_rules.templates.triggers.hot]
            type = "CPUUsage"
            [collection_rules.templates.filters.app]
            key = "ProcessName"
            value = "app"
            [collection_rules.r]
            trigger = "hot"
            filters = ["app"]
            actions = [{ type = "CollectDump" }]
            "#,
        )
        .unwrap();
        let rule = &config.rules["r"];
        assert_eq!(rule.limits.action_count, 2);
        assert_eq!(
            rule.limits.action_count_sliding_window_duration,
            Some(Duration::from_secs(60))
        );
        let Trigger::Counter(trigger) = &rule.trigger else {
            panic!()
        };
        assert_eq!(trigger.sliding_window_duration, Duration::from_secs(10));
        assert_eq!(rule.filters[0].value, "app");
        assert!(
            matches!(&rule.actions[0].kind, ActionKind::CollectDump { egress, .. } if egress == "files")
        );
        assert_eq!(config.rules.len(), 1);
    }

    #[test]
    fn the_example_configuration_loads() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../config/collection-rules.toml");
        let config = crate::config::load(Some(&path), json!({})).unwrap();
        let providers: Vec<String> = config.egress.providers.keys().cloned().collect();
        let rules = parse(&config.collection_rules, &providers).unwrap();
        assert!(!rules.allow_execute);
        assert_eq!(
            rules.rules.keys().collect::<Vec<_>>(),
            [
                "high_cpu",
                "large_heap",
                "server_errors",
                "slow_api",
                "slow_requests_meter",
                "trace_at_start"
            ]
        );
    }

    #[test]
    fn a_json_file_may_use_dotnet_monitors_section_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        std::fs::write(
            &path,
            r#"{"CollectionRules": {"AtStart": {"Trigger": {"Type": "Startup"}, "Limits": {"RuleDuration": "00:05:00"}}}}"#,
        )
        .unwrap();
        let config = crate::config::load(Some(&path), json!({})).unwrap();
        let rules = parse(&config.collection_rules, &[]).unwrap();
        assert_eq!(
            rules.rules["AtStart"].limits.rule_duration,
            Some(Duration::from_secs(300))
        );
    }

    #[test]
    fn a_settings_file_written_as_dotnet_monitors_documentation_writes_it_loads() {
        // Comments, trailing commas, `$schema`, the top-level `Templates` and
        // `CollectionRuleDefaults`, numbers and booleans as strings, filters by shorthand.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.json");
        std::fs::write(
            &path,
            r#"{
              "$schema": "https://aka.ms/dotnet-monitor-schema",
              // Defaults for every rule.
              "CollectionRuleDefaults": {
                "Actions": { "Egress": "files" },
                "Triggers": { "RequestCount": "20", "SlidingWindowDuration": "00:00:30" },
                "Limits": { "ActionCount": "2" },
              },
              "Templates": {
                "CollectionRuleTriggers": {
                  "HighCPU": {
                    "Type": "EventCounter",
                    "Settings": {
                      "ProviderName": "System.Runtime",
                      "CounterName": "cpu-usage",
                      "GreaterThan": "60",
                    },
                  },
                },
                "CollectionRuleFilters": { "App": { "ProcessName": "dotnet" } },
                "CollectionRuleActions": {
                  "Trace": {
                    "Type": "CollectTrace",
                    "Settings": { "Profile": "Cpu", "RequestRundown": "false" },
                  },
                },
              },
              "CollectionRules": {
                "HighCpu": { "Filters": ["app"], "Trigger": "highcpu", "Actions": ["Trace"] },
                "ManyRequests": {
                  "Filters": [{ "CommandLine": "myapp.dll", "MatchType": "Contains" }],
                  "Trigger": { "Type": "AspNetRequestCount" },
                  "Actions": [{ "Type": "CollectDump" }],
                },
              },
            }"#,
        )
        .unwrap();
        let config = crate::config::load(Some(&path), json!({})).unwrap();
        let rules = parse(&config.collection_rules, &egress()).unwrap();
        let high_cpu = &rules.rules["HighCpu"];
        let Trigger::Counter(trigger) = &high_cpu.trigger else {
            panic!("{:?}", high_cpu.trigger)
        };
        assert_eq!(trigger.greater_than, Some(60.0));
        assert_eq!(trigger.sliding_window_duration, Duration::from_secs(30));
        assert_eq!(high_cpu.filters[0].key, ProcessFilterKey::ProcessName);
        assert_eq!(high_cpu.filters[0].value, "dotnet");
        assert_eq!(high_cpu.limits.action_count, 2);
        let ActionKind::CollectTrace {
            session, egress, ..
        } = &high_cpu.actions[0].kind
        else {
            panic!("{:?}", high_cpu.actions[0].kind)
        };
        assert_eq!(session.rundown, Rundown::Off);
        assert_eq!(egress, "files");
        let requests = &rules.rules["ManyRequests"];
        assert_eq!(
            requests.filters[0],
            ProcessFilter {
                key: ProcessFilterKey::CommandLine,
                value: "myapp.dll".to_owned(),
                match_type: MatchType::Contains,
            }
        );
        let Trigger::AspNet(trigger) = &requests.trigger else {
            panic!("{:?}", requests.trigger)
        };
        assert_eq!(trigger.count, 20);
    }

    #[test]
    fn shorthand_filters_and_strings_are_checked_like_the_rest() {
        let bad = |filter: &str| {
            let text = format!(
                "[collection_rules.r]\ntrigger = {{ type = \"Startup\" }}\nactions = [{{ type = \"CollectDump\" }}]\nfilters = [{filter}]"
            );
            parse_toml(&text).unwrap_err().to_string()
        };
        let error = bad(r#"{ ProcessName = "a", CommandLine = "b" }"#);
        assert!(error.contains("filters[0].command_line"), "{error}");
        let error = bad(r#"{ ProcessName = "a", key = "CommandLine" }"#);
        assert!(error.contains("filters[0].process_name"), "{error}");
        let error = bad(r#"{ ProcessId = "abc" }"#);
        assert!(error.contains("filters[0].process_id"), "{error}");
        let error = parse_toml(
            "[collection_rules.r]\ntrigger = { type = \"CPUUsage\", settings = { greater_than = \"lots\" } }\nactions = [{ type = \"CollectDump\" }]",
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("must be a number"), "{error}");
        let error = parse_toml(
            "[collection_rules.r]\ntrigger = { type = \"AspNetRequestCount\" }\nactions = [{ type = \"CollectDump\" }]",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("collection_rules.defaults.triggers.request_count"),
            "{error}"
        );
    }

    #[test]
    fn arguments_split_as_dotnet_splits_them() {
        assert_eq!(
            split_arguments(r#" a  "b c"	'd e' "" x"y"z "#).unwrap(),
            ["a", "b c", "'d", "e'", "", "xyz"]
        );
        // Backslashes are literal unless a double quote follows them.
        assert_eq!(
            split_arguments(r#"C:\Program\ Files\app.dll "C:\My Dir\\" a\\\"b c\\\\"d e" "q""q""#)
                .unwrap(),
            [
                r"C:\Program\",
                r"Files\app.dll",
                r"C:\My Dir\",
                r#"a\"b"#,
                r"c\\d e",
                r#"q"q"#
            ]
        );
        assert_eq!(split_arguments("").unwrap(), Vec::<String>::new());
        assert!(split_arguments("\"open").is_err());
        assert_eq!(tokens("x $(A.b) y $(C)"), ["A.b", "C"]);
    }
}
