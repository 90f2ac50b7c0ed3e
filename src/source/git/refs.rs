//! What the pull-request poller reads from a git source's remote beyond its
//! tracked branch: named refs fetched into a bare repository of the
//! caller's (a PR's head), and the merge base a PR's head is compared with.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicBool;

use gix::ObjectId;
use gix::bstr::ByteSlice;

use super::{Error, Failure, GitSource, Reader, answer, source_error};
use crate::config::SourceConfig;

/// Fetches `refspecs` (`+src:dst`) from the repository of the git source
/// `config` into the bare repository `mirror` (created when missing, 0700),
/// with the source's credentials, and returns where each remote ref named
/// by a refspec's source now points (the pull-request poller's heads, which
/// the branch mirror does not hold). Blocking and unbounded in time: the
/// caller runs it on a thread of its own.
pub fn fetch_refs(
    config: &SourceConfig,
    mirror: &std::path::Path,
    refspecs: &[String],
) -> Result<BTreeMap<String, ObjectId>, crate::source::Error> {
    let source = GitSource::from_config(config, std::path::Path::new("/"), 0)?;
    let mut reader = source
        .reader
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    mirror.clone_into(&mut reader.options.mirror);
    let name = reader.options.name.clone();
    let fail = |error| source_error(&name, error);
    let repo = reader.open_mirror().map_err(fail)?;
    reader.fetch_specs(&repo, refspecs).map_err(fail)
}

/// The best common ancestor of two commits of the repository at `repo`
/// (what a pull request's head is compared with); `None` when they share
/// no history.
pub fn merge_base(
    name: &str,
    repo: &std::path::Path,
    one: ObjectId,
    two: ObjectId,
) -> Result<Option<ObjectId>, crate::source::Error> {
    let url = repo.display().to_string();
    let fail = |error| source_error(name, error);
    let opened = gix::open_opts(repo, gix::open::Options::isolated()).map_err(|error| {
        fail(Error::OpenRepository {
            url: url.clone(),
            error,
        })
    })?;
    opened
        .merge_base(one, two)
        .map(|id| id.map(gix::Id::detach))
        .map_err(|error| {
            fail(Error::RevisionMissing {
                url,
                revision: format!("merge base of {one} and {two}"),
                error,
            })
        })
}

impl Reader {
    /// Fetches `refspecs` into `repo`; where each remote ref a refspec names
    /// points.
    fn fetch_specs(
        &self,
        repo: &gix::Repository,
        refspecs: &[String],
    ) -> Result<BTreeMap<String, ObjectId>, Error> {
        let url = || self.shown_url.clone();
        let misconfigured = |error| Error::Remote {
            url: url(),
            cause: self.cause(error),
        };
        let remote = repo
            .remote_at(self.options.url.as_str())
            .map_err(misconfigured)?
            .with_refspecs(
                refspecs.iter().map(String::as_str),
                gix::remote::Direction::Fetch,
            )
            .map_err(misconfigured)?;
        let connection = remote
            .connect(gix::remote::Direction::Fetch)
            .map_err(|error| Error::Connect {
                url: url(),
                failure: Failure::of(&error),
                cause: self.cause(error),
            })?;
        let account = self.credentials()?;
        let connection = connection.with_credentials(answer(account));
        let prepare = connection
            .prepare_fetch(
                gix::progress::Discard,
                gix::remote::ref_map::Options::default(),
            )
            .map_err(|error| Error::ListRefs {
                url: url(),
                failure: Failure::of(&error),
                cause: self.cause(error),
            })?;
        let wanted: BTreeSet<&str> = refspecs
            .iter()
            .map(|s| {
                s.trim_start_matches('+')
                    .split(':')
                    .next()
                    .unwrap_or_default()
            })
            .collect();
        let found: BTreeMap<String, ObjectId> = prepare
            .ref_map()
            .remote_refs
            .iter()
            .filter_map(|r| {
                let (name, target, peeled) = r.unpack();
                let name = name.to_str().ok()?;
                wanted
                    .contains(name)
                    .then(|| Some((name.to_owned(), peeled.or(target)?.to_owned())))
                    .flatten()
            })
            .collect();
        let interrupt = AtomicBool::new(false);
        prepare
            .receive(gix::progress::Discard, &interrupt)
            .map_err(|error| Error::Receive {
                url: url(),
                failure: Failure::of(&error),
                cause: self.cause(error),
            })?;
        Ok(found)
    }
}
