//! The `converge` command: CLI, config, telemetry and exit codes only.
//!
//! Exit codes (PRODUCT.md): `validate` and `render` 0 valid / 1 invalid /
//! 2 error; `plan` 0 no changes / 1 changes / 2 error; `run` 0 ok / 2 error;
//! `claim` as its subcommands' `--help` says (`claim_cli`).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use converge::config::Config;
use converge::plan::{self, Format as PlanFormat};
use converge::source::{Content, Snapshot, SourceKind};
use converge::{Converge, Memory, Mode, PassOptions, source};

// The pipeline allocates many small objects from several threads; mimalloc
// is faster than glibc's allocator at that and returns memory more readily.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "converge",
    version,
    about = "A declarative GitOps reconciler for environment claims"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ValidateFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Reconcile: read the sources, plan and apply (`--once`: one pass, then exit).
    Run {
        /// The config file (relative paths in it resolve against its directory).
        #[arg(long, default_value = "converge.yaml")]
        config: PathBuf,
        /// Do one pass and exit.
        #[arg(long)]
        once: bool,
        /// Allow this run to apply a plan over the mass-deletion threshold
        /// (`--once` only; the daemon reads `<state_dir>/allow-mass-delete`).
        #[arg(long, requires = "once")]
        allow_mass_delete: bool,
        /// Serve the API here instead of `api.listen` (port 0 picks a free port).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Read the API: every environment as a table, or one environment in full.
    Status {
        /// The API's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8090")]
        url: String,
        /// A file holding the API's bearer token.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// PEM CA certificate to trust for an https URL.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = ValidateFormat::Text)]
        format: ValidateFormat,
        /// One environment's conditions, versions and history.
        environment: Option<String>,
    },
    /// Check claim files (or directories of them) against the schema and policies.
    Validate {
        /// The config file (its schema, policies and presets); default:
        /// ./converge.yaml if present, else the built-in ones.
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = ValidateFormat::Text)]
        format: ValidateFormat,
        /// Claim files, or directories of them.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Show what a pass would change, without applying it; with `--repo`, what
    /// merging a pull request (`--head` into `--base`) would change.
    Plan {
        /// The config file; default: ./converge.yaml.
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
        format: PlanFormat,
        /// A local git repository (a CI checkout) to read both revisions from.
        #[arg(long, requires_all = ["base", "head"])]
        repo: Option<PathBuf>,
        /// The revision merged into (e.g. origin/main).
        #[arg(long, requires = "repo")]
        base: Option<String>,
        /// The pull request's revision (e.g. HEAD).
        #[arg(long, requires = "repo")]
        head: Option<String>,
    },
    /// Print the resources one claim becomes, as YAML.
    Render {
        /// The config file (presets, templates); default: ./converge.yaml if
        /// present, else the built-in ones.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The claim file to render.
        claim: PathBuf,
        /// Print the `Secret`'s decrypted values (base64) instead of `***`.
        #[arg(long)]
        show_secrets: bool,
    },
    /// Ask for an environment: write, upload, remove or extend a claim
    /// (exit codes per subcommand in its --help).
    Claim {
        #[command(subcommand)]
        command: converge::claim_cli::Command,
    },
}

fn main() -> ExitCode {
    // One TLS crypto provider for the whole process (the API server and the
    // status client), installed before anything builds a TLS config.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match execute(cli.command) {
        Ok(code) => ExitCode::from(code),
        // A reader that stopped reading (`converge render … | head`) is
        // not an error: stop quietly, as `cat` does.
        Err(e) if broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // Never a panic when stderr is gone too.
            let _ = writeln!(std::io::stderr(), "error: {}", one_line(&e));
            ExitCode::from(2)
        }
    }
}

/// Whether writing to a closed pipe is what failed.
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// An error and its causes on one line. A cause whose text the line already
/// holds is left out: errors name their cause in their own message too.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CONVERGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal, and never with NO_COLOR set: logs written
    // to files and pipes stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Loads the config; an optional, absent default means the built-in defaults.
fn load_config(path: Option<&Path>) -> Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None if Path::new("converge.yaml").exists() => {
            Ok(Config::load(Path::new("converge.yaml"))?)
        }
        None => {
            let _ = writeln!(
                std::io::stderr(),
                "note: no --config and no ./converge.yaml: the built-in schema, policies and presets, and no tag source (give --config FILE)"
            );
            Ok(Config::default())
        }
    }
}

fn execute(command: Command) -> Result<u8> {
    match command {
        Command::Run {
            config,
            once,
            allow_mass_delete,
            listen,
        } => {
            if once {
                run_once(&config, allow_mass_delete)
            } else {
                daemon(&config, listen)
            }
        }
        Command::Status {
            url,
            token_file,
            ca_file,
            format,
            environment,
        } => {
            let options = converge::status_client::Options {
                url,
                token_file,
                ca_file,
                json: format == ValidateFormat::Json,
                environment,
            };
            std::io::stdout()
                .lock()
                .write_all(converge::status_client::status(&options)?.as_bytes())?;
            Ok(0)
        }
        Command::Validate {
            config,
            format,
            paths,
        } => validate(config.as_deref(), format, &paths),
        Command::Plan {
            config,
            format,
            repo,
            base,
            head,
        } => match (repo, base, head) {
            (Some(repo), Some(base), Some(head)) => {
                pr_plan(config.as_deref(), format, &repo, &base, &head)
            }
            _ => plan(
                config.as_deref().unwrap_or(Path::new("converge.yaml")),
                format,
            ),
        },
        Command::Render {
            config,
            claim,
            show_secrets,
        } => render(config.as_deref(), &claim, show_secrets),
        Command::Claim { command } => Ok(converge::claim_cli::execute(command)?),
    }
}

/// `run` refuses a config without sources: it would start, pass over
/// nothing and report ready while reconciling nothing.
fn config_with_sources(path: &Path) -> Result<Config> {
    let config = Config::load(path)?;
    if config.sources.is_empty() {
        bail!(
            "{}: sources: none are configured, so there is nothing to reconcile: name at least one (README, \"Configuration\")",
            path.display()
        );
    }
    Ok(config)
}

fn daemon(config: &Path, listen: Option<String>) -> Result<u8> {
    let converge = Converge::new(config_with_sources(config)?)?.with_installation_key()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received: finishing the current step");
            let _ = tx.send(true);
        });
        Box::pin(converge::daemon::run(converge, listen, rx)).await
    })?;
    Ok(0)
}

/// SIGTERM or SIGINT.
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler installs");
    let mut int = signal(SignalKind::interrupt()).expect("a SIGINT handler installs");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn run_once(config: &Path, allow_mass_delete: bool) -> Result<u8> {
    let mut converge = Converge::new(config_with_sources(config)?)?.with_installation_key()?;
    // One writer per state dir and manifests directory: a daemon (or
    // another `run --once`) holds them.
    let _locks = converge.writer_locks()?;
    let snapshots = converge.read_sources()?;
    let options = PassOptions {
        now: chrono::Utc::now(),
        mode: Mode::Apply { observe: false },
        allow_mass_delete,
    };
    let outcome = converge.pass(snapshots, &BTreeSet::new(), options, &mut Memory::default())?;
    for d in &outcome.plan.diagnostics {
        tracing::warn!(file = %d.file, pointer = %d.pointer, rule = %d.rule, environment = d.environment.as_deref().unwrap_or(""), "{}", d.message);
    }
    let report = outcome.report.expect("a run applies");
    let counters = outcome.counters;
    tracing::info!(
        files = counters.files,
        rendered = counters.rendered,
        applied = report.applied.len(),
        failed = report.failed.len(),
        unchanged = outcome.plan.unchanged,
        untouched = outcome.plan.untouched.len(),
        "pass done"
    );
    for d in &outcome.plan.drift {
        if d.corrected && report.applied.contains(&d.environment) {
            tracing::warn!(environment = %d.environment, object = %d.object, reason = "DriftCorrected", "applied again: {}", d.how);
        } else {
            tracing::warn!(environment = %d.environment, object = %d.object, reason = "Drifted", "drifted, not applied again: {}", d.how);
        }
    }
    if let Some(hold) = &outcome.plan.hold {
        let _ = writeln!(std::io::stderr(), "error: plan held: {}", hold.message);
        return Ok(2);
    }
    for (env, e) in &report.failed {
        let _ = writeln!(std::io::stderr(), "error: environment {env}: {e}");
    }
    Ok(if report.failed.is_empty() { 0 } else { 2 })
}

/// The source name of files read from the command line (what policies see
/// as `context.source.name` and messages name): the paths as given.
fn paths_name(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

fn validate(config: Option<&Path>, format: ValidateFormat, paths: &[PathBuf]) -> Result<u8> {
    let config = load_config(config)?;
    let mut pipeline = converge::pipeline_for(&config)?;
    let snapshot =
        source::dir::read_paths(&paths_name(paths), paths, config.limits.max_file_bytes)?;
    let now = chrono::Utc::now();
    let snapshots = [snapshot];
    let validated = pipeline.validate(&snapshots, now);
    let (files, mut diagnostics) = (validated.files, validated.diagnostics);
    let unchecked = validated.secrets_unchecked;
    let versions = converge::check_versions(&config, &pipeline, &snapshots, now)?;
    diagnostics.extend(versions.diagnostics);
    // Services' own manifests: fetched, built, substituted and fenced for
    // each claim, at the versions it resolves to.
    pipeline.tags = versions.tags;
    let (manifests_checked, problems) = pipeline.check_manifests(&snapshots, now);
    diagnostics.extend(problems);
    diagnostics.sort_by(|a, b| a.file.cmp(&b.file).then_with(|| a.pointer.cmp(&b.pointer)));
    if pipeline.policies.users() == 0
        && let Some(notice) = converge::identities_notice(&config, &pipeline)
    {
        let _ = writeln!(std::io::stderr(), "warning: {notice}");
    }
    let mut out = std::io::stdout().lock();
    let invalid: std::collections::BTreeSet<&str> =
        diagnostics.iter().map(|d| d.file.as_str()).collect();
    match format {
        ValidateFormat::Text => {
            for d in &diagnostics {
                writeln!(out, "{d}")?;
            }
            if !versions.no_source {
                for u in &versions.unchecked {
                    writeln!(out, "not checked: {u}")?;
                }
            }
            writeln!(out, "{} of {files} files valid", files - invalid.len())?;
            if versions.no_source && !versions.unchecked.is_empty() {
                writeln!(
                    out,
                    "versions: {} constraints not checked: no tag source is configured (versions.from, or tags: lists, in the config that --config names)",
                    versions.unchecked.len()
                )?;
            } else if !versions.unchecked.is_empty() {
                writeln!(
                    out,
                    "versions: {} constraints checked against the tags that exist; {} could not be checked",
                    versions.checked,
                    versions.unchecked.len()
                )?;
            }
            if manifests_checked > 0 {
                writeln!(
                    out,
                    "manifests: services' own manifests checked for {manifests_checked} claims"
                )?;
            }
            if unchecked > 0 {
                writeln!(
                    out,
                    "{unchecked} files carry SOPS secrets that were not decrypted or MAC-checked: no age key is configured (secrets.age_key_files)"
                )?;
            }
        }
        ValidateFormat::Json => {
            let mut doc = serde_json::json!({"files": files, "invalid": invalid.len(), "secrets_unchecked": unchecked, "diagnostics": diagnostics,
                "versions": {"checked": versions.checked, "unchecked": versions.unchecked}});
            if manifests_checked > 0 {
                doc["manifests"] = serde_json::json!({"checked": manifests_checked});
            }
            writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        }
    }
    Ok(u8::from(!diagnostics.is_empty()))
}

fn plan(config: &Path, format: PlanFormat) -> Result<u8> {
    let mut converge = Converge::new(Config::load(config)?)?;
    let snapshots = converge.read_sources()?;
    let options = PassOptions {
        now: chrono::Utc::now(),
        mode: Mode::Plan { preview: true },
        allow_mass_delete: false,
    };
    let outcome = converge.pass(snapshots, &BTreeSet::new(), options, &mut Memory::default())?;
    print_plan(&outcome.plan, format)?;
    Ok(u8::from(outcome.plan.has_changes()))
}

fn pr_plan(
    config: Option<&Path>,
    format: PlanFormat,
    repo: &Path,
    base: &str,
    head: &str,
) -> Result<u8> {
    let config = load_config(config)?;
    let pr = converge::PullRequest { repo, base, head };
    let (plan, _) = converge::pull_request_plan(&config, &pr, chrono::Utc::now())?;
    print_plan(&plan, format)?;
    Ok(u8::from(plan.has_changes()))
}

/// Streams a plan to stdout.
fn print_plan(plan: &plan::Plan, format: PlanFormat) -> Result<()> {
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let written =
        plan::write(plan, format, &mut out).and_then(|()| std::io::Write::flush(&mut out));
    match written {
        // `converge plan | head`: the reader has seen enough.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn render(config: Option<&Path>, claim: &Path, show_secrets: bool) -> Result<u8> {
    let config = load_config(config)?;
    let pipeline = converge::pipeline_for(&config)?;
    let claims = [claim.to_owned()];
    let snapshot =
        source::dir::read_paths(&paths_name(&claims), &claims, config.limits.max_file_bytes)?;
    let Some(file) = snapshot.files.first() else {
        bail!("{} is not a claim file", claim.display())
    };
    if let Content::Unreadable(e) = &file.content {
        bail!("cannot read {}: {e}", claim.display());
    }
    let one = Snapshot {
        files: vec![file.clone()],
        kind: SourceKind::Dir,
        ..snapshot
    };
    let eval = pipeline.evaluate(
        std::slice::from_ref(&one),
        &converge::target::Inventory::default(),
        converge::pipeline::Options {
            now: chrono::Utc::now(),
        },
    );
    for d in &eval.diagnostics {
        let _ = writeln!(std::io::stderr(), "{d}");
    }
    let Some(desired) = eval.desired.values().next() else {
        if let Some(at) = eval.expired.values().next() {
            let _ = writeln!(
                std::io::stderr(),
                "{}: /: environment expired at {} (expired)",
                file.path,
                converge::render::timestamp(*at)
            );
        }
        return Ok(1);
    };
    let rendered = pipeline.renderer.render(
        &desired.claim,
        &desired.record.versions,
        desired.expires_at,
        desired.secrets.as_deref(),
    )?;
    let mut out = std::io::stdout().lock();
    for (i, r) in rendered.iter().enumerate() {
        if i > 0 {
            writeln!(out, "---")?;
        }
        if show_secrets {
            out.write_all(r.yaml.as_bytes())?;
        } else {
            out.write_all(r.redacted_yaml().as_bytes())?;
        }
    }
    Ok(0)
}
