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
//! `extend`), `wait.rs` (following the API).
//!
//! Exit codes: 0 ok; 1 invalid (nothing written), or with `--wait` the
//! environment Stalled, Failed or refused; 2 an error (config, bucket,
//! credentials, a concurrent write, the API).

mod new;

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
    }
}

/// A line on stderr (a closed stderr is not an error).
fn note(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}
