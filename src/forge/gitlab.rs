//! GitLab (REST v4): merge requests, their notes, commit statuses and
//! approvals. Not tested end to end here: the unit tests read GitLab's
//! documented example answers. GitLab's approvals carry no commit: an
//! approval counts as given at the head (GitLab removes approvals on a new
//! push when the project's "Remove all approvals when commits are added"
//! setting is on; converge relies on it there).

use serde::Deserialize;

use super::http::{Call, Http};
use super::{Comment, CommitStatus, Error, Forge, Listing, PullRequest, State};
use crate::config::ForgeKind;
use crate::review::ReviewEvent;

const READ: &str = "read_api (Reporter role)";
const WRITE: &str = "api (Developer role)";

pub struct GitLab {
    http: Http,
    project: String,
}

impl GitLab {
    pub fn new(http: Http, path: &str) -> GitLab {
        GitLab {
            http,
            project: format!("/projects/{}", path.replace('/', "%2F")),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct User {
    username: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MergeRequest {
    iid: u64,
    title: String,
    state: String,
    sha: String,
    source_branch: String,
    target_branch: String,
    author: User,
    merged_by: Option<User>,
    merge_user: Option<User>,
    merge_commit_sha: Option<String>,
    squash_commit_sha: Option<String>,
    web_url: String,
}

impl From<MergeRequest> for PullRequest {
    fn from(m: MergeRequest) -> PullRequest {
        PullRequest {
            number: m.iid,
            title: m.title,
            head_sha: m.sha,
            head_ref: m.source_branch,
            base_ref: m.target_branch,
            author: m.author.username,
            merged: m.state == "merged",
            merged_by: m.merge_user.or(m.merged_by).map(|u| u.username),
            merge_commit: m.merge_commit_sha.or(m.squash_commit_sha),
            url: m.web_url,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Note {
    id: u64,
    body: String,
    author: User,
    system: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
#[allow(clippy::struct_field_names, reason = "the API's field names")]
struct Status {
    id: u64,
    status: String,
    name: String,
    description: Option<String>,
    target_url: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Approvals {
    approved_by: Vec<Approval>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Approval {
    user: User,
}

fn state_word(state: State) -> &'static str {
    match state {
        State::Pending => "pending",
        State::Success => "success",
        State::Failure | State::Error => "failed",
    }
}

fn status_body(status: &CommitStatus) -> serde_json::Value {
    let mut body = serde_json::json!({
        "state": state_word(status.state),
        "name": status.context,
        "description": super::truncate(&status.description, super::MAX_DESCRIPTION),
    });
    if let Some(url) = &status.target_url {
        body["target_url"] = serde_json::Value::String(url.clone());
    }
    body
}

fn statuses(mut list: Vec<Status>) -> Vec<CommitStatus> {
    list.sort_by_key(|s| std::cmp::Reverse(s.id));
    list.into_iter()
        .map(|s| CommitStatus {
            context: s.name,
            state: State::parse(&s.status),
            description: s.description.unwrap_or_default(),
            target_url: s.target_url.filter(|u| !u.is_empty()),
        })
        .collect()
}

fn merged_of(list: Vec<MergeRequest>, sha: &str) -> Option<PullRequest> {
    list.into_iter()
        .map(PullRequest::from)
        .find(|m| m.merged && m.merge_commit.as_deref() == Some(sha))
}

fn approvals(a: Approvals) -> Vec<ReviewEvent> {
    a.approved_by
        .into_iter()
        .map(|a| ReviewEvent {
            user: a.user.username,
            approved: true,
            commit: None,
            dismissed: false,
        })
        .collect()
}

impl Forge for GitLab {
    fn kind(&self) -> ForgeKind {
        ForgeKind::Gitlab
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
            READ,
            format!(
                "{}/merge_requests?state=opened&target_branch={}&per_page=100",
                self.project,
                base.replace('%', "%25")
                    .replace('&', "%26")
                    .replace(' ', "%20")
            ),
        );
        call.etag = etag;
        let answer = self.http.call(&call)?.expect("no 404 allowed");
        if answer.status == 304 {
            return Ok(Listing::NotModified);
        }
        let list: Vec<MergeRequest> = answer.json(self.kind(), call.op)?;
        Ok(Listing::Changed {
            items: list.into_iter().map(PullRequest::from).collect(),
            etag: answer.etag,
        })
    }

    fn comments(&self, pr: u64) -> Result<Vec<Comment>, Error> {
        let call = Call::get(
            "list_comments",
            READ,
            format!(
                "{}/merge_requests/{pr}/notes?sort=asc&order_by=created_at&per_page=100",
                self.project
            ),
        );
        let notes: Vec<Note> = self.http.pages(&call, 20)?;
        Ok(notes
            .into_iter()
            .filter(|n| !n.system)
            .map(|n| Comment {
                id: n.id,
                author: n.author.username,
                body: n.body,
            })
            .collect())
    }

    fn create_comment(&self, pr: u64, body: &str) -> Result<Comment, Error> {
        let call = Call::send(
            "create_comment",
            WRITE,
            "POST",
            format!("{}/merge_requests/{pr}/notes", self.project),
            serde_json::json!({ "body": body }),
        );
        let n: Note = self.http.must(&call)?;
        Ok(Comment {
            id: n.id,
            author: n.author.username,
            body: n.body,
        })
    }

    fn edit_comment(&self, pr: u64, id: u64, body: &str) -> Result<Comment, Error> {
        let call = Call::send(
            "edit_comment",
            WRITE,
            "PUT",
            format!("{}/merge_requests/{pr}/notes/{id}", self.project),
            serde_json::json!({ "body": body }),
        );
        let n: Note = self.http.must(&call)?;
        Ok(Comment {
            id: n.id,
            author: n.author.username,
            body: n.body,
        })
    }

    fn statuses(&self, sha: &str) -> Result<Vec<CommitStatus>, Error> {
        let call = Call::get(
            "list_statuses",
            READ,
            format!(
                "{}/repository/commits/{sha}/statuses?per_page=100",
                self.project
            ),
        );
        Ok(statuses(self.http.must(&call)?))
    }

    fn set_status(&self, sha: &str, status: &CommitStatus) -> Result<(), Error> {
        let call = Call::send(
            "set_status",
            WRITE,
            "POST",
            format!("{}/statuses/{sha}", self.project),
            status_body(status),
        );
        self.http.call(&call)?;
        Ok(())
    }

    fn merged_pull(&self, sha: &str) -> Result<Option<PullRequest>, Error> {
        let call = Call::get(
            "merged_pull",
            READ,
            format!("{}/repository/commits/{sha}/merge_requests", self.project),
        );
        Ok(merged_of(self.http.must(&call)?, sha))
    }

    fn reviews(&self, pr: &PullRequest) -> Result<Vec<ReviewEvent>, Error> {
        let call = Call::get(
            "list_reviews",
            READ,
            format!("{}/merge_requests/{}/approvals", self.project, pr.number),
        );
        Ok(approvals(self.http.must(&call)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // From docs.gitlab.com/api (merge_requests, notes, commits statuses,
    // merge_request_approvals), trimmed to the fields converge reads.
    const MERGE_REQUESTS: &str = r#"[{
      "id": 1, "iid": 1, "project_id": 3, "title": "test1",
      "state": "merged", "target_branch": "main", "source_branch": "test1",
      "author": {"id": 1, "username": "admin", "name": "Administrator"},
      "merge_user": {"id": 2, "username": "king", "name": "Vernie Hoppe"},
      "merged_by": {"id": 2, "username": "king"},
      "sha": "8888888888888888888888888888888888888888",
      "merge_commit_sha": "9999999999999999999999999999999999999999",
      "squash_commit_sha": null,
      "web_url": "http://gitlab.example.com/my-group/my-project/merge_requests/1"
    }, {
      "id": 2, "iid": 2, "title": "open", "state": "opened",
      "target_branch": "main", "source_branch": "x",
      "author": {"username": "admin"}, "sha": "aaaa", "merge_commit_sha": null
    }]"#;

    const APPROVALS: &str = r#"{
      "id": 5, "iid": 5, "project_id": 1, "state": "opened",
      "approvals_required": 2, "approvals_left": 1,
      "approved_by": [{"user": {"name": "Administrator", "username": "root", "id": 1}}]
    }"#;

    const STATUSES: &str = r#"[{
      "status": "pending", "name": "bundler:audit", "id": 91,
      "description": null, "target_url": "https://gitlab.example.com/thedude/gitlab-foss/builds/91"
    }, {
      "status": "failed", "name": "flay", "id": 90, "description": "x", "target_url": null
    }]"#;

    #[test]
    fn gitlab_merge_requests_and_approvals_read_as_converge_sees_them() {
        let list: Vec<MergeRequest> = serde_json::from_str(MERGE_REQUESTS).expect("mrs");
        let pr = merged_of(list, "9999999999999999999999999999999999999999").expect("merged");
        assert_eq!(pr.number, 1);
        assert_eq!(pr.author, "admin");
        assert_eq!(pr.merged_by.as_deref(), Some("king"));
        assert_eq!(pr.head_sha, "8888888888888888888888888888888888888888");
        let list: Vec<MergeRequest> = serde_json::from_str(MERGE_REQUESTS).expect("mrs");
        assert_eq!(merged_of(list, "aaaa"), None);
        let events = approvals(serde_json::from_str(APPROVALS).expect("approvals"));
        let (approvers, _) = crate::review::count("admin", "8888", &events);
        assert_eq!(approvers.into_iter().collect::<Vec<_>>(), ["root"]);
        let s = statuses(serde_json::from_str(STATUSES).expect("statuses"));
        assert_eq!(
            (s[0].context.as_str(), s[0].state),
            ("bundler:audit", State::Pending)
        );
        assert_eq!(s[1].state, State::Failure);
    }

    #[test]
    fn gitlab_requests_have_its_paths_and_bodies() {
        // POST /projects/:id/statuses/:sha takes state (failed, not failure) and name.
        let body = status_body(&CommitStatus {
            context: "converge/prod/apply".into(),
            state: State::Failure,
            description: "denied".into(),
            target_url: None,
        });
        assert_eq!(
            body,
            serde_json::json!({"state": "failed", "name": "converge/prod/apply", "description": "denied"})
        );
    }
}
