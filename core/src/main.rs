//! The `diagmon` command line.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use diagmon::auth::{Authenticator, KeyOutputFormat, generate_key, render_key};
use diagmon::diagnostics::dump::DumpType;
use diagmon::diagnostics::eventpipe::Rundown;
use diagmon::diagnostics::nettrace;
use diagmon::diagnostics::reverse::{PortLimits, ReversePort};
use diagmon::diagnostics::{EventProvider, SessionConfig, Timeouts, endpoint};
use diagmon::egress::{
    ConformanceOptions, EgressConfig, EgressHost, ProviderConfig, TemplateLanguage,
    run_conformance, write_template,
};
use diagmon::operations::{
    ArtifactSpec, Destination, Operation, OperationRegistry, OperationStatus, Operations,
    StartError, StartRequest, TraceSpec,
};
use diagmon::processes::{Discovery, ProcessDirectory, ProcessSelector};
use diagmon::server::{self, ServerAuth};
use diagmon::{config, profiles};

/// `print!` that returns an error instead of panicking when standard output is closed: a
/// reader that stopped early (`| head`) ends the command quietly ([`StdoutClosed`]).
macro_rules! out {
    ($($arg:tt)*) => {
        std::io::Write::write_fmt(&mut std::io::stdout().lock(), format_args!($($arg)*))
            .map_err(|error| match error.kind() {
                std::io::ErrorKind::BrokenPipe => anyhow::Error::new(StdoutClosed),
                _ => anyhow::Error::new(error),
            })?
    };
}

/// The reader of standard output went away (`diagmon ... | head`): not a failure to report.
#[derive(Debug, thiserror::Error)]
#[error("standard output was closed")]
struct StdoutClosed;

/// `println!` with [`out!`]'s handling of a closed standard output.
macro_rules! outln {
    ($($arg:tt)*) => {{
        out!($($arg)*);
        out!("\n");
    }};
}

/// How long the process waits for leftover blocking tasks once a command has returned.
const RUNTIME_SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// A diagnostics monitor for .NET processes.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Run the monitor: serve the HTTP API.
    Collect(CollectArgs),
    /// Generate an API key: prints the Authorization header and the configuration that accepts it.
    Generatekey {
        /// Output format.
        #[arg(short, long, value_enum, default_value = "text")]
        output: KeyOutputFormat,
        /// How long the token is valid (e.g. 7d, 12h).
        #[arg(short, long, default_value = "7d", value_parser = humantime::parse_duration)]
        expiration: Duration,
    },
    /// Work with egress provider components.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Show the merged configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// List the .NET processes diagmon can see.
    Ps {
        #[command(flatten)]
        discovery: DiscoveryArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Capture an EventPipe trace of one process into a file.
    Trace(TraceArgs),
    /// Write a dump of one process into a file, as `dotnet-dump collect` does.
    Dump(DumpArgs),
    /// Take a heap snapshot (.gcdump) of one process, as `dotnet-gcdump collect` does, or report
    /// on one (`diagmon gcdump report FILE`).
    Gcdump(GcdumpArgs),
    /// Watch one process's counters live, like `dotnet-counters monitor`: redrawn in place on a
    /// terminal, one line per report otherwise.
    Counters(CountersArgs),
    /// Check that a nettrace file is whole and well-formed, and summarise it.
    Validate {
        /// The file to check.
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
struct CollectArgs {
    /// Addresses to serve on (default http://127.0.0.1:52323).
    #[arg(long, num_args = 1.., value_name = "URL")]
    urls: Vec<String>,
    /// Serve without authentication (loopback addresses only, unless
    /// --allow-no-auth-on-network is given too).
    #[arg(long, conflicts_with = "temp_apikey")]
    no_auth: bool,
    /// With --no-auth: also on addresses other machines can reach.
    #[arg(long, requires = "no_auth")]
    allow_no_auth_on_network: bool,
    /// Generate an API key for this run only and print its token.
    #[arg(long)]
    temp_apikey: bool,
    /// The configuration file (TOML, JSON or YAML).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Check that a component can load as an egress provider, and print what it exports and
    /// needs. Exit 1 when it cannot.
    Check {
        /// The component (.wasm).
        file: PathBuf,
        #[command(flatten)]
        provider: ProviderArgs,
    },
    /// Write a starting project for an egress provider into the new directory NAME: the
    /// contract, a provider that stores each artifact in its granted directory, a build script
    /// and a README.
    New {
        /// The language: rust (on the guest SDK) or python (componentize-py).
        #[arg(long, value_name = "LANG", value_parser = clap::builder::ValueParser::new(parse_language))]
        lang: TemplateLanguage,
        /// The project's directory, created; its last component names the project.
        name: PathBuf,
    },
    /// Run a component through the egress contract (begin/write/finish, abort, an empty and a
    /// large artifact, every kind, unusual names, settings errors, a denied grant) and print each
    /// case with the provider's own words. Exit 1 when a case fails.
    Test {
        /// The component (.wasm), or a built-in's name.
        file: String,
        #[command(flatten)]
        provider: ProviderArgs,
        /// The size of the large artifact, in MiB.
        #[arg(long, value_name = "MIB", default_value_t = 1024)]
        large_mib: u64,
    },
}

#[derive(Debug, Args)]
struct ProviderArgs {
    /// A configuration file whose provider gives the settings, grants and limits to use (its
    /// `component` is replaced by the file given). Without it: no settings, and for
    /// `plugin test` a scratch directory as the `directory` grant.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The provider of the configuration to use; may be left out when it has only one.
    #[arg(long, value_name = "NAME", requires = "config")]
    provider: Option<String>,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the merged configuration with secrets redacted, after checking it as `collect`
    /// would (the collection rules included; the egress components are not loaded).
    Show {
        /// The configuration file.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct DiscoveryArgs {
    /// Where runtimes create their sockets (connect mode); defaults to $TMPDIR or /tmp.
    #[arg(long, value_name = "DIR")]
    socket_dir: Option<PathBuf>,
    /// Listen mode: diagmon's diagnostic port, where runtimes started with
    /// DOTNET_DiagnosticPorts=PATH connect.
    #[arg(long, value_name = "PATH", conflicts_with = "socket_dir")]
    diagnostic_port: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct TraceArgs {
    #[command(flatten)]
    discovery: DiscoveryArgs,
    /// The process id.
    #[arg(long)]
    pid: Option<u64>,
    /// The runtime instance uid.
    #[arg(long)]
    uid: Option<uuid::Uuid>,
    /// The process name.
    #[arg(long)]
    name: Option<String>,
    /// How long to trace (e.g. 5s, 1m); Ctrl-C stops earlier.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Providers as `Name[:Keywords[:Level[:key=value;...]]]`, comma-separated; keywords in
    /// decimal (signed 64-bit, `-1` = all) or 0x hex, level 0-5 or by name. Defaults to the
    /// Cpu profile: the sample profiler and the runtime's default keywords at Informational.
    #[arg(long, value_delimiter = ',', value_parser = profiles::parse_provider)]
    providers: Vec<EventProvider>,
    /// Do not ask for rundown at the end of the trace.
    #[arg(long)]
    no_rundown: bool,
    /// The runtime's buffer size in MB.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=1024))]
    buffer_size_mb: u32,
    /// Output file.
    #[arg(short, long, default_value = "trace.nettrace")]
    output: PathBuf,
}

#[derive(Debug, Args)]
struct DumpArgs {
    #[command(flatten)]
    discovery: DiscoveryArgs,
    /// The process id.
    #[arg(short, long)]
    pid: Option<u64>,
    /// The runtime instance uid.
    #[arg(long)]
    uid: Option<uuid::Uuid>,
    /// The process name.
    #[arg(long)]
    name: Option<String>,
    /// What the dump holds: Mini, Full, WithHeap or Triage (case-insensitive).
    #[arg(long = "type", default_value = "WithHeap")]
    dump_type: DumpType,
    /// Output file (default: core_{yyyyMMdd_HHmmss_fff} in the current directory).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// The configuration file, for its [storage] section (the dump folder).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
struct GcdumpArgs {
    #[command(subcommand)]
    command: Option<GcdumpCommand>,
    #[command(flatten)]
    discovery: DiscoveryArgs,
    /// The process id.
    #[arg(short, long)]
    pid: Option<u64>,
    /// The runtime instance uid.
    #[arg(long)]
    uid: Option<uuid::Uuid>,
    /// The process name.
    #[arg(long)]
    name: Option<String>,
    /// Output file (default: {yyyyMMdd_HHmmss_fff}_{pid}.gcdump in the current directory).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Seconds the whole snapshot may take before it fails.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// The configuration file, for its [limits] section.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum GcdumpCommand {
    /// Report on a .gcdump file: objects and bytes per type, largest first, as
    /// `dotnet-gcdump report` prints.
    Report(GcdumpReportArgs),
}

#[derive(Debug, Args)]
struct GcdumpReportArgs {
    /// The .gcdump file.
    file: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// List only the N largest types (the rest are summed on one line).
    #[arg(long, value_name = "N")]
    top: Option<usize>,
}

#[derive(Debug, Args)]
struct CountersArgs {
    #[command(flatten)]
    discovery: DiscoveryArgs,
    /// The process id.
    #[arg(long)]
    pid: Option<u64>,
    /// The runtime instance uid.
    #[arg(long)]
    uid: Option<uuid::Uuid>,
    /// The process name.
    #[arg(long)]
    name: Option<String>,
    /// Counter providers (EventSource names), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "System.Runtime")]
    providers: Vec<String>,
    /// Seconds between two reports.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=3600))]
    interval: u64,
    /// Stop after this long (e.g. 30s); without it, until Ctrl-C or the process ends.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
}

fn main() -> ExitCode {
    diagmon::tls::install_crypto_provider();
    let cli = Cli::parse();
    // `plugin check` and `plugin test` print a report: only warnings and errors beside it.
    let default_level = match cli.command {
        Commands::Plugin(_) => "warn",
        _ => "info",
    };
    // Colour codes only for a person at a terminal, not into a file or a log collector.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DIAGMON_LOG")
                .unwrap_or_else(|_| default_level.into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // Do not wait for blocking work that outlived the command (an upload thread stuck in a
    // provider, a runtime that does not answer): what had to finish has finished.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_GRACE);
    match result {
        Ok(code) => code,
        // The reader of the output went away (`diagmon ... | head`): nothing left to say.
        Err(error) if error.is::<StdoutClosed>() => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--lang` of `plugin new`.
fn parse_language(text: &str) -> Result<TemplateLanguage, String> {
    text.parse()
}

/// The provider named by `--config` and `--provider`, with `component` as its component, and the
/// compile cache of that configuration; `None` without `--config`.
fn configured_provider(
    component: &str,
    args: &ProviderArgs,
) -> Result<Option<(String, ProviderConfig, Option<PathBuf>)>> {
    let Some(file) = &args.config else {
        return Ok(None);
    };
    let config = config::load(Some(file), serde_json::json!({}))?;
    let providers = &config.egress.providers;
    let known = || providers.keys().cloned().collect::<Vec<_>>().join(", ");
    let (name, provider) = match &args.provider {
        Some(wanted) => providers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
            .with_context(|| {
                format!(
                    "{} has no provider `{wanted}` (it has: {}); name one of [egress.providers.NAME]",
                    file.display(),
                    known()
                )
            })?,
        None if providers.len() == 1 => providers
            .iter()
            .next()
            .context("the configuration's only provider")?,
        None => bail!(
            "{} has {} egress providers ({}); choose one with --provider NAME",
            file.display(),
            providers.len(),
            known()
        ),
    };
    let mut provider = provider.clone();
    provider.component = component.to_owned();
    Ok(Some((
        name.clone(),
        provider,
        config.egress.cache_directory.clone(),
    )))
}

/// `diagmon plugin check`: the component's report, then, with `--config`, `configure` with the
/// provider's real settings and grants.
async fn plugin_check(file: &std::path::Path, args: &ProviderArgs) -> Result<ExitCode> {
    let report = diagmon::egress::check_component(file).await?;
    out!("{report}");
    if !report.is_ok() {
        return Ok(ExitCode::FAILURE);
    }
    let Some((name, provider, cache_directory)) =
        configured_provider(&file.to_string_lossy(), args)?
    else {
        return Ok(ExitCode::SUCCESS);
    };
    let egress = EgressConfig {
        providers: [(name.clone(), provider)].into_iter().collect(),
        cache_directory,
    };
    match EgressHost::load(&egress).await {
        Ok(_) => {
            outln!(
                "settings:  OK: `configure` accepted the settings and grants of [egress.providers.{name}]"
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            outln!("settings:  REFUSED: {error}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `diagmon plugin test`: the conformance suite.
async fn plugin_test(file: &str, args: &ProviderArgs, large_mib: u64) -> Result<ExitCode> {
    let mut scratch = None;
    let (name, provider, cache_directory) = match configured_provider(file, args)? {
        Some(configured) => configured,
        None => {
            let directory =
                std::env::temp_dir().join(format!("diagmon-plugin-test-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&directory)
                .with_context(|| format!("cannot create {}", directory.display()))?;
            let mut provider = ProviderConfig::new(file);
            provider.directory = Some(directory.clone());
            scratch = Some(directory);
            ("under-test".to_owned(), provider, None)
        }
    };
    let options = ConformanceOptions {
        name,
        provider,
        cache_directory,
        large_bytes: large_mib.saturating_mul(1 << 20),
    };
    let report = run_conformance(&options).await;
    out!("{report}");
    if let Some(directory) = scratch {
        // Best effort: the scratch directory is in the temporary directory anyway.
        let _ = std::fs::remove_dir_all(directory);
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Commands::Collect(args) => collect(args).await,
        Commands::Plugin(PluginCommand::Check { file, provider }) => {
            plugin_check(&file, &provider).await
        }
        Commands::Plugin(PluginCommand::New { lang, name }) => {
            let files = write_template(&name, lang).map_err(anyhow::Error::msg)?;
            outln!("wrote {}:", name.display());
            for file in files {
                outln!("  {}", file.display());
            }
            outln!(
                "build it with {}/build.sh; its README says what next",
                name.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Commands::Plugin(PluginCommand::Test {
            file,
            provider,
            large_mib,
        }) => plugin_test(&file, &provider, large_mib).await,
        Commands::Generatekey { output, expiration } => {
            let key = generate_key(expiration)?;
            out!("{}", render_key(&key, output));
            Ok(ExitCode::SUCCESS)
        }
        Commands::Config(ConfigCommand::Show { config }) => {
            let file = config::config_file(config.as_deref());
            let config = config::load(file.as_deref(), serde_json::json!({}))?;
            // The rules are read when the monitor starts: check them here as it will, against
            // the configured egress providers.
            let providers: Vec<String> = config.egress.providers.keys().cloned().collect();
            diagmon::rules::config::parse(&config.collection_rules, &providers)?;
            out!("{}", config.to_redacted_toml());
            Ok(ExitCode::SUCCESS)
        }
        Commands::Ps { discovery, json } => {
            let processes = directory(&discovery).await?.list().await;
            if json {
                outln!("{}", serde_json::to_string_pretty(&processes)?);
            } else {
                outln!("{:>8}  {:<36}  {:<16}  COMMAND LINE", "PID", "UID", "NAME");
                for process in processes {
                    outln!(
                        "{:>8}  {:<36}  {:<16}  {}",
                        process.pid,
                        process.uid,
                        process.name,
                        process.command_line
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Commands::Trace(args) => trace(args).await,
        Commands::Dump(args) => dump(args).await,
        Commands::Gcdump(args) => gcdump(args).await,
        Commands::Counters(args) => counters(args).await,
        Commands::Validate { file } => match nettrace::validate_file(&file) {
            Ok(summary) => {
                outln!("{}", serde_json::to_string_pretty(&summary)?);
                Ok(ExitCode::SUCCESS)
            }
            Err(error) => {
                eprintln!("error: {}: {error}", file.display());
                Ok(ExitCode::from(if error.is_truncated() { 2 } else { 1 }))
            }
        },
    }
}

async fn collect(args: CollectArgs) -> Result<ExitCode> {
    let stop = server::signals::stop_signal().context("cannot watch SIGTERM and SIGINT")?;
    let file = config::config_file(args.config.as_deref());
    let overrides = if args.urls.is_empty() {
        serde_json::json!({})
    } else {
        serde_json::json!({ "urls": args.urls })
    };
    let config = config::load(file.as_deref(), overrides)?;
    if let Some(file) = &file {
        tracing::info!(file = %file.display(), "configuration loaded");
    }
    let auth = if args.no_auth {
        tracing::warn!(
            "AUTHENTICATION IS DISABLED (--no-auth): anyone who can reach the API can trace processes"
        );
        ServerAuth {
            authenticator: Authenticator::disabled(),
            watched_file: None,
            no_auth_on_network: args.allow_no_auth_on_network,
        }
    } else if args.temp_apikey {
        let (authenticator, token) = Authenticator::temporary()?;
        // Without it nobody can call the API: a closed output is an error here, not a quiet end.
        std::io::Write::write_fmt(
            &mut std::io::stdout().lock(),
            format_args!("Authorization: Bearer {token}\n"),
        )
        .context("cannot print the temporary API key")?;
        ServerAuth {
            authenticator,
            watched_file: None,
            no_auth_on_network: false,
        }
    } else {
        ServerAuth {
            authenticator: Authenticator::from_config(&config.authentication),
            watched_file: file.clone(),
            no_auth_on_network: false,
        }
    };
    server::run(config, auth, file, stop).await?;
    Ok(ExitCode::SUCCESS)
}

async fn directory(args: &DiscoveryArgs) -> Result<ProcessDirectory> {
    let discovery = match (&args.diagnostic_port, &args.socket_dir) {
        (Some(port), _) => {
            let port = ReversePort::bind(port, PortLimits::default())
                .await
                .with_context(|| format!("cannot listen on {}", port.display()))?;
            // Give runtimes that are already retrying a moment to connect and advertise.
            tokio::time::sleep(Duration::from_millis(600)).await;
            Discovery::Listen(port)
        }
        (None, Some(dir)) => Discovery::Connect {
            socket_dir: dir.clone(),
        },
        (None, None) => Discovery::Connect {
            socket_dir: endpoint::default_socket_dir(),
        },
    };
    Ok(ProcessDirectory::new(discovery, Timeouts::default()))
}

/// `diagmon trace`: the trace goes through the same pipeline as `POST /trace`, into a file.
async fn trace(args: TraceArgs) -> Result<ExitCode> {
    let directory = directory(&args.discovery).await?;
    let mut session = if args.providers.is_empty() {
        profiles::session_config("Cpu").map_err(anyhow::Error::msg)?
    } else {
        SessionConfig::new(args.providers)
    };
    session.buffer_size_mb = args.buffer_size_mb;
    if args.no_rundown {
        session.rundown = Rundown::Off;
    }
    let config = config::Config::default();
    let registry = Arc::new(OperationRegistry::new(&config.limits, &config.operations));
    let operations = Operations::new(registry, directory, EgressHost::default(), &config);
    let request = StartRequest {
        artifact: TraceSpec::new(session),
        target: ProcessSelector {
            pid: args.pid,
            uid: args.uid,
            name: args.name,
        },
        destination: Destination::File(args.output.clone()),
        tags: BTreeSet::new(),
        duration: Some(args.duration),
    };
    let status = run_to_end(&operations, request, OnCtrlC::Stop, |operation| {
        let process = operation.process();
        eprintln!(
            "tracing process {} ({}) for {}; Ctrl-C stops early",
            process.pid,
            process.name,
            humantime::format_duration(args.duration)
        );
    })
    .await?;
    match (status.summary, status.error) {
        (Some(summary), _) => {
            eprintln!(
                "wrote {} ({} bytes, {} events, sha256 {})",
                args.output.display(),
                summary.bytes,
                summary.events.unwrap_or_default(),
                summary.sha256
            );
            Ok(ExitCode::SUCCESS)
        }
        (None, Some(error)) => bail!(
            "the trace in {} is incomplete: {} ({})",
            args.output.display(),
            error.message,
            error.code
        ),
        (None, None) => bail!(
            "the trace in {} is incomplete: the operation ended {:?}",
            args.output.display(),
            status.status
        ),
    }
}

/// What Ctrl-C does to a capture the CLI runs.
enum OnCtrlC {
    /// Stop it gracefully: what was captured so far is a complete artifact (a trace).
    Stop,
    /// Cancel it: nothing is kept.
    Cancel,
}

/// Starts `request`, calls `started` with its operation, and waits for its end, which Ctrl-C
/// brings forward as `on_ctrl_c` says; returns the final status.
async fn run_to_end<A: ArtifactSpec>(
    operations: &Operations,
    request: StartRequest<A>,
    on_ctrl_c: OnCtrlC,
    started: impl FnOnce(&Operation),
) -> Result<OperationStatus> {
    let operation = operations
        .start(request)
        .await
        .map_err(|error| match error {
            StartError::Process(error) => {
                anyhow::anyhow!("{error} (`diagmon ps` lists the processes diagmon can see)")
            }
            other => anyhow::Error::new(other),
        })?
        .operation;
    started(&operation);
    tokio::select! {
        _ = operation.finished() => {}
        _ = tokio::signal::ctrl_c() => {
            let _ = match on_ctrl_c {
                OnCtrlC::Stop => operation.request_stop(),
                OnCtrlC::Cancel => operation.cancel(),
            };
            operation.finished().await;
        }
    }
    Ok(operation.status())
}

/// `diagmon dump`: the same artifact as `GET /dump` (the runtime writes the dump into the dump
/// folder; it is copied to the output file and deleted), printing what `dotnet-dump collect`
/// prints.
async fn dump(args: DumpArgs) -> Result<ExitCode> {
    let file = config::config_file(args.config.as_deref());
    let config = config::load(file.as_deref(), serde_json::json!({}))?;
    let folder = diagmon::dumps::DumpFolder::open(&config.storage)?;
    let directory = directory(&args.discovery).await?;
    let output = match &args.output {
        Some(output) => output.clone(),
        None => PathBuf::from(
            diagmon::egress::ArtifactKind::Dump.file_name(std::time::SystemTime::now(), 0),
        ),
    };
    let output = std::path::absolute(&output)
        .with_context(|| format!("cannot resolve {}", output.display()))?;
    let registry = Arc::new(OperationRegistry::new(&config.limits, &config.operations));
    let operations = Operations::new(registry, directory, EgressHost::default(), &config);
    outln!(
        "Writing {} to {}",
        args.dump_type.description(),
        output.display()
    );
    let request = StartRequest {
        artifact: diagmon::dumps::DumpSpec {
            folder,
            dump_type: args.dump_type,
        },
        target: ProcessSelector {
            pid: args.pid,
            uid: args.uid,
            name: args.name,
        },
        destination: Destination::File(output.clone()),
        tags: BTreeSet::new(),
        duration: None,
    };
    let status = run_to_end(&operations, request, OnCtrlC::Cancel, |_| {}).await?;
    match (status.summary, status.error) {
        (Some(summary), _) => {
            outln!("Wrote {} bytes (sha256 {})", summary.bytes, summary.sha256);
            outln!("Complete");
            Ok(ExitCode::SUCCESS)
        }
        (None, error) => {
            let _ = std::fs::remove_file(&output);
            match error {
                Some(error) => bail!("no dump was written: {} ({})", error.message, error.code),
                None => bail!(
                    "no dump was written: the operation ended {:?}",
                    status.status
                ),
            }
        }
    }
}

/// `diagmon gcdump`: the same artifact as `GET /gcdump`, written to a file; or
/// `diagmon gcdump report FILE`.
async fn gcdump(args: GcdumpArgs) -> Result<ExitCode> {
    if let Some(GcdumpCommand::Report(report)) = args.command {
        return gcdump_report(report);
    }
    let timeout = Duration::try_from_secs_f64(args.timeout)
        .ok()
        .filter(|timeout| !timeout.is_zero() && *timeout <= diagmon::gcdump::MAX_TIMEOUT)
        .with_context(|| {
            format!(
                "--timeout {} is not a number of seconds above 0 and at most {}",
                args.timeout,
                diagmon::gcdump::MAX_TIMEOUT.as_secs()
            )
        })?;
    let file = config::config_file(args.config.as_deref());
    let config = config::load(file.as_deref(), serde_json::json!({}))?;
    let directory = directory(&args.discovery).await?;
    let target = ProcessSelector {
        pid: args.pid,
        uid: args.uid,
        name: args.name,
    };
    let output = match &args.output {
        Some(output) => output.clone(),
        None => {
            let processes = directory.list().await;
            let pid = diagmon::processes::resolve(&processes, &target, &Default::default())
                .map(|process| process.pid)
                .unwrap_or(0);
            PathBuf::from(
                diagmon::egress::ArtifactKind::GcDump.file_name(std::time::SystemTime::now(), pid),
            )
        }
    };
    let output = std::path::absolute(&output)
        .with_context(|| format!("cannot resolve {}", output.display()))?;
    let registry = Arc::new(OperationRegistry::new(&config.limits, &config.operations));
    let operations = Operations::new(registry, directory, EgressHost::default(), &config);
    outln!(
        "Writing a heap snapshot to {} (the process pauses for a full blocking GC)",
        output.display()
    );
    let request = StartRequest {
        artifact: diagmon::gcdump::GcDumpSpec {
            timeout,
            report: true,
        },
        target,
        destination: Destination::File(output.clone()),
        tags: BTreeSet::new(),
        duration: None,
    };
    let status = run_to_end(&operations, request, OnCtrlC::Cancel, |_| {}).await?;
    match (status.summary, status.error) {
        (Some(summary), _) => {
            outln!("Wrote {} bytes (sha256 {})", summary.bytes, summary.sha256);
            if let Some(capture) = summary
                .report
                .as_ref()
                .and_then(|report| report.get("capture"))
            {
                outln!(
                    "{} objects, {} references, {} roots; {} nettrace bytes read in {} ms",
                    capture["nodes"],
                    capture["edges"],
                    capture["roots"],
                    capture["nettraceBytes"],
                    capture["milliseconds"]
                );
            }
            outln!("Complete");
            Ok(ExitCode::SUCCESS)
        }
        (None, error) => {
            let _ = std::fs::remove_file(&output);
            match error {
                Some(error) => bail!("no gcdump was written: {} ({})", error.message, error.code),
                None => bail!(
                    "no gcdump was written: the operation ended {:?}",
                    status.status
                ),
            }
        }
    }
}

/// `diagmon gcdump report FILE [--json] [--top N]`.
fn gcdump_report(args: GcdumpReportArgs) -> Result<ExitCode> {
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let report = diagmon::gcdump::report_of_file(&bytes, args.top)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        out!("{}", diagmon::gcdump::report::render(&report));
    }
    Ok(ExitCode::SUCCESS)
}

async fn counters(args: CountersArgs) -> Result<ExitCode> {
    use diagmon::metrics::console::{self, ViewMode};
    use diagmon::metrics::counters::CounterRequest;
    use std::io::IsTerminal;
    let directory = directory(&args.discovery).await?;
    let selector = ProcessSelector {
        pid: args.pid,
        uid: args.uid,
        name: args.name,
    };
    let processes = directory.list().await;
    let process = diagmon::processes::resolve(&processes, &selector, &Default::default()).map_err(
        |error| anyhow::anyhow!("{error}; `diagmon ps` lists the processes diagmon sees"),
    )?;
    let request = CounterRequest {
        providers: args.providers,
        meters: Vec::new(),
        interval: Duration::from_secs(args.interval),
    };
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        let duration = args.duration;
        async move {
            match duration {
                Some(duration) => tokio::select! {
                    _ = tokio::time::sleep(duration) => {}
                    _ = tokio::signal::ctrl_c() => {}
                },
                None => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
            stop.cancel();
        }
    });
    let mut stdout = std::io::stdout();
    let mode = if stdout.is_terminal() {
        ViewMode::Terminal
    } else {
        ViewMode::Lines
    };
    let title = format!("Process {} ({}); Ctrl-C quits", process.pid, process.name);
    console::watch(
        &directory.client(process),
        &request,
        &stop,
        mode,
        &title,
        &mut stdout,
    )
    .await
    .with_context(|| format!("cannot watch the counters of process {}", process.pid))?;
    Ok(ExitCode::SUCCESS)
}
