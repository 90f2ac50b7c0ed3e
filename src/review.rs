//! Review provenance: who reviewed and merged a commit of a tracked branch,
//! as the forge says (`context.review` in the policy request). A leaf module
//! (no IO): the forge clients fill it in, the policies read it.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// What the forge says about one commit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    /// The commit asked about.
    pub commit: String,
    /// The pull request that merged it; `None` when none did (a direct push).
    pub pr: Option<u64>,
    /// The pull request's author.
    pub author: Option<String>,
    /// Who merged it.
    pub merged_by: Option<String>,
    /// The pull request's head when it was merged.
    pub head: Option<String>,
    /// Who approved the merged head, the author excluded.
    pub approvers: BTreeSet<String>,
    /// Who approved only an older head (their approval does not count).
    pub stale: BTreeSet<String>,
}

impl Review {
    /// The approvals that count: at the merged head, not the author's.
    #[must_use]
    pub fn approvals_at_head(&self) -> usize {
        self.approvers.len()
    }

    /// The review of a commit no pull request merged.
    #[must_use]
    pub fn direct(commit: &str) -> Review {
        Review {
            commit: commit.to_owned(),
            ..Review::default()
        }
    }

    /// Who reviewed in words, for messages: "PR #3 by author, approved at
    /// its head by reviewer".
    #[must_use]
    pub fn describe(&self) -> String {
        let Some(pr) = self.pr else {
            return format!(
                "commit {} was not merged by a pull request (pushed to the branch directly)",
                self.commit
            );
        };
        let author = self.author.as_deref().unwrap_or("?");
        let mut text = format!("commit {} came from PR #{pr} by {author}", self.commit);
        if self.approvers.is_empty() {
            text.push_str(", approved at its merged head by nobody but its author");
        } else {
            let who: Vec<&str> = self.approvers.iter().map(String::as_str).collect();
            let _ = write!(text, ", approved at its merged head by {}", who.join(", "));
        }
        if !self.stale.is_empty() {
            let who: Vec<&str> = self.stale.iter().map(String::as_str).collect();
            let _ = write!(
                text,
                " (stale: approved by {} before a later push)",
                who.join(", ")
            );
        }
        text
    }
}

/// One approval-like review: who, in which state, at which commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewEvent {
    pub user: String,
    pub approved: bool,
    /// The head the review was given at (`None` when the forge does not say:
    /// GitLab's approvals, which it resets on a push when so configured).
    pub commit: Option<String>,
    /// Dismissed or withdrawn: does not count.
    pub dismissed: bool,
}

/// Counts `events` for the pull request of `author` merged at `head`: the
/// approvals at `head` by someone other than the author, and those of an
/// older head. A user's latest review decides (an approval followed by a
/// request for changes does not count).
#[must_use]
pub fn count(
    author: &str,
    head: &str,
    events: &[ReviewEvent],
) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut latest: HashMap<&str, &ReviewEvent> = HashMap::new();
    let mut stale = BTreeSet::new();
    for e in events {
        if e.user == author || e.dismissed {
            continue;
        }
        if e.approved && e.commit.as_deref().is_some_and(|c| c != head) {
            stale.insert(e.user.clone());
            continue;
        }
        latest.insert(&e.user, e);
    }
    let approvers: BTreeSet<String> = latest
        .into_values()
        .filter(|e| e.approved)
        .map(|e| e.user.clone())
        .collect();
    let stale = stale.difference(&approvers).cloned().collect();
    (approvers, stale)
}

/// What a pass knows of a commit's review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Known(Arc<Review>),
    /// The forge could not be asked (down, rate limiting, refusing): claims
    /// that need a review are held as they are.
    Unavailable(String),
}

impl Lookup {
    /// A digest of what policies see of it, for caches keyed by what was asked.
    #[must_use]
    pub fn digest(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        match self {
            Lookup::Known(r) => {
                0u8.hash(&mut h);
                r.commit.hash(&mut h);
                r.pr.hash(&mut h);
                r.author.hash(&mut h);
                r.merged_by.hash(&mut h);
                r.approvers.hash(&mut h);
            }
            Lookup::Unavailable(_) => 1u8.hash(&mut h),
        }
        h.finish()
    }
}

/// Per commit id: what the forge said (handed to the pipeline before a pass).
pub type Reviews = HashMap<String, Lookup>;

#[cfg(test)]
mod tests {
    use super::*;

    fn e(user: &str, approved: bool, commit: Option<&str>) -> ReviewEvent {
        ReviewEvent {
            user: user.to_owned(),
            approved,
            commit: commit.map(str::to_owned),
            dismissed: false,
        }
    }

    #[test]
    fn only_approvals_at_the_merged_head_by_others_count() {
        let events = [
            e("author", true, Some("h2")),
            e("old", true, Some("h1")),
            e("rev", true, Some("h2")),
            e("changed-mind", true, Some("h2")),
            e("changed-mind", false, Some("h2")),
            e("unknown-head", true, None),
        ];
        let (approvers, stale) = count("author", "h2", &events);
        assert_eq!(
            approvers.into_iter().collect::<Vec<_>>(),
            ["rev", "unknown-head"]
        );
        assert_eq!(stale.into_iter().collect::<Vec<_>>(), ["old"]);
        let mut dismissed = e("rev", true, Some("h2"));
        dismissed.dismissed = true;
        assert!(count("author", "h2", &[dismissed]).0.is_empty());
    }

    #[test]
    fn a_review_is_described_in_words() {
        assert!(Review::direct("abc").describe().contains("directly"));
        let r = Review {
            commit: "abc".into(),
            pr: Some(3),
            author: Some("author".into()),
            approvers: BTreeSet::new(),
            stale: BTreeSet::from(["reviewer".to_owned()]),
            ..Review::default()
        };
        let text = r.describe();
        assert!(text.contains("PR #3 by author"), "{text}");
        assert!(text.contains("nobody but its author"), "{text}");
        assert!(text.contains("stale: approved by reviewer"), "{text}");
    }
}
