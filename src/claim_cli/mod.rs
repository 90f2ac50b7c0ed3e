//! `converge claim`: the application team's side. Writes a claim
//! (`new`), validates it exactly as the daemon would for a bucket source and
//! uploads it (`put`), removes it (`rm`), moves its expiry (`extend`), and
//! follows the environment through the read-only API until it is applied
//! (`--wait`).
//!
//! Everything is shared with the daemon: the config names the source (its
//! bucket, prefix, endpoint and credentials, through
//! [`S3Source`](crate::source::s3::S3Source)); the pipeline's own stages
//! (`Pipeline::validate`, `check_versions`) judge the bytes with that
//! source's provenance; writes are conditional on the `ETag`
//! (`source/s3/write.rs` says which servers enforce it).
//!
//! The files: `new.rs` (a claim from flags), `bucket.rs` (the source, its
//! keys, validation with its provenance), `put.rs`, `edit.rs` (`rm`,
//! `extend`), `wait.rs` (following the API), `propose.rs` (a pull request
//! through a git source's forge).
//!
//! Exit codes: 0 ok; 1 invalid (nothing written), or with `--wait` the
//! environment Stalled, Failed or refused; 2 an error (config, bucket,
//! credentials, a concurrent write, the API).

mod bucket;
mod edit;
mod new;
mod propose;
mod put;
mod wait;

use std::path::PathBuf;
use std::time::Duration;

pub use self::new::Format;

/// `converge claim …`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Write a new claim (stdout by default) that passes the schema.
    ///
    /// Exit codes: 0 written, 2 error (no user, an invalid value).
    New {
        /// The environment's name (a DNS-1123 label).
        name: String,
        /// dev, stage, prod or sue.
        #[arg(long = "type")]
        env_type: String,
        /// The team pool it belongs to.
        #[arg(long)]
        pool: String,
        /// The owner; default: `claims.default_user` from the config.
        #[arg(long)]
        user: Option<String>,
        /// Services at their versions: `user-service=^1.2.0,billing=1.x.x.x`.
        #[arg(long, value_delimiter = ',')]
        services: Vec<String>,
        /// An expiry this long after now (`expiration_date`); default: none
        /// (the type's preset `ttl`, if any, applies).
        #[arg(long, value_parser = parse_duration)]
        expires: Option<Duration>,
        #[arg(long, value_enum, default_value_t = Format::Yaml)]
        format: Format,
        /// Where to write it (`-`: stdout, the default).
        #[arg(short = 'o', long = "output", default_value = "-")]
        output: PathBuf,
        /// Also print every service the environment will run: the named
        /// ones and what the service catalog's `depends_on` brings (on
        /// stderr when the claim goes to stdout).
        #[arg(long)]
        show_closure: bool,
        /// The config (presets, schema, catalog, `claims.default_user`);
        /// default: ./converge.yaml if present, else the built-in ones.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate claim files as the daemon would for the bucket source, then
    /// upload them (all or none).
    ///
    /// Exit codes: 0 uploaded (with --wait: applied and Ready), 1 some
    /// claim invalid and nothing uploaded (with --wait: Stalled, Failed or
    /// refused by the daemon), 2 error.
    Put {
        /// Claim files; `-` reads one from stdin.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The `s3` source (by name) to upload to.
        #[arg(long)]
        source: String,
        /// Replace an existing object (only the version found when the
        /// command starts: a concurrent write is an error); without it an
        /// existing object is never overwritten.
        #[arg(long)]
        replace: bool,
        /// Replace only the object at this `ETag` (as `put` printed it).
        #[arg(long, value_name = "ETAG")]
        if_match: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Remove a claim object from the bucket source (asks first on a terminal).
    ///
    /// Exit codes: 0 removed (with --wait: the environment is gone), 1 with
    /// --wait: the deletion is held or failed, 2 error.
    Rm {
        /// The environment's name.
        name: String,
        #[arg(long)]
        source: String,
        /// Do not ask (needed without a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Move a dynamic environment's `expiration_date` later, capped by its
    /// type's `max_lifetime` (presets).
    ///
    /// Exit codes: 0 moved, 1 the edited claim is invalid, 2 error (a
    /// concurrent edit among them).
    Extend {
        /// The environment's name.
        name: String,
        /// How much later (`24h`, `3d`).
        #[arg(long, value_parser = parse_duration)]
        by: Duration,
        #[arg(long)]
        source: String,
        /// Change only the object at this `ETag`.
        #[arg(long, value_name = "ETAG")]
        if_match: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Propose a claim for review: judged as the daemon would judge it
    /// from the git source, then a branch, a commit and a pull request
    /// into the tracked branch through the source's forge (its URL printed).
    ///
    /// Exit codes: 0 opened (with --wait: and its plan would apply), 1 the
    /// claim is invalid (nothing opened) or, with --wait, the plan names a
    /// problem, 2 error.
    Propose {
        /// The claim file (`-`: stdin).
        file: PathBuf,
        /// The git source (by name) whose repository gets the pull request.
        #[arg(long)]
        source: String,
        /// The pull request's title (and commit message); default `claim: NAME`.
        #[arg(long)]
        title: Option<String>,
        /// The file's path in the repository; default: `NAME.yaml` in the
        /// directory of the source's first path glob.
        #[arg(long)]
        path: Option<String>,
        /// The config file.
        #[arg(long, default_value = "converge.yaml")]
        config: PathBuf,
        /// Wait for converge's plan on the pull request (its plan status on
        /// the head) and print the plan comment; exit 1 when the plan names
        /// a problem.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits before giving up (exit 2).
        #[arg(long, value_parser = parse_duration, default_value = "10m")]
        wait_timeout: Duration,
    },
}

/// The options `put`, `rm` and `extend` share.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// The config file (relative paths in it resolve against its directory).
    #[arg(long, default_value = "converge.yaml")]
    pub config: PathBuf,
    /// Follow the environment through the API until it is applied (put,
    /// extend) or gone (rm).
    #[arg(long)]
    pub wait: bool,
    /// The API's base URL for --wait; default: the config's `api.listen`.
    #[arg(long)]
    pub url: Option<String>,
    /// The API's bearer token for --wait; default: the config's `api.token_file`.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// PEM CA certificate to trust for an https URL.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// How long --wait follows before giving up (exit 2).
    #[arg(long, value_parser = parse_duration, default_value = "10m")]
    pub wait_timeout: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::config::parse_duration(s)
}

/// Why a `converge claim` command failed (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] crate::config::Error),
    #[error(transparent)]
    Setup(#[from] crate::SetupError),
    #[error(transparent)]
    Source(#[from] crate::source::Error),
    #[error(transparent)]
    Bucket(#[from] crate::source::s3::Error),
    #[error(transparent)]
    Write(#[from] crate::source::s3::WriteError),
    #[error(transparent)]
    Api(#[from] crate::status_client::Error),
    #[error("cannot read {path}: {error}")]
    Read {
        path: String,
        #[source]
        error: std::io::Error,
    },
    #[error("cannot write {path}: {error}")]
    WriteFile {
        path: String,
        #[source]
        error: std::io::Error,
    },
    #[error(transparent)]
    Forge(#[from] crate::forge::Error),
    /// What the user can change: a flag, the config, the bucket's content.
    #[error("{0}")]
    Refused(String),
}

/// Runs one `converge claim` command; the exit code.
pub fn execute(command: Command) -> Result<u8, Error> {
    match command {
        Command::New {
            name,
            env_type,
            pool,
            user,
            services,
            expires,
            format,
            output,
            show_closure,
            config,
        } => new::run(&new::Options {
            name,
            env_type,
            pool,
            user,
            services,
            expires,
            format,
            output,
            show_closure,
            config,
        }),
        Command::Put {
            files,
            source,
            replace,
            if_match,
            common,
        } => put::run(&files, &source, replace, if_match.as_deref(), &common),
        Command::Rm {
            name,
            source,
            yes,
            common,
        } => edit::rm(&name, &source, yes, &common),
        Command::Extend {
            name,
            by,
            source,
            if_match,
            common,
        } => edit::extend(&name, by, &source, if_match.as_deref(), &common),
        Command::Propose {
            file,
            source,
            title,
            path,
            config,
            wait,
            wait_timeout,
        } => propose::run(&propose::Options {
            file: &file,
            source: &source,
            title: title.as_deref(),
            path: path.as_deref(),
            config: &config,
            wait: wait.then_some(wait_timeout),
        }),
    }
}

/// A line on stderr (a closed stderr is not an error).
fn note(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}
