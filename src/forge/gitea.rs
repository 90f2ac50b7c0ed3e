//! Gitea and Forgejo (`/api/v1`): tested end to end against a real Gitea.

use std::fmt::Write as _;

use serde::Deserialize;

use super::http::{Call, Http};
use super::{Comment, CommitStatus, Error, Forge, Listing, Proposal, PullRequest, State};
use crate::config::ForgeKind;
use crate::review::ReviewEvent;

const READ_REPO: &str = "read:repository";
const WRITE_REPO: &str = "write:repository";
const READ_ISSUE: &str = "read:issue";
const WRITE_ISSUE: &str = "write:issue";

pub struct Gitea {
    http: Http,
    repo: String,
}

impl Gitea {
    pub fn new(http: Http, path: &str) -> Gitea {
        Gitea {
            http,
            repo: format!("/repos/{path}"),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct User {
    pub login: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct Branch {
    #[serde(rename = "ref")]
    pub name: String,
    pub sha: String,
}

/// A pull request (Gitea's and GitHub's shapes agree on these fields).
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct Pull {
    pub number: u64,
    pub title: String,
    pub head: Branch,
    pub base: Branch,
    pub user: User,
    pub merged: bool,
    pub merged_at: Option<String>,
    pub merged_by: Option<User>,
    pub merge_commit_sha: Option<String>,
    pub html_url: String,
}

/// A repository path in a URL: each segment percent-encoded.
fn encode_path(path: &str) -> String {
    path.split('/').map(query).collect::<Vec<_>>().join("/")
}

/// A value percent-encoded for a URL (unreserved characters kept).
fn query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

impl From<Pull> for PullRequest {
    fn from(p: Pull) -> PullRequest {
        PullRequest {
            number: p.number,
            title: p.title,
            head_sha: p.head.sha,
            head_ref: p.head.name,
            base_ref: p.base.name,
            author: p.user.login,
            merged: p.merged || p.merged_at.is_some(),
            merged_by: p.merged_by.map(|u| u.login),
            merge_commit: p.merge_commit_sha,
            url: p.html_url,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct IssueComment {
    pub id: u64,
    pub body: String,
    pub user: User,
}

impl From<IssueComment> for Comment {
    fn from(c: IssueComment) -> Comment {
        Comment {
            id: c.id,
            author: c.user.login,
            body: c.body,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
#[allow(clippy::struct_field_names, reason = "the API's field names")]
pub(super) struct Status {
    pub id: u64,
    /// Gitea says `status`; GitHub `state`.
    #[serde(alias = "state")]
    pub status: String,
    pub context: String,
    pub description: Option<String>,
    pub target_url: Option<String>,
}

/// Statuses newest first.
pub(super) fn statuses(mut list: Vec<Status>) -> Vec<CommitStatus> {
    list.sort_by_key(|s| std::cmp::Reverse(s.id));
    list.into_iter()
        .map(|s| CommitStatus {
            context: s.context,
            state: State::parse(&s.status),
            description: s.description.unwrap_or_default(),
            target_url: s.target_url.filter(|u| !u.is_empty()),
        })
        .collect()
}

pub(super) fn status_body(status: &CommitStatus) -> serde_json::Value {
    let mut body = serde_json::json!({
        "state": status.state.as_str(),
        "context": status.context,
        "description": super::truncate(&status.description, super::MAX_DESCRIPTION),
    });
    if let Some(url) = &status.target_url {
        body["target_url"] = serde_json::Value::String(url.clone());
    }
    body
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct PullReview {
    pub user: Option<User>,
    pub state: String,
    pub commit_id: Option<String>,
    pub dismissed: bool,
}

pub(super) fn review_events(list: Vec<PullReview>) -> Vec<ReviewEvent> {
    list.into_iter()
        .filter_map(|r| {
            let user = r.user?.login;
            let approved = match r.state.as_str() {
                "APPROVED" => true,
                "REQUEST_CHANGES" | "CHANGES_REQUESTED" => false,
                // Comments and pending reviews decide nothing.
                _ => return None,
            };
            Some(ReviewEvent {
                user,
                approved,
                commit: r.commit_id.filter(|c| !c.is_empty()),
                dismissed: r.dismissed || r.state == "DISMISSED",
            })
        })
        .collect()
}

impl Forge for Gitea {
    fn kind(&self) -> ForgeKind {
        ForgeKind::Gitea
    }

    fn repository(&self) -> &str {
        &self.http.repository
    }

    fn open_pulls(
        &self,
        base: &str,
        etag: Option<&str>,
    ) -> Result<Listing<Vec<PullRequest>>, Error> {
        let mut call = Call::get(
            "list_pulls",
            READ_REPO,
            format!("{}/pulls?state=open&limit=50", self.repo),
        );
        call.etag = etag;
        let answer = self.http.call(&call)?.expect("no 404 allowed");
        if answer.status == 304 {
            return Ok(Listing::NotModified);
        }
        let etag = answer.etag.clone();
        let mut pulls: Vec<Pull> = answer.json(self.kind(), call.op)?;
        if answer
            .link
            .as_deref()
            .is_some_and(|l| l.contains("rel=\"next\""))
        {
            // More than a page: read the rest (no conditional request for
            // them), from the second: the first is read.
            let rest: Vec<Pull> = self.http.pages_from(&call, 2, 20)?;
            pulls.extend(rest);
        }
        Ok(Listing::Changed {
            items: pulls
                .into_iter()
                .filter(|p| p.base.name == base)
                .map(PullRequest::from)
                .collect(),
            etag,
        })
    }

    fn propose(&self, p: &Proposal<'_>) -> Result<PullRequest, Error> {
        use base64::Engine as _;
        let path = encode_path(p.path);
        let mut existing = Call::get(
            "read_file",
            READ_REPO,
            format!("{}/contents/{path}?ref={}", self.repo, query(p.base)),
        );
        existing.missing_ok = true;
        let sha = self
            .http
            .json::<serde_json::Value>(&existing)?
            .and_then(|v| v["sha"].as_str().map(str::to_owned));
        let mut body = serde_json::json!({
            "content": base64::engine::general_purpose::STANDARD.encode(p.content),
            "message": p.message,
            "branch": p.base,
            "new_branch": p.branch,
        });
        // A new file is created (POST); an existing one is replaced, at
        // the version the base branch holds (PUT with its blob sha).
        let method = match sha {
            Some(sha) => {
                body["sha"] = serde_json::Value::String(sha);
                "PUT"
            }
            None => "POST",
        };
        let write = Call::send(
            "write_file",
            WRITE_REPO,
            method,
            format!("{}/contents/{path}", self.repo),
            body,
        );
        self.http.call(&write)?;
        let open = Call::send(
            "create_pull",
            WRITE_REPO,
            "POST",
            format!("{}/pulls", self.repo),
            serde_json::json!({
                "base": p.base,
                "head": p.branch,
                "title": p.title,
                "body": p.body,
            }),
        );
        Ok(self.http.must::<Pull>(&open)?.into())
    }

    fn login(&self) -> Result<Option<String>, Error> {
        let call = Call::get("get_user", "read:user", "/user".to_owned());
        Ok(Some(self.http.must::<User>(&call)?.login))
    }

    fn comments(&self, pr: u64) -> Result<Vec<Comment>, Error> {
        let call = Call::get(
            "list_comments",
            READ_ISSUE,
            format!("{}/issues/{pr}/comments?limit=50", self.repo),
        );
        let list: Vec<IssueComment> = self.http.pages(&call, 20)?;
        Ok(list.into_iter().map(Comment::from).collect())
    }

    fn create_comment(&self, pr: u64, body: &str) -> Result<Comment, Error> {
        let call = Call::send(
            "create_comment",
            WRITE_ISSUE,
            "POST",
            format!("{}/issues/{pr}/comments", self.repo),
            serde_json::json!({ "body": body }),
        );
        Ok(self.http.must::<IssueComment>(&call)?.into())
    }

    fn edit_comment(&self, _pr: u64, id: u64, body: &str) -> Result<Comment, Error> {
        let call = Call::send(
            "edit_comment",
            WRITE_ISSUE,
            "PATCH",
            format!("{}/issues/comments/{id}", self.repo),
            serde_json::json!({ "body": body }),
        );
        Ok(self.http.must::<IssueComment>(&call)?.into())
    }

    fn statuses(&self, sha: &str) -> Result<Vec<CommitStatus>, Error> {
        let call = Call::get(
            "list_statuses",
            READ_REPO,
            format!("{}/commits/{sha}/statuses?limit=50", self.repo),
        );
        Ok(statuses(self.http.must(&call)?))
    }

    fn set_status(&self, sha: &str, status: &CommitStatus) -> Result<(), Error> {
        let call = Call::send(
            "set_status",
            WRITE_REPO,
            "POST",
            format!("{}/statuses/{sha}", self.repo),
            status_body(status),
        );
        self.http.call(&call)?;
        Ok(())
    }

    fn merged_pull(&self, sha: &str) -> Result<Option<PullRequest>, Error> {
        let mut call = Call::get(
            "merged_pull",
            READ_REPO,
            format!("{}/commits/{sha}/pull", self.repo),
        );
        // Gitea answers 404 for a commit no pull request merged; an unknown
        // repository shows on every other call.
        call.missing_ok = true;
        Ok(self
            .http
            .json::<Pull>(&call)?
            .map(PullRequest::from)
            .filter(|p| p.merged))
    }

    fn reviews(&self, pr: &PullRequest) -> Result<Vec<ReviewEvent>, Error> {
        let call = Call::get(
            "list_reviews",
            READ_REPO,
            format!("{}/pulls/{}/reviews?limit=50", self.repo, pr.number),
        );
        Ok(review_events(self.http.pages(&call, 20)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitea_answers_read_as_converge_sees_them() {
        // Shapes as Gitea 1.27 answers (swagger `PullRequest`, `PullReview`,
        // `CommitStatus`).
        let pull: Pull = serde_json::from_str(
            r#"{"id":9,"number":3,"title":"add a","user":{"id":3,"login":"author"},
                "state":"closed","merged":true,"merged_at":"2026-01-01T00:00:00Z",
                "merged_by":{"login":"admin"},"merge_commit_sha":"m1",
                "head":{"ref":"feature","sha":"h2","label":"feature"},
                "base":{"ref":"main","sha":"b1"},"html_url":"http://g/admin/r/pulls/3"}"#,
        )
        .expect("pull");
        let pr = PullRequest::from(pull);
        assert_eq!(
            (pr.number, pr.head_sha.as_str(), pr.author.as_str()),
            (3, "h2", "author")
        );
        assert_eq!(pr.merged_by.as_deref(), Some("admin"));
        assert_eq!(pr.merge_commit.as_deref(), Some("m1"));
        let reviews: Vec<PullReview> = serde_json::from_str(
            r#"[{"id":1,"user":{"login":"reviewer"},"state":"APPROVED","commit_id":"h1","stale":true,"dismissed":false},
                {"id":2,"user":{"login":"reviewer2"},"state":"APPROVED","commit_id":"h2"},
                {"id":3,"user":{"login":"x"},"state":"COMMENT","commit_id":"h2"},
                {"id":4,"user":{"login":"y"},"state":"REQUEST_CHANGES","commit_id":"h2"}]"#,
        )
        .expect("reviews");
        let events = review_events(reviews);
        assert_eq!(events.len(), 3);
        let (approvers, stale) = crate::review::count("author", "h2", &events);
        assert_eq!(approvers.into_iter().collect::<Vec<_>>(), ["reviewer2"]);
        assert_eq!(stale.into_iter().collect::<Vec<_>>(), ["reviewer"]);
        let list: Vec<Status> = serde_json::from_str(
            r#"[{"id":1,"status":"pending","context":"c/apply","description":"","target_url":""},
                {"id":2,"status":"success","context":"c/apply","description":"ok","target_url":"http://x"}]"#,
        )
        .expect("statuses");
        let s = statuses(list);
        assert_eq!(s[0].state, State::Success);
        assert_eq!(s[0].target_url.as_deref(), Some("http://x"));
        assert_eq!(s[1].target_url, None);
        let body = status_body(&CommitStatus {
            context: "c/apply".into(),
            state: State::Failure,
            description: "x".repeat(300),
            target_url: None,
        });
        assert_eq!(body["state"], "failure");
        assert_eq!(
            body["description"].as_str().unwrap().chars().count(),
            super::super::MAX_DESCRIPTION
        );
    }
}
