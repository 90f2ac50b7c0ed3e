//! What a file's provenance says: the commit that last changed it, its
//! author and committer, its trailers, and its signature as the source's
//! [`Trust`](crate::source::verify::Trust) verifies it.

use std::collections::BTreeMap;
use std::sync::Arc;

use gix::ObjectId;
use gix::bstr::ByteSlice;

use super::{Error, Reader};
use crate::source::{Person, Provenance, Signature};

impl Reader {
    pub(super) fn provenance(
        &self,
        repo: &gix::Repository,
        id: ObjectId,
    ) -> Result<Arc<Provenance>, Error> {
        let err = |e| self.unreadable(e);
        let commit = repo.find_commit(id).map_err(err)?;
        let person = |s: gix::actor::SignatureRef<'_>| Person {
            name: s.name.to_str_lossy().into_owned(),
            email: s.email.to_str_lossy().into_owned(),
        };
        let author = commit.author().map_err(err)?;
        let committer = commit.committer().map_err(err)?;
        let time = committer.time().map(|t| t.seconds).unwrap_or_default();
        let message = commit.message_raw_sloppy().to_str_lossy().into_owned();
        let signature = match commit.signature().map_err(err)? {
            None => Signature {
                kind: "none".into(),
                verified: false,
                signer: None,
                problem: Some("the commit is not signed".into()),
            },
            Some((sig, signed)) => self
                .options
                .trust
                .verify(sig.as_ref(), signed.to_bstring().as_ref()),
        };
        Ok(Arc::new(Provenance::Git {
            repository: self.shown_url.clone(),
            branch: self.options.branch.clone(),
            commit: id.to_string(),
            author: person(author),
            committer: person(committer),
            time,
            trailers: trailers(&message),
            signature,
        }))
    }
}

/// Git trailers of a commit message: the last paragraph's `Key: value` lines.
#[must_use]
pub fn trailers(message: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let last = message.trim_end().rsplit("\n\n").next().unwrap_or_default();
    let lines: Vec<&str> = last.lines().collect();
    let is_trailer = |l: &str| {
        l.split_once(": ").is_some_and(|(k, _)| {
            !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
    };
    if lines.is_empty()
        || !lines.iter().all(|l| is_trailer(l) || l.starts_with(' '))
        || message.trim_end() == last
    {
        return out;
    }
    for l in lines {
        if let Some((k, v)) = l.split_once(": ") {
            out.entry(k.to_owned())
                .or_default()
                .push(v.trim().to_owned());
        }
    }
    out
}
