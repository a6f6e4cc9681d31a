//! ASP.NET Core request triggers (`AspNetRequestCount`, `AspNetRequestDuration`,
//! `AspNetResponseStatus`): the requests a process serves, read from the DiagnosticSource
//! events of its hosting layer, counted in a sliding window.
//!
//! The session enables the `Microsoft-Diagnostics-DiagnosticSource` EventSource (keywords
//! Messages | Events, Verbose) with `FilterAndPayloadSpecs` that turn the
//! `Microsoft.AspNetCore.Hosting.HttpRequestIn` activity's start and stop into its
//! `Activity1Start` and `Activity1Stop` events. Each carries `SourceName`, `EventName` and
//! `Arguments`, a list of `{Key, Value}` string pairs: `ActivityId` and `Path` on both,
//! `StatusCode` and `ActivityDuration` (100 ns ticks) on the stop. A request counts when its
//! path is included and not excluded, and:
//! - `AspNetRequestCount`: when it starts;
//! - `AspNetRequestDuration`: when it stops after at least `request_duration`, or when it has
//!   been running that long without stopping (checked every second), once either way; a start
//!   or stop without an `ActivityId` cannot be paired and is ignored;
//! - `AspNetResponseStatus`: when it stops with a status in one of the ranges.
//!
//! The trigger fires when `count` requests have counted within `sliding_window_duration`; the
//! window then starts over.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::config::{AspNetCondition, AspNetTrigger};
use super::events::EventReader;
use crate::diagnostics::eventpipe::Rundown;
use crate::diagnostics::payload::{DecodedEvent, Value};
use crate::diagnostics::{EventProvider, SessionConfig};
use crate::processes::{ProcessDirectory, ProcessRecord};
use crate::profiles::DIAGNOSTIC_SOURCE_SPECS;

/// The EventSource that forwards DiagnosticSource events.
pub const DIAGNOSTIC_SOURCE_PROVIDER: &str = "Microsoft-Diagnostics-DiagnosticSource";
/// Its keywords Messages (0x1) and Events (0x2).
const DIAGNOSTIC_SOURCE_KEYWORDS: u64 = 0x3;
/// EventPipe level Verbose.
const LEVEL_VERBOSE: u8 = 5;
/// The session's runtime-side buffer: a few events per request.
const REQUEST_BUFFER_MB: u32 = 16;
/// Requests of `AspNetRequestDuration` waiting for their stop, at most; beyond that the oldest
/// are forgotten (a process that never stops its requests must not grow diagmon).
const MAX_PENDING_REQUESTS: usize = 100_000;
/// .NET ticks per second.
const TICKS_PER_SECOND: u64 = 10_000_000;

/// One ASP.NET Core request event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestEvent {
    /// A request started.
    Start {
        /// Its activity id; `None` when the event carries none (another session gave the
        /// runtime other specs for DiagnosticSource).
        activity_id: Option<String>,
        /// Its path.
        path: String,
    },
    /// A request stopped.
    Stop {
        /// Its activity id; `None` when the event carries none.
        activity_id: Option<String>,
        /// Its path.
        path: String,
        /// The response status code.
        status: u16,
        /// How long it took.
        duration: Duration,
    },
}

/// The request event `event` is, if it is one of the hosting activity's start or stop events
/// and carries what the trigger needs.
pub fn request_event(event: &DecodedEvent<'_>) -> Option<RequestEvent> {
    if !event
        .metadata
        .provider
        .eq_ignore_ascii_case(DIAGNOSTIC_SOURCE_PROVIDER)
    {
        return None;
    }
    let start = match event.metadata.name.as_str() {
        "Activity1Start" => true,
        "Activity1Stop" => false,
        _ => return None,
    };
    let Some(Value::Array(arguments)) = event.payload.field("Arguments") else {
        return None;
    };
    let argument = |key: &str| {
        arguments.iter().find_map(|pair| {
            let name = pair.field("Key")?.as_str()?;
            name.eq_ignore_ascii_case(key)
                .then(|| pair.field("Value")?.as_str())
                .flatten()
        })
    };
    let activity_id = argument("ActivityId")
        .filter(|id| !id.is_empty())
        .map(str::to_owned);
    let path = argument("Path").unwrap_or_default().to_owned();
    if start {
        return Some(RequestEvent::Start { activity_id, path });
    }
    let status = argument("StatusCode")?.parse().ok()?;
    let ticks: u64 = argument("ActivityDuration")?.parse().ok()?;
    Some(RequestEvent::Stop {
        activity_id,
        path,
        status,
        duration: Duration::from_secs(ticks / TICKS_PER_SECOND)
            + Duration::from_nanos((ticks % TICKS_PER_SECOND) * 100),
    })
}

/// The session a request trigger opens.
pub fn session_config() -> SessionConfig {
    let mut provider = EventProvider::new(
        DIAGNOSTIC_SOURCE_PROVIDER,
        DIAGNOSTIC_SOURCE_KEYWORDS,
        LEVEL_VERBOSE,
    );
    provider.arguments.insert(
        "FilterAndPayloadSpecs".to_owned(),
        DIAGNOSTIC_SOURCE_SPECS.to_owned(),
    );
    let mut config = SessionConfig::new(vec![provider]);
    config.rundown = Rundown::Off;
    config.buffer_size_mb = REQUEST_BUFFER_MB;
    config
}

/// The request events of `process`, as they come. The channel closes when the session ends
/// or fails (the error is logged); it stops with `stop`.
pub fn request_feed(
    processes: &ProcessDirectory,
    process: &ProcessRecord,
    stop: CancellationToken,
) -> mpsc::Receiver<RequestEvent> {
    let (sender, receiver) = mpsc::channel(1024);
    let client = processes.client(process);
    let pid = process.pid;
    tokio::spawn(async move {
        let mut session = match client.start_session(&session_config()).await {
            Ok(session) => session,
            Err(error) => {
                tracing::warn!(pid, %error, "the request session of a collection rule trigger did not start");
                return;
            }
        };
        let found: Arc<Mutex<Vec<RequestEvent>>> = Arc::default();
        let mut reader = EventReader::new({
            let found = Arc::clone(&found);
            move |event| {
                if let Some(request) = request_event(event)
                    && let Ok(mut found) = found.lock()
                {
                    found.push(request);
                }
            }
        });
        loop {
            let chunk = tokio::select! {
                _ = stop.cancelled() => return,
                chunk = session.next_chunk() => chunk,
            };
            let chunk = match chunk {
                Ok(Some(chunk)) => chunk,
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(pid, %error, "the request session of a collection rule trigger failed");
                    return;
                }
            };
            if let Err(error) = reader.feed(&chunk) {
                tracing::warn!(pid, %error, "the request session of a collection rule trigger sent a broken trace");
                return;
            }
            let events = found
                .lock()
                .map(|mut found| std::mem::take(&mut *found))
                .unwrap_or_default();
            for event in events {
                // A full channel means the rule is busy running its actions: drop the event.
                if sender.try_send(event).is_err() && sender.is_closed() {
                    return;
                }
            }
        }
    });
    receiver
}

/// The requests that counted within an [`AspNetTrigger`]'s window.
#[derive(Debug)]
pub struct RequestWindow {
    trigger: AspNetTrigger,
    /// When each counted request counted, oldest first.
    counted: VecDeque<Instant>,
    /// `AspNetRequestDuration`: requests started and not stopped yet, by activity id.
    pending: PendingRequests,
}

/// Requests started and not stopped yet, by activity id, oldest first: forgetting the oldest
/// and finding the ones that have run too long take time for what they remove, not for what
/// stays (a busy process can have many requests in flight).
#[derive(Debug, Default)]
struct PendingRequests {
    /// Activity id -> when the request started.
    started: HashMap<Arc<str>, Instant>,
    /// Ids in the order they started (sharing the map's strings). Holds ids already stopped too
    /// ("stale"): they are skipped when reached, and dropped all at once when they outnumber the
    /// pending ones.
    order: VecDeque<(Arc<str>, Instant)>,
}

impl PendingRequests {
    /// Remembers that `id` started at `at`, forgetting the oldest pending request first when
    /// [`MAX_PENDING_REQUESTS`] are pending.
    fn insert(&mut self, id: &str, at: Instant) {
        if self.started.len() >= MAX_PENDING_REQUESTS {
            self.pop_oldest();
        }
        let id: Arc<str> = Arc::from(id);
        self.started.insert(Arc::clone(&id), at);
        self.order.push_back((id, at));
        if self.order.len() > 2 * self.started.len() + 64 {
            let started = &self.started;
            self.order
                .retain(|(id, at)| started.get(id).is_some_and(|pending| pending == at));
        }
    }

    /// Forgets `id`; true if it was pending.
    fn remove(&mut self, id: &str) -> bool {
        self.started.remove(id).is_some()
    }

    /// Forgets the oldest pending request and returns when it started.
    fn pop_oldest(&mut self) -> Option<Instant> {
        while let Some((id, at)) = self.order.pop_front() {
            if self.started.get(&id) == Some(&at) {
                self.started.remove(&id);
                return Some(at);
            }
        }
        None
    }

    /// When the oldest pending request started.
    fn oldest(&mut self) -> Option<Instant> {
        while let Some((id, at)) = self.order.front() {
            if self.started.get(id) == Some(at) {
                return Some(*at);
            }
            self.order.pop_front();
        }
        None
    }

    fn clear(&mut self) {
        self.started.clear();
        self.order.clear();
    }
}

impl RequestWindow {
    /// A window with nothing counted.
    pub fn new(trigger: AspNetTrigger) -> Self {
        RequestWindow {
            trigger,
            counted: VecDeque::new(),
            pending: PendingRequests::default(),
        }
    }

    /// Takes a request event seen at `now`; true when the trigger fires (the window then starts
    /// over).
    pub fn observe(&mut self, event: &RequestEvent, now: Instant) -> bool {
        let (RequestEvent::Start { path, .. } | RequestEvent::Stop { path, .. }) = event;
        if !self.path_counts(path) {
            return false;
        }
        let counts = match (&self.trigger.condition, event) {
            (AspNetCondition::RequestCount, RequestEvent::Start { .. }) => true,
            // Without an activity id a start cannot be paired with its stop: ignored.
            (
                AspNetCondition::RequestDuration(_),
                RequestEvent::Start {
                    activity_id: Some(activity_id),
                    ..
                },
            ) => {
                self.pending.insert(activity_id, now);
                false
            }
            (
                AspNetCondition::RequestDuration(slow),
                RequestEvent::Stop {
                    activity_id: Some(activity_id),
                    duration,
                    ..
                },
            ) => {
                // A request the heartbeat counted already (or never saw start) counts no more.
                self.pending.remove(activity_id) && duration >= slow
            }
            (AspNetCondition::ResponseStatus(ranges), RequestEvent::Stop { status, .. }) => ranges
                .iter()
                .any(|(low, high)| (*low..=*high).contains(status)),
            _ => false,
        };
        counts && self.count(now)
    }

    /// `AspNetRequestDuration`: counts the requests that have been running for at least
    /// `request_duration` at `now` without stopping (each once); true when the trigger fires.
    pub fn heartbeat(&mut self, now: Instant) -> bool {
        let AspNetCondition::RequestDuration(slow) = self.trigger.condition else {
            return false;
        };
        let mut fired = false;
        while self
            .pending
            .oldest()
            .is_some_and(|started| now.saturating_duration_since(started) >= slow)
        {
            self.pending.pop_oldest();
            fired |= self.count(now);
        }
        fired
    }

    /// Forgets what was counted and the requests waiting for their stop (after the rule ran
    /// its actions, when the events queued meanwhile were dropped, or when a new session
    /// starts): a request whose stop was never seen must not count as hung later.
    pub fn reset(&mut self) {
        self.counted.clear();
        self.pending.clear();
    }

    fn count(&mut self, now: Instant) -> bool {
        self.counted.push_back(now);
        while let Some(oldest) = self.counted.front()
            && now.saturating_duration_since(*oldest) > self.trigger.sliding_window_duration
        {
            self.counted.pop_front();
        }
        if self.counted.len() >= self.trigger.count as usize {
            self.counted.clear();
            return true;
        }
        false
    }

    fn path_counts(&self, path: &str) -> bool {
        let matches = |globs: &[String]| globs.iter().any(|glob| glob_matches(glob, path));
        !matches(&self.trigger.exclude_paths)
            && (self.trigger.include_paths.is_empty() || matches(&self.trigger.include_paths))
    }
}

/// Paths longer than this (in bytes) match no glob: a request path is client input.
const MAX_GLOB_PATH_BYTES: usize = 2048;

/// One element of a path glob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GlobToken {
    /// `**/`: any number of whole segments, each with its slash.
    Segments,
    /// `*`: any text without a `/`.
    Star,
    /// Any other character: itself.
    Literal(char),
}

/// Whether `path` matches `glob` as a whole, without case: `*` is any text without a `/`,
/// `**/` any number of whole segments (none included); everything else is itself. A path
/// longer than 2 KiB matches nothing.
///
/// Dynamic programming over (glob token, path position), one row at a time: time is the
/// glob's length times the path's, whatever the path holds; no recursion.
pub fn glob_matches(glob: &str, path: &str) -> bool {
    if path.len() > MAX_GLOB_PATH_BYTES {
        return false;
    }
    let glob: Vec<char> = glob.to_lowercase().chars().collect();
    let path: Vec<char> = path.to_lowercase().chars().collect();
    let mut tokens = Vec::with_capacity(glob.len());
    let mut rest = glob.as_slice();
    while let Some((first, tail)) = rest.split_first() {
        rest = match (first, tail) {
            ('*', ['*', '/', after @ ..]) => {
                tokens.push(GlobToken::Segments);
                after
            }
            ('*', _) => {
                tokens.push(GlobToken::Star);
                tail
            }
            (c, _) => {
                tokens.push(GlobToken::Literal(*c));
                tail
            }
        };
    }
    // next_slash[j]: the first `/` at or after position j.
    let mut next_slash = vec![None; path.len() + 1];
    for j in (0..path.len()).rev() {
        next_slash[j] = if path[j] == '/' {
            Some(j)
        } else {
            next_slash[j + 1]
        };
    }
    // after[j]: whether the tokens after the current one match path[j..]; starts as "no
    // tokens", which match only the empty rest.
    let mut after: Vec<bool> = (0..=path.len()).map(|j| j == path.len()).collect();
    for token in tokens.iter().rev() {
        let mut here = vec![false; path.len() + 1];
        for j in (0..=path.len()).rev() {
            here[j] = match token {
                GlobToken::Literal(c) => path.get(j) == Some(c) && after[j + 1],
                // Nothing more of the segment, or one more character of it.
                GlobToken::Star => {
                    after[j] || (path.get(j).is_some_and(|c| *c != '/') && here[j + 1])
                }
                // No more segments, or one more segment and its slash.
                GlobToken::Segments => {
                    after[j] || next_slash[j].is_some_and(|slash| here[slash + 1])
                }
            };
        }
        after = here;
    }
    after[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(condition: AspNetCondition, count: u32) -> AspNetTrigger {
        AspNetTrigger {
            condition,
            count,
            sliding_window_duration: Duration::from_secs(10),
            include_paths: Vec::new(),
            exclude_paths: vec!["/health".into()],
        }
    }

    fn start(id: &str, path: &str) -> RequestEvent {
        RequestEvent::Start {
            activity_id: Some(id.into()),
            path: path.into(),
        }
    }

    fn stop(id: &str, path: &str, status: u16, millis: u64) -> RequestEvent {
        RequestEvent::Stop {
            activity_id: Some(id.into()),
            path: path.into(),
            status,
            duration: Duration::from_millis(millis),
        }
    }

    #[test]
    fn globs_match_segments_and_globstars() {
        for (glob, path, expected) in [
            ("/api/*", "/api/users", true),
            ("/api/*", "/api/users/1", false),
            ("/api/**/*", "/api/users/1", true),
            ("/api/**/*", "/api/x", true),
            ("/API/Users", "/api/users", true),
            ("/", "/about", false),
            ("/a*c", "/abbc", true),
            ("/a*c", "/ab/c", false),
            ("**/x", "x", true),
            ("/**/x", "/a/b/x", true),
            ("/**/x", "/x", true),
            ("/api/**/", "/api/a/", true),
            ("/a**b", "/axxb", true),
            ("/a**b", "/ax/b", false),
            ("", "", true),
            ("", "/", false),
        ] {
            assert_eq!(glob_matches(glob, path), expected, "{glob} {path}");
        }
    }

    #[test]
    fn globs_on_long_paths_of_slashes_are_quick() {
        let glob = "/**/**/**/**/**/**/**/**/*x";
        let slashes = "/".repeat(MAX_GLOB_PATH_BYTES);
        let started = Instant::now();
        assert!(!glob_matches(glob, &slashes));
        assert!(glob_matches(
            glob,
            &format!("{}x", "/".repeat(MAX_GLOB_PATH_BYTES - 1))
        ));
        // Longer than 2 KiB: matches nothing.
        assert!(!glob_matches(glob, &format!("{slashes}x")));
        assert!(!glob_matches("**/*", &"/a".repeat(MAX_GLOB_PATH_BYTES)));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn request_count_counts_starts_within_the_window() {
        let now = Instant::now();
        let at = |s: u64| now + Duration::from_secs(s);
        let mut window = RequestWindow::new(trigger(AspNetCondition::RequestCount, 3));
        assert!(!window.observe(&start("1", "/a"), at(0)));
        assert!(!window.observe(&start("2", "/health"), at(1)));
        assert!(!window.observe(&start("3", "/a"), at(1)));
        // The first one left the window.
        assert!(!window.observe(&start("4", "/a"), at(11)));
        assert!(window.observe(&start("5", "/a"), at(11)));
        // It starts over.
        assert!(!window.observe(&start("6", "/a"), at(12)));
    }

    #[test]
    fn request_duration_counts_slow_stops_and_hung_requests_once() {
        let now = Instant::now();
        let slow = AspNetCondition::RequestDuration(Duration::from_secs(2));
        let mut window = RequestWindow::new(trigger(slow, 2));
        window.observe(&start("fast", "/a"), now);
        assert!(!window.observe(&stop("fast", "/a", 200, 100), now));
        window.observe(&start("slow", "/a"), now);
        assert!(!window.observe(&stop("slow", "/a", 200, 2500), now));
        window.observe(&start("hung", "/a"), now);
        assert!(!window.heartbeat(now + Duration::from_secs(1)));
        assert!(window.heartbeat(now + Duration::from_secs(2)));
        // Its late stop does not count again.
        assert!(!window.observe(&stop("hung", "/a", 200, 9000), now + Duration::from_secs(9)));
    }

    #[test]
    fn a_request_started_before_a_reset_is_not_counted_as_hung() {
        let now = Instant::now();
        let slow = AspNetCondition::RequestDuration(Duration::from_secs(2));
        let mut window = RequestWindow::new(trigger(slow, 1));
        window.observe(&start("dropped-stop", "/a"), now);
        window.reset();
        assert!(!window.heartbeat(now + Duration::from_secs(60)));
        // A request started after the reset still counts.
        window.observe(&start("hung", "/a"), now + Duration::from_secs(60));
        assert!(window.heartbeat(now + Duration::from_secs(62)));
    }

    #[test]
    fn pending_requests_forget_the_oldest_and_skip_the_stopped() {
        let now = Instant::now();
        let at = |seconds: u64| now + Duration::from_secs(seconds);
        let mut pending = PendingRequests::default();
        pending.insert("a", at(0));
        pending.insert("b", at(1));
        pending.insert("c", at(2));
        assert!(pending.remove("a"));
        assert!(!pending.remove("a"));
        // `b` started again later: its first start is stale.
        pending.insert("b", at(3));
        assert_eq!(pending.oldest(), Some(at(2)));
        assert_eq!(pending.pop_oldest(), Some(at(2)));
        assert_eq!(pending.pop_oldest(), Some(at(3)));
        assert_eq!(pending.pop_oldest(), None);

        // Full: a new start forgets the oldest pending one, and stopped ones do not pile up.
        for n in 0..MAX_PENDING_REQUESTS {
            pending.insert(&n.to_string(), at(10));
        }
        pending.insert("newest", at(11));
        assert_eq!(pending.started.len(), MAX_PENDING_REQUESTS);
        assert!(!pending.started.contains_key("0"));
        for n in 0..250_000 {
            let id = format!("short-{n}");
            pending.insert(&id, at(12));
            // Compaction happens on insert: right after one, the queue is within its bound.
            assert!(pending.order.len() <= 2 * pending.started.len() + 64);
            pending.remove(&id);
        }
        assert_eq!(pending.oldest(), Some(at(10)));
    }

    #[test]
    fn request_duration_ignores_requests_without_an_activity_id() {
        let now = Instant::now();
        let slow = AspNetCondition::RequestDuration(Duration::from_secs(2));
        let mut window = RequestWindow::new(trigger(slow, 1));
        let anonymous_start = RequestEvent::Start {
            activity_id: None,
            path: "/a".into(),
        };
        let anonymous_stop = RequestEvent::Stop {
            activity_id: None,
            path: "/a".into(),
            status: 200,
            duration: Duration::from_secs(5),
        };
        assert!(!window.observe(&anonymous_start, now));
        assert!(!window.observe(&anonymous_start, now));
        assert!(!window.observe(&anonymous_stop, now + Duration::from_secs(5)));
        // Neither start waits for a stop that could never be paired with it.
        assert!(!window.heartbeat(now + Duration::from_secs(60)));
    }

    #[test]
    fn response_status_counts_stops_in_range() {
        let now = Instant::now();
        let status = AspNetCondition::ResponseStatus(vec![(500, 599), (404, 404)]);
        let mut window = RequestWindow::new(trigger(status, 2));
        assert!(!window.observe(&stop("1", "/a", 200, 1), now));
        assert!(!window.observe(&stop("2", "/a", 503, 1), now));
        assert!(!window.observe(&stop("3", "/health", 500, 1), now));
        assert!(!window.observe(&start("4", "/a"), now));
        assert!(window.observe(&stop("5", "/a", 404, 1), now));
    }
}
