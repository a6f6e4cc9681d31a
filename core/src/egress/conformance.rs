//! The conformance suite of `diagmon plugin test`: runs one provider through the contract of
//! `wit/diagmon-egress@0.1.0/egress.wit` the way the capture pipeline drives it, case by case, and reports each case
//! with the provider's own words.
//!
//! The cases: the component loads; `configure` accepts the configured settings and grant and
//! refuses an unknown key with `invalid-settings`; begin/write/finish stores exactly the bytes
//! written; an abort after partial writes leaves nothing behind; an empty artifact; one artifact
//! of every kind; names with spaces and unicode; a large artifact in small and in large chunks;
//! and the provider without its grants fails cleanly (an error, not a trap). Where the provider
//! writes into a directory the suite can see (a `directory` grant, or a `file://` object store)
//! it also checks what landed there byte for byte (or, for a gzip file, by the CRC-32 and size
//! of its trailer), that no partial file is left, and removes what each case created.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};

use super::artifact::{Artifact, ArtifactKind};
use super::builtin;
use super::check::check_component_cached;
use super::config::{EgressConfig, MAX_CHUNK, ProviderConfig};
use super::engine;
use super::error::EgressError;
use super::registry::EgressHost;

/// The setting no provider knows, handed to `configure` to see it refused.
pub const UNKNOWN_SETTING: &str = "diagmon_conformance_unknown_setting";

/// The size of the large artifact by default: 1 GiB.
pub const DEFAULT_LARGE_BYTES: u64 = 1 << 30;

/// What to test and how.
#[derive(Debug, Clone)]
pub struct ConformanceOptions {
    /// The provider's name in messages.
    pub name: String,
    /// The provider: its component (a `.wasm` path or a built-in name), grants, settings and
    /// limits, as a configuration would give them.
    pub provider: ProviderConfig,
    /// Where compiled components are cached (none: diagmon's default cache).
    pub cache_directory: Option<PathBuf>,
    /// The size of the large artifact, in bytes ([`DEFAULT_LARGE_BYTES`]).
    pub large_bytes: u64,
}

/// How a case ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The provider did what the contract asks.
    Pass,
    /// It did not; the detail says how.
    Fail,
    /// The case does not apply to this provider; the detail says why.
    Skip,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "skip",
        })
    }
}

/// One case of the suite.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// What the case checks, `abort after partial writes`.
    pub name: &'static str,
    /// How it ended.
    pub outcome: Outcome,
    /// What happened, with the provider's own words (its location, its error message).
    pub detail: String,
    /// How long it took.
    pub elapsed: Duration,
}

/// Every case, in the order they ran. Its `Display` is what `diagmon plugin test` prints.
#[derive(Debug, Clone)]
pub struct ConformanceReport {
    /// The provider's name.
    pub name: String,
    /// The cases.
    pub cases: Vec<CaseResult>,
}

impl ConformanceReport {
    /// True when no case failed.
    pub fn passed(&self) -> bool {
        self.cases.iter().all(|case| case.outcome != Outcome::Fail)
    }

    /// The case of this name, if it ran.
    pub fn case(&self, name: &str) -> Option<&CaseResult> {
        self.cases.iter().find(|case| case.name == name)
    }
}

impl fmt::Display for ConformanceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "conformance of egress provider `{}`:", self.name)?;
        let width = self.cases.iter().map(|c| c.name.len()).max().unwrap_or(0);
        for case in &self.cases {
            writeln!(
                f,
                "  {}  {:width$}  {:>8.1} ms  {}",
                case.outcome,
                case.name,
                case.elapsed.as_secs_f64() * 1000.0,
                case.detail
            )?;
        }
        let failed = self
            .cases
            .iter()
            .filter(|c| c.outcome == Outcome::Fail)
            .count();
        let skipped = self
            .cases
            .iter()
            .filter(|c| c.outcome == Outcome::Skip)
            .count();
        if failed == 0 {
            writeln!(
                f,
                "result: PASS ({} cases, {skipped} skipped)",
                self.cases.len()
            )
        } else {
            writeln!(f, "result: FAIL ({failed} of {} cases)", self.cases.len())
        }
    }
}

/// Runs every case against the provider and reports them. Never fails as a whole: a provider
/// that cannot even load fails its first cases, and the others are skipped.
pub async fn run_conformance(options: &ConformanceOptions) -> ConformanceReport {
    let mut suite = Suite {
        options: options.clone(),
        observed: observed_directory(&options.provider),
        cases: Vec::new(),
    };
    suite.run().await;
    ConformanceReport {
        name: options.name.clone(),
        cases: suite.cases,
    }
}

/// The directory where the provider's artifacts land, when the suite can see it.
fn observed_directory(provider: &ProviderConfig) -> Option<PathBuf> {
    if let Some(directory) = &provider.directory {
        return Some(directory.clone());
    }
    let url = &provider.object_store.as_ref()?.url;
    url.strip_prefix("file://").map(PathBuf::from)
}

/// What one case found: pass or fail, and why.
type Verdict = Result<String, String>;

struct Suite {
    options: ConformanceOptions,
    observed: Option<PathBuf>,
    cases: Vec<CaseResult>,
}

impl Suite {
    fn record(&mut self, name: &'static str, started: Instant, verdict: Verdict) {
        let (outcome, detail) = match verdict {
            Ok(detail) => (Outcome::Pass, detail),
            Err(detail) => (Outcome::Fail, detail),
        };
        self.cases.push(CaseResult {
            name,
            outcome,
            detail,
            elapsed: started.elapsed(),
        });
    }

    fn skip(&mut self, name: &'static str, why: &str) {
        self.cases.push(CaseResult {
            name,
            outcome: Outcome::Skip,
            detail: why.to_owned(),
            elapsed: Duration::ZERO,
        });
    }

    fn config(&self, provider: ProviderConfig) -> EgressConfig {
        EgressConfig {
            providers: BTreeMap::from([(self.options.name.clone(), provider)]),
            cache_directory: self.options.cache_directory.clone(),
        }
    }

    async fn load(&self, provider: ProviderConfig) -> Result<EgressHost, EgressError> {
        EgressHost::load(&self.config(provider)).await
    }

    async fn run(&mut self) {
        let started = Instant::now();
        let component = self.options.provider.component.clone();
        if builtin::component(&component).is_some() {
            self.skip(
                "component loads",
                "a built-in: checked when diagmon is built",
            );
        } else {
            // Through the compile cache: the load that follows then compiles nothing.
            let cache = self
                .options
                .cache_directory
                .clone()
                .or_else(engine::default_cache_directory);
            let verdict =
                match check_component_cached(Path::new(&component), cache.as_deref()).await {
                    Ok(report) if report.is_ok() => Ok(format!(
                        "exports {}",
                        report.provider_export.unwrap_or_default()
                    )),
                    Ok(report) => Err(report.problems.join("; ")),
                    Err(error) => Err(error.to_string()),
                };
            let loads = verdict.is_ok();
            self.record("component loads", started, verdict);
            if !loads {
                return self.skip_rest("the component does not load");
            }
        }

        let started = Instant::now();
        let host = match self.load(self.options.provider.clone()).await {
            Ok(host) => {
                self.record(
                    "configure with the settings and grant",
                    started,
                    Ok("accepted".to_owned()),
                );
                host
            }
            Err(error) => {
                self.record(
                    "configure with the settings and grant",
                    started,
                    Err(describe(&error)),
                );
                return self.skip_rest("`configure` refused the settings");
            }
        };

        let started = Instant::now();
        let verdict = self.unknown_setting().await;
        self.record("unknown setting refused", started, verdict);

        let started = Instant::now();
        let data = pattern(3 << 20, 12_345);
        let verdict = self
            .store(&host, artifact(ArtifactKind::Trace), &data, 64 << 10)
            .await;
        self.record("begin, write, finish", started, verdict);

        let started = Instant::now();
        let verdict = self.abort_after_writes(&host).await;
        self.record("abort after partial writes", started, verdict);

        let started = Instant::now();
        let verdict = self
            .store(&host, artifact(ArtifactKind::Trace), &[], 64 << 10)
            .await;
        self.record("empty artifact", started, verdict);

        let started = Instant::now();
        let verdict = self.every_kind(&host).await;
        self.record("an artifact of every kind", started, verdict);

        let started = Instant::now();
        let mut odd = artifact(ArtifactKind::Trace);
        odd.process_name = "my app — ünïcødé ✓".to_owned();
        odd.file_name = "trace of my app ü ✓.nettrace".to_owned();
        odd.tags = vec!["with space".to_owned(), "ünïcødé".to_owned()];
        let verdict = self.store(&host, odd, &pattern(100_000, 7), 64 << 10).await;
        self.record("names with spaces and unicode", started, verdict);

        for (name, chunk) in [
            ("large artifact in 64 KiB chunks", 64 << 10),
            ("large artifact in 16 MiB chunks", MAX_CHUNK),
        ] {
            let started = Instant::now();
            let verdict = self.large(chunk).await;
            self.record(name, started, verdict);
        }

        let started = Instant::now();
        match self.without_grants().await {
            Some(verdict) => self.record("denied without its grant", started, verdict),
            None => self.skip(
                "denied without its grant",
                "the provider is granted nothing to take away",
            ),
        }
    }

    fn skip_rest(&mut self, why: &str) {
        for name in [
            "unknown setting refused",
            "begin, write, finish",
            "abort after partial writes",
            "empty artifact",
            "an artifact of every kind",
            "names with spaces and unicode",
            "large artifact in 64 KiB chunks",
            "large artifact in 16 MiB chunks",
            "denied without its grant",
        ] {
            self.skip(name, why);
        }
    }

    async fn unknown_setting(&self) -> Verdict {
        let mut provider = self.options.provider.clone();
        provider.settings.insert(
            UNKNOWN_SETTING.to_owned(),
            serde_json::Value::String("1".to_owned()),
        );
        match self.load(provider).await {
            Ok(_) => Err(format!(
                "`configure` accepted the unknown setting `{UNKNOWN_SETTING}`; return \
                 invalid-settings naming it, so that a misspelt key stops diagmon at start-up"
            )),
            Err(EgressError::Provider {
                kind: super::error::ProviderErrorKind::InvalidSettings,
                message,
                ..
            }) if message.contains(UNKNOWN_SETTING) => Ok(format!("\"{message}\"")),
            // `configure` at load: the provider's message inside the host's.
            Err(EgressError::Load { cause, .. })
                if cause.starts_with("its settings were refused")
                    && cause.contains(UNKNOWN_SETTING) =>
            {
                Ok(format!("\"{cause}\""))
            }
            Err(EgressError::Provider { kind, message, .. }) => Err(format!(
                "refused with {kind} \"{message}\"; expected invalid-settings naming `{UNKNOWN_SETTING}`"
            )),
            Err(other) => Err(describe(&other)),
        }
    }

    /// Stores `data` in writes of `chunk` bytes and checks what landed.
    async fn store(
        &self,
        host: &EgressHost,
        artifact: Artifact,
        data: &[u8],
        chunk: usize,
    ) -> Verdict {
        let before = self.snapshot()?;
        let outcome = async {
            let mut upload = host.begin(&self.options.name, artifact).await?;
            for piece in data.chunks(chunk.max(1)) {
                upload.write(Bytes::copy_from_slice(piece)).await?;
            }
            upload.finish().await
        }
        .await;
        let location = outcome.map_err(|e| describe(&e))?;
        if location.is_empty() {
            return Err("`finish` returned an empty location".to_owned());
        }
        self.check_landed(&before, |file| {
            std::fs::read(file).is_ok_and(|bytes| bytes == data)
                || gzip_trailer(file)
                    .is_some_and(|trailer| trailer == (crc32(0, data), data.len() as u32))
        })?;
        Ok(format!("stored at {location}"))
    }

    /// Checks the new files since `before`: none partial, one matching `is_artifact`; then
    /// removes them.
    fn check_landed(
        &self,
        before: &Listing,
        is_artifact: impl Fn(&Path) -> bool,
    ) -> Result<(), String> {
        let Some(directory) = &self.observed else {
            return Ok(());
        };
        let created = self.snapshot()?.created_since(before);
        let outcome = if let Some(partial) = created.iter().find(|p| is_partial(p)) {
            Err(format!(
                "a partial file is left after `finish`: {}",
                partial.display()
            ))
        } else if !created.iter().any(|p| is_artifact(&directory.join(p))) {
            Err(format!(
                "no new file in {} holds exactly the bytes written, or gzips them (new files: {})",
                directory.display(),
                names(&created)
            ))
        } else {
            Ok(())
        };
        remove(directory, &created);
        outcome
    }

    async fn abort_after_writes(&self, host: &EgressHost) -> Verdict {
        let before = self.snapshot()?;
        let mut upload = host
            .begin(&self.options.name, artifact(ArtifactKind::Trace))
            .await
            .map_err(|e| describe(&e))?;
        for piece in pattern(2 << 20, 3).chunks(64 << 10) {
            upload
                .write(Bytes::copy_from_slice(piece))
                .await
                .map_err(|e| describe(&e))?;
        }
        upload.abort().await;
        let Some(directory) = &self.observed else {
            return Ok("aborted (nothing the suite can see to check)".to_owned());
        };
        let created = self.snapshot()?.created_since(&before);
        remove(directory, &created);
        if created.is_empty() {
            Ok(format!("nothing left in {}", directory.display()))
        } else {
            Err(format!(
                "`abort` left files behind: {}; remove what `begin` and `write` created",
                names(&created)
            ))
        }
    }

    async fn every_kind(&self, host: &EgressHost) -> Verdict {
        let mut landed = Vec::new();
        for kind in ArtifactKind::ALL {
            let data = pattern(200_000, kind as u64);
            match self.store(host, artifact(kind), &data, 64 << 10).await {
                Ok(_) => landed.push(kind.as_str()),
                Err(why) => return Err(format!("{kind}: {why}")),
            }
        }
        Ok(format!("stored {}", landed.join(", ")))
    }

    /// The large artifact, handed to the provider in writes of `chunk` bytes.
    async fn large(&self, chunk: usize) -> Verdict {
        let total = self.options.large_bytes;
        let mut provider = self.options.provider.clone();
        provider.limits.chunk_kib = (chunk >> 10) as u64;
        let host = self.load(provider).await.map_err(|e| describe(&e))?;
        let before = self.snapshot()?;
        let started = Instant::now();
        let outcome = async {
            let mut upload = host
                .begin(&self.options.name, artifact(ArtifactKind::Dump))
                .await?;
            let mut sent = 0u64;
            while sent < total {
                let len = chunk.min((total - sent) as usize);
                upload.write(segment_bytes(sent, len)).await?;
                sent += len as u64;
            }
            upload.finish().await
        }
        .await;
        let location = outcome.map_err(|e| describe(&e))?;
        let elapsed = started.elapsed();
        self.check_landed(&before, |file| {
            holds_pattern(file, total)
                || gzip_trailer(file)
                    .is_some_and(|trailer| trailer == (pattern_crc32(total), total as u32))
        })?;
        let mib = total as f64 / f64::from(1 << 20);
        Ok(format!(
            "{mib:.0} MiB at {:.0} MiB/s, stored at {location}",
            mib / elapsed.as_secs_f64().max(1e-9)
        ))
    }

    /// The provider with every grant taken away: it must fail with an error, not trap, and
    /// store nothing. `None` when it has no grant to take away.
    async fn without_grants(&self) -> Option<Verdict> {
        let mut provider = self.options.provider.clone();
        if provider.directory.is_none()
            && provider.allowed_outbound_hosts.is_empty()
            && provider.object_store.is_none()
        {
            return None;
        }
        provider.directory = None;
        provider.allowed_outbound_hosts.clear();
        provider.object_store = None;
        let host = match self.load(provider).await {
            Ok(host) => host,
            Err(error) => return Some(clean_refusal(&error, "at load")),
        };
        let outcome = async {
            let mut upload = host
                .begin(&self.options.name, artifact(ArtifactKind::Trace))
                .await?;
            upload.write(Bytes::from(pattern(1 << 20, 9))).await?;
            upload.finish().await
        }
        .await;
        Some(match outcome {
            Ok(location) => Err(format!(
                "stored an artifact without any grant, at {location}"
            )),
            Err(error) => clean_refusal(&error, "in its calls"),
        })
    }

    fn snapshot(&self) -> Result<Listing, String> {
        match &self.observed {
            Some(directory) => Listing::of(directory),
            None => Ok(Listing::default()),
        }
    }
}

/// Passes a refusal that is the provider's error or the host's load check; fails a trap, a
/// deadline or a memory limit.
fn clean_refusal(error: &EgressError, when: &str) -> Verdict {
    match error {
        EgressError::Provider { kind, message, .. } => {
            Ok(format!("refused {when} with {kind}: \"{message}\""))
        }
        EgressError::Load { cause, .. } => Ok(format!("refused {when}: {cause}")),
        other => Err(format!(
            "{}; without a grant, return an error (denied or invalid-settings) rather than trap",
            describe(other)
        )),
    }
}

/// An error, with whether the provider answered it or the host stopped the provider.
fn describe(error: &EgressError) -> String {
    match error {
        EgressError::Provider { .. } => format!("the provider answered: {error}"),
        EgressError::Trap { .. }
        | EgressError::DeadlineExceeded { .. }
        | EgressError::MemoryLimit { .. } => format!("stopped by the host: {error}"),
        other => other.to_string(),
    }
}

fn is_partial(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".partial"))
}

fn names(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "none".to_owned();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn remove(directory: &Path, created: &[PathBuf]) {
    for path in created {
        // Best effort: a file the suite cannot remove is only left behind in a scratch place.
        let _ = std::fs::remove_file(directory.join(path));
    }
}

/// The files under a directory, relative to it, with their sizes and modification times.
#[derive(Debug, Default)]
struct Listing {
    files: BTreeMap<PathBuf, (u64, Option<SystemTime>)>,
}

impl Listing {
    fn of(directory: &Path) -> Result<Listing, String> {
        let mut listing = Listing::default();
        let mut pending = vec![PathBuf::new()];
        while let Some(relative) = pending.pop() {
            let entries = match std::fs::read_dir(directory.join(&relative)) {
                Ok(entries) => entries,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => {
                    return Err(format!(
                        "cannot list {}: {error}",
                        directory.join(&relative).display()
                    ));
                }
            };
            for entry in entries.flatten() {
                let path = relative.join(entry.file_name());
                let Ok(metadata) = entry.metadata() else {
                    continue;
                };
                if metadata.is_dir() {
                    pending.push(path);
                } else {
                    listing
                        .files
                        .insert(path, (metadata.len(), metadata.modified().ok()));
                }
            }
        }
        Ok(listing)
    }

    /// Files that are new or changed since `before`.
    fn created_since(&self, before: &Listing) -> Vec<PathBuf> {
        self.files
            .iter()
            .filter(|(path, stat)| before.files.get(*path) != Some(stat))
            .map(|(path, _)| path.clone())
            .collect()
    }
}

/// A trace artifact from a made-up process.
fn artifact(kind: ArtifactKind) -> Artifact {
    Artifact::new(
        kind,
        4242,
        uuid::Uuid::new_v4(),
        "conformance",
        uuid::Uuid::new_v4(),
        vec!["conformance".to_owned()],
        SystemTime::now(),
    )
}

/// `len` deterministic bytes that are not all alike, seeded by `seed`.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// The large artifact is made of 1 MiB segments: one pseudo-random block with the segment's
/// number in its first 8 bytes, so that a lost, repeated or reordered segment shows.
const SEGMENT: usize = 1 << 20;

/// The block every segment starts from.
fn block() -> &'static [u8] {
    static BLOCK: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BLOCK.get_or_init(|| pattern(SEGMENT, 0x5e9))
}

/// `len` bytes of the large artifact from `offset`.
fn segment_bytes(offset: u64, len: usize) -> Bytes {
    let block = block();
    let mut out = BytesMut::with_capacity(len);
    let mut at = offset;
    while out.len() < len {
        let index = (at / SEGMENT as u64).to_le_bytes();
        let within = (at % SEGMENT as u64) as usize;
        let take = (SEGMENT - within).min(len - out.len());
        let start = out.len();
        out.extend_from_slice(&block[within..within + take]);
        // The segment's number over its first 8 bytes, as far as this piece covers them.
        for (i, byte) in index.iter().enumerate().skip(within) {
            if let Some(slot) = out.get_mut(start + i - within)
                && i - within < take
            {
                *slot = *byte;
            }
        }
        at += take as u64;
    }
    out.freeze()
}

/// True when `file` holds exactly the first `total` bytes of the large artifact.
fn holds_pattern(file: &Path, total: u64) -> bool {
    use std::io::Read;
    let Ok(mut reader) = std::fs::File::open(file) else {
        return false;
    };
    if reader.metadata().map(|m| m.len()).ok() != Some(total) {
        return false;
    }
    let mut buffer = vec![0; SEGMENT];
    let mut offset = 0u64;
    while offset < total {
        let len = SEGMENT.min((total - offset) as usize);
        if reader.read_exact(&mut buffer[..len]).is_err()
            || buffer[..len] != segment_bytes(offset, len)[..]
        {
            return false;
        }
        offset += len as u64;
    }
    true
}

/// The CRC-32 (IEEE, as gzip's trailer holds it) of `data`, continuing from `crc`.
fn crc32(crc: u32, data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table = [0u32; 256];
        for (n, entry) in table.iter_mut().enumerate() {
            let mut c = n as u32;
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *entry = c;
        }
        table
    });
    let mut c = !crc;
    for byte in data {
        c = table[((c ^ u32::from(*byte)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// The CRC-32 of the first `total` bytes of the large artifact.
fn pattern_crc32(total: u64) -> u32 {
    let mut crc = 0;
    let mut offset = 0u64;
    while offset < total {
        let len = SEGMENT.min((total - offset) as usize);
        crc = crc32(crc, &segment_bytes(offset, len));
        offset += len as u64;
    }
    crc
}

/// The CRC-32 and size (mod 2^32) in the trailer of `file` when it is a gzip stream: what a
/// provider that compresses says it was given.
fn gzip_trailer(file: &Path) -> Option<(u32, u32)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut reader = std::fs::File::open(file).ok()?;
    let mut magic = [0u8; 2];
    reader.read_exact(&mut magic).ok()?;
    if magic != [0x1f, 0x8b] {
        return None;
    }
    let mut trailer = [0u8; 4];
    reader.seek(SeekFrom::End(-8)).ok()?;
    reader.read_exact(&mut trailer).ok()?;
    let crc = u32::from_le_bytes(trailer);
    reader.read_exact(&mut trailer).ok()?;
    Some((crc, u32::from_le_bytes(trailer)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_is_gzips() {
        assert_eq!(crc32(0, b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(crc32(0, b"1234"), b"56789"), 0xcbf4_3926);
    }

    #[test]
    fn segments_number_themselves_and_split_anywhere() {
        let whole = segment_bytes(0, 3 * SEGMENT);
        let mut pieces = BytesMut::new();
        let mut at = 0u64;
        for len in [10, SEGMENT, 777, 2 * SEGMENT - 787] {
            pieces.extend_from_slice(&segment_bytes(at, len));
            at += len as u64;
        }
        assert_eq!(whole, pieces.freeze());
        assert_eq!(&whole[SEGMENT..SEGMENT + 8], &1u64.to_le_bytes());
        assert_ne!(whole[..SEGMENT], whole[SEGMENT..2 * SEGMENT]);
    }

    #[test]
    fn a_file_holding_the_pattern_is_recognised_and_a_changed_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("large");
        let total = 2 * SEGMENT as u64 + 5;
        std::fs::write(&file, segment_bytes(0, total as usize)).unwrap();
        assert!(holds_pattern(&file, total));
        let mut changed = segment_bytes(0, total as usize).to_vec();
        changed[SEGMENT + 100] ^= 1;
        std::fs::write(&file, changed).unwrap();
        assert!(!holds_pattern(&file, total));
        assert!(!holds_pattern(&file, total + 1));
    }

    #[test]
    fn new_and_changed_files_are_found_recursively() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("old"), b"x").unwrap();
        let before = Listing::of(dir.path()).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/new"), b"y").unwrap();
        std::fs::write(dir.path().join("old"), b"longer").unwrap();
        let created = Listing::of(dir.path()).unwrap().created_since(&before);
        assert_eq!(
            created,
            vec![PathBuf::from("old"), PathBuf::from("sub/new")]
        );
    }
}
