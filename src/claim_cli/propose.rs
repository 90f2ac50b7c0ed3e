//! `converge claim propose`: a claim for a git source, judged as the daemon
//! would judge it from that source's tracked branch, then proposed for
//! review through the source's forge: a new branch with one commit writing
//! the file, and a pull request into the tracked branch (its URL printed).

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::bucket::{extension, judge};
use super::put::{Peek, read};
use super::{Error, note};
use crate::config::{Config, SourceConfig};
use crate::forge::{Forge, Proposal, PullRequest, State};
use crate::pull_request::comment::Marker;
use crate::source::{
    Content, Person, Provenance, Revision, Signature, Snapshot, SourceFile, SourceKind,
};

/// `claim propose`'s flags.
#[derive(Debug, Clone)]
pub(super) struct Options<'a> {
    pub(super) file: &'a Path,
    pub(super) source: &'a str,
    pub(super) title: Option<&'a str>,
    pub(super) path: Option<&'a str>,
    pub(super) config: &'a Path,
    /// Wait (at most this long) for the daemon's plan on the pull request.
    pub(super) wait: Option<Duration>,
}

pub(super) fn run(o: &Options<'_>) -> Result<u8, Error> {
    let config = Config::load(o.config)?;
    let Some(found) = config.sources.iter().find(|s| s.name() == o.source) else {
        return Err(Error::Refused(format!(
            "{}: no source named {:?}",
            o.config.display(),
            o.source
        )));
    };
    let SourceConfig::Git {
        url,
        branch,
        paths,
        forge,
        ..
    } = found
    else {
        return Err(Error::Refused(format!(
            "source {:?} is not a git source: a pull request needs one (a bucket source takes `converge claim put`)",
            o.source
        )));
    };
    let Some(forge_config) = forge else {
        return Err(Error::Refused(format!(
            "source {:?} has no forge: block, so converge cannot open a pull request on its repository (README, \"Forge\")",
            o.source
        )));
    };
    let (shown, bytes) = read(o.file)?;
    let peek = Peek::of(&shown, &bytes);
    let Some(name) = peek.name else {
        return Err(Error::Refused(format!(
            "{shown}: no valid environment_name: run `converge validate {shown}`"
        )));
    };
    let path = match o.path {
        Some(p) => p.trim_start_matches('/').to_owned(),
        None => default_path(paths, &name, extension(&shown, &bytes)),
    };
    if !paths.is_empty() {
        let globs =
            crate::source::git::glob_set(paths).map_err(|e| Error::Refused(e.to_string()))?;
        if !globs.is_match(&path) {
            return Err(Error::Refused(format!(
                "{path} is not among source {:?}'s paths ({}): the daemon would not read it; give --path",
                o.source,
                paths.join(", ")
            )));
        }
    }
    let pipeline = crate::pipeline_for(&config)?;
    let file = proposed_file(&shown, &bytes, url, branch);
    let snapshot = Snapshot {
        source: o.source.to_owned(),
        kind: SourceKind::Git,
        is_static: false,
        revision: Revision("local".to_owned()),
        files: vec![file],
    };
    if !judged_valid(&config, &pipeline, snapshot, &shown)? {
        return Ok(1);
    }
    let client = crate::forge::from_config(url, forge_config)?;
    let title = o
        .title
        .map_or_else(|| format!("claim: {name}"), str::to_owned);
    let new_branch = format!("converge/claim-{name}-{}", Utc::now().timestamp());
    let body = format!(
        "The claim of environment `{name}` at `{path}`, proposed with `converge claim propose`.\n\n\
         converge plans it on this pull request; merging it into `{branch}` applies it."
    );
    let pr = client.propose(&Proposal {
        base: branch,
        branch: &new_branch,
        path: &path,
        content: &bytes,
        message: &title,
        title: &title,
        body: &body,
    })?;
    let _ = writeln!(std::io::stdout().lock(), "{}", pr.url);
    note(&format!(
        "pull request #{} into {branch}: {path} on branch {new_branch}",
        pr.number
    ));
    match o.wait {
        Some(timeout) => wait_for_plan(
            &*client,
            &pr,
            o.source,
            forge_config.context.as_deref(),
            timeout,
        ),
        None => Ok(0),
    }
}

/// Waits for the daemon's `<context>/plan` status on the pull request's
/// head (any `converge…/plan` context when the config names none: the
/// daemon's default context is its own host's name), then prints its plan
/// comment: 0 when the plan says the change would apply, 1 when it names a
/// problem.
fn wait_for_plan(
    client: &dyn Forge,
    pr: &PullRequest,
    source: &str,
    context: Option<&str>,
    timeout: Duration,
) -> Result<u8, Error> {
    let deadline = Instant::now() + timeout;
    let wanted = |c: &str| match context {
        Some(ctx) => c.strip_suffix("/plan") == Some(ctx),
        None => c.starts_with("converge") && c.ends_with("/plan"),
    };
    note(&format!(
        "waiting for converge's plan on pull request #{} (head {})",
        pr.number,
        pr.head_sha.get(..12).unwrap_or(&pr.head_sha)
    ));
    let status = loop {
        // The newest status of a context comes first.
        let found = client
            .statuses(&pr.head_sha)?
            .into_iter()
            .find(|s| wanted(&s.context));
        if let Some(s) = found.filter(|s| s.state != State::Pending) {
            break s;
        }
        if Instant::now() >= deadline {
            return Err(Error::Refused(format!(
                "no plan status from converge on pull request #{} after {} s: is a daemon with `forge.pull_requests` running on this source?",
                pr.number,
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    // The comment is written before the status: it is there now.
    let marker = Marker {
        source,
        context: status.context.trim_end_matches("/plan"),
    };
    let mut parts: Vec<(usize, String)> = client
        .comments(pr.number)?
        .into_iter()
        .filter_map(|c| marker.part_of(&c.body).map(|part| (part, c.body)))
        .collect();
    parts.sort();
    let mut out = std::io::stdout().lock();
    for (_, body) in &parts {
        let _ = writeln!(out, "{body}");
    }
    note(&format!(
        "{}: {} ({})",
        status.context,
        status.state.as_str(),
        status.description
    ));
    Ok(u8::from(status.state != State::Success))
}

/// The file as the daemon will read it from the tracked branch once
/// merged: its repository and branch, no commit yet (unsigned).
fn proposed_file(shown: &str, bytes: &[u8], url: &str, branch: &str) -> SourceFile {
    let mut file = SourceFile::new(shown.to_owned(), Content::Bytes(bytes.to_vec().into()));
    let nobody = Person {
        name: String::new(),
        email: String::new(),
    };
    file.provenance = Some(Arc::new(Provenance::Git {
        repository: crate::source::sanitize_url(url),
        branch: branch.to_owned(),
        commit: String::new(),
        author: nobody.clone(),
        committer: nobody,
        time: Utc::now().timestamp(),
        trailers: std::collections::BTreeMap::new(),
        signature: Signature {
            kind: "none".to_owned(),
            verified: false,
            signer: None,
            problem: Some("not merged yet".to_owned()),
        },
    }));
    file
}

/// Judges the proposal; false (every problem said) when it is invalid. A
/// denial only for want of a review is not a problem here: the pull
/// request is that review (the daemon asks again on the merged commit).
fn judged_valid(
    config: &Config,
    pipeline: &crate::pipeline::Pipeline,
    snapshot: Snapshot,
    shown: &str,
) -> Result<bool, Error> {
    let judged = judge(config, pipeline, snapshot)?;
    for line in &judged.notes {
        note(line);
    }
    let (review, problems): (Vec<_>, Vec<_>) = judged.diagnostics.into_iter().partition(|d| {
        d.rule == crate::validate::policy::UNREVIEWED_RULE
            || d.rule == crate::pipeline::REVIEW_UNAVAILABLE_RULE
    });
    if !review.is_empty() {
        note(&format!(
            "{shown}: the policies require a reviewed change for it: the pull request asks for that review"
        ));
    }
    if problems.is_empty() {
        return Ok(true);
    }
    for d in &problems {
        note(&d.to_string());
    }
    note(&format!("{shown} is invalid: no pull request opened"));
    Ok(false)
}

/// Where a claim goes in the repository: the directory of the first path
/// glob (its part before any wildcard), `<name><ext>` in it.
fn default_path(paths: &[String], name: &str, ext: &str) -> String {
    let dir = paths.first().map_or("", |glob| {
        let literal = glob
            .find(['*', '?', '[', '{'])
            .map_or(glob.as_str(), |i| &glob[..i]);
        literal.rfind('/').map_or("", |i| &literal[..=i])
    });
    format!("{dir}{name}{ext}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proposed_claim_goes_where_the_first_path_glob_reads() {
        let globs = |g: &[&str]| g.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            default_path(&globs(&["environments/**/*.yaml"]), "prod-a", ".yaml"),
            "environments/prod-a.yaml"
        );
        assert_eq!(
            default_path(&globs(&["claims/*.json"]), "prod-a", ".json"),
            "claims/prod-a.json"
        );
        assert_eq!(default_path(&[], "prod-a", ".yaml"), "prod-a.yaml");
        assert_eq!(
            default_path(&globs(&["*.yaml"]), "prod-a", ".yaml"),
            "prod-a.yaml"
        );
    }
}
