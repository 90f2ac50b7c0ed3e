//! Review provenance for the pipeline: before each pass, who reviewed and
//! merged each commit the git sources with a forge attribute their claim
//! files to. A commit's review is asked once and kept (in memory and in the
//! state store's `forge` table, `review/<commit>`), so neither an idle pass
//! nor a restart asks again. A forge that cannot be asked leaves the commit
//! `Unavailable` for this pass (claims that need a review are held as they
//! are) and is asked again at the next pass.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::Forge;
use crate::config::{Config, SourceConfig};
use crate::review::{Lookup, Review, Reviews};
use crate::source::{Provenance, Snapshot};

/// The most commits asked about per source and pass (a first read
/// attributes every file to one commit; later passes bring a few).
const MAX_LOOKUPS: usize = 64;

/// The forges of the git sources that have one, and what they said.
pub struct Reviewer {
    forges: BTreeMap<String, Arc<dyn Forge>>,
    known: HashMap<String, Arc<Review>>,
    /// Rows to write in the next state-store commit.
    dirty: Vec<(String, Option<Vec<u8>>)>,
    /// The last pass's failures, by source (for events and the API).
    pub failures: BTreeMap<String, String>,
}

impl std::fmt::Debug for Reviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reviewer")
            .field("sources", &self.forges.keys().collect::<Vec<_>>())
            .field("known", &self.known.len())
            .finish_non_exhaustive()
    }
}

/// The state-store key of a commit's review.
fn key(commit: &str) -> String {
    format!("review/{commit}")
}

impl Reviewer {
    /// The forges of `config`'s git sources; `None` when no source has one.
    pub fn from_config(config: &Config) -> Result<Option<Reviewer>, super::Error> {
        let forges = forges(config)?;
        if forges.is_empty() {
            return Ok(None);
        }
        Ok(Some(Reviewer {
            forges,
            known: HashMap::new(),
            dirty: Vec::new(),
            failures: BTreeMap::new(),
        }))
    }

    /// What a previous run learnt (the store's `review/…` rows).
    pub fn restore(&mut self, rows: &BTreeMap<String, Vec<u8>>) {
        for (k, v) in rows {
            if let Some(commit) = k.strip_prefix("review/")
                && let Ok(review) = serde_json::from_slice::<Review>(v)
            {
                self.known.insert(commit.to_owned(), Arc::new(review));
            }
        }
    }

    /// Rows learnt since the last call, for the state store.
    pub fn take_dirty(&mut self) -> Vec<(String, Option<Vec<u8>>)> {
        std::mem::take(&mut self.dirty)
    }

    /// Reviews of every commit the snapshots' files of sources with a forge
    /// come from: known ones at once, the others asked (one failure stops
    /// the asking for that source in this pass).
    pub fn lookup(&mut self, snapshots: &[Snapshot]) -> Reviews {
        let mut out = Reviews::new();
        self.failures.clear();
        for snapshot in snapshots {
            let Some(forge) = self.forges.get(&snapshot.source).cloned() else {
                continue;
            };
            let mut asked = 0;
            let mut failure: Option<String> = None;
            for file in &snapshot.files {
                let Some(Provenance::Git { commit, .. }) = file.provenance.as_deref() else {
                    continue;
                };
                if out.contains_key(commit) {
                    continue;
                }
                if let Some(r) = self.known.get(commit) {
                    out.insert(commit.clone(), Lookup::Known(r.clone()));
                    continue;
                }
                if let Some(why) = &failure {
                    out.insert(commit.clone(), Lookup::Unavailable(why.clone()));
                    continue;
                }
                if asked == MAX_LOOKUPS {
                    let why =
                        format!("more than {MAX_LOOKUPS} new commits: asked at the next pass");
                    out.insert(commit.clone(), Lookup::Unavailable(why));
                    continue;
                }
                asked += 1;
                match forge.review_of(commit) {
                    Ok(review) => {
                        let review = Arc::new(review);
                        if let Ok(bytes) = serde_json::to_vec(&*review) {
                            self.dirty.push((key(commit), Some(bytes)));
                        }
                        self.known.insert(commit.clone(), review.clone());
                        out.insert(commit.clone(), Lookup::Known(review));
                    }
                    Err(e) => {
                        let why = e.to_string();
                        tracing::warn!(source = %snapshot.source, "review provenance: {why}");
                        self.failures.insert(snapshot.source.clone(), why.clone());
                        out.insert(commit.clone(), Lookup::Unavailable(why.clone()));
                        failure = Some(why);
                    }
                }
            }
        }
        out
    }

    /// The sources with a forge.
    #[must_use]
    pub fn sources(&self) -> std::collections::BTreeSet<String> {
        self.forges.keys().cloned().collect()
    }
}

/// Every git source's forge client, by source name.
pub fn forges(config: &Config) -> Result<BTreeMap<String, Arc<dyn Forge>>, super::Error> {
    let mut out = BTreeMap::new();
    for s in &config.sources {
        if let SourceConfig::Git {
            name,
            url,
            forge: Some(forge),
            ..
        } = s
        {
            let client = super::from_config(url, forge).map_err(|e| match e {
                super::Error::Config { forge, message } => super::Error::Config {
                    forge,
                    message: format!("sources: {name}: forge: {message}"),
                },
                other => other,
            })?;
            out.insert(name.clone(), client);
        }
    }
    Ok(out)
}
