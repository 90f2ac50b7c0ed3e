//! GitHub (REST v3): the same calls as Gitea's, whose shapes it shares for
//! pull requests, comments and reviews. Not tested end to end here: the unit
//! tests read GitHub's documented example answers.

use serde::Deserialize;

use super::gitea::{IssueComment, Pull, PullReview, Status, review_events, status_body, statuses};
use super::http::{Call, Http};
use super::{Comment, CommitStatus, Error, Forge, Listing, PullRequest};
use crate::config::ForgeKind;
use crate::review::ReviewEvent;

const READ_PULLS: &str = "pull-requests: read";
const WRITE_PULLS: &str = "pull-requests: write";
const READ_STATUSES: &str = "statuses: read";
const WRITE_STATUSES: &str = "statuses: write";

pub struct GitHub {
    http: Http,
    repo: String,
}

impl GitHub {
    pub fn new(http: Http, path: &str) -> GitHub {
        GitHub {
            http,
            repo: format!("/repos/{path}"),
        }
    }
}

/// `GET /repos/{o}/{r}/pulls` query for the open pull requests into `base`.
pub(super) fn list_path(repo: &str, base: &str) -> String {
    format!("{repo}/pulls?state=open&base={}&per_page=100", encode(base))
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The merged pull request among those GitHub associates with `sha`: the
/// one whose merge commit it is.
#[derive(Deserialize)]
struct Associated {
    number: u64,
    merged_at: Option<String>,
    merge_commit_sha: Option<String>,
}

fn merged_number(list: &[Associated], sha: &str) -> Option<u64> {
    list.iter()
        .find(|p| p.merged_at.is_some() && p.merge_commit_sha.as_deref() == Some(sha))
        .map(|p| p.number)
}

impl Forge for GitHub {
    fn kind(&self) -> ForgeKind {
        ForgeKind::Github
    }

    fn repository(&self) -> &str {
        &self.http.repository
    }

    fn open_pulls(
        &self,
        base: &str,
        etag: Option<&str>,
    ) -> Result<Listing<Vec<PullRequest>>, Error> {
        let mut call = Call::get("list_pulls", READ_PULLS, list_path(&self.repo, base));
        call.etag = etag;
        let answer = self.http.call(&call)?.expect("no 404 allowed");
        if answer.status == 304 {
            return Ok(Listing::NotModified);
        }
        let pulls: Vec<Pull> = answer.json(self.kind(), call.op)?;
        Ok(Listing::Changed {
            items: pulls.into_iter().map(PullRequest::from).collect(),
            etag: answer.etag,
        })
    }

    fn comments(&self, pr: u64) -> Result<Vec<Comment>, Error> {
        let call = Call::get(
            "list_comments",
            READ_PULLS,
            format!("{}/issues/{pr}/comments?per_page=100", self.repo),
        );
        let list: Vec<IssueComment> = self.http.pages(&call, 20)?;
        Ok(list.into_iter().map(Comment::from).collect())
    }

    fn create_comment(&self, pr: u64, body: &str) -> Result<Comment, Error> {
        let call = Call::send(
            "create_comment",
            WRITE_PULLS,
            "POST",
            format!("{}/issues/{pr}/comments", self.repo),
            serde_json::json!({ "body": body }),
        );
        Ok(self.http.must::<IssueComment>(&call)?.into())
    }

    fn edit_comment(&self, _pr: u64, id: u64, body: &str) -> Result<Comment, Error> {
        let call = Call::send(
            "edit_comment",
            WRITE_PULLS,
            "PATCH",
            format!("{}/issues/comments/{id}", self.repo),
            serde_json::json!({ "body": body }),
        );
        Ok(self.http.must::<IssueComment>(&call)?.into())
    }

    fn statuses(&self, sha: &str) -> Result<Vec<CommitStatus>, Error> {
        let call = Call::get(
            "list_statuses",
            READ_STATUSES,
            format!("{}/commits/{sha}/statuses?per_page=100", self.repo),
        );
        Ok(statuses(self.http.must::<Vec<Status>>(&call)?))
    }

    fn set_status(&self, sha: &str, status: &CommitStatus) -> Result<(), Error> {
        let call = Call::send(
            "set_status",
            WRITE_STATUSES,
            "POST",
            format!("{}/statuses/{sha}", self.repo),
            status_body(status),
        );
        self.http.call(&call)?;
        Ok(())
    }

    fn merged_pull(&self, sha: &str) -> Result<Option<PullRequest>, Error> {
        let call = Call::get(
            "merged_pull",
            READ_PULLS,
            format!("{}/commits/{sha}/pulls", self.repo),
        );
        let list: Vec<Associated> = self.http.must(&call)?;
        let Some(number) = merged_number(&list, sha) else {
            return Ok(None);
        };
        // The list has no `merged_by`: the pull request itself does.
        let call = Call::get(
            "get_pull",
            READ_PULLS,
            format!("{}/pulls/{number}", self.repo),
        );
        Ok(Some(self.http.must::<Pull>(&call)?.into()))
    }

    fn reviews(&self, pr: &PullRequest) -> Result<Vec<ReviewEvent>, Error> {
        let call = Call::get(
            "list_reviews",
            READ_PULLS,
            format!("{}/pulls/{}/reviews?per_page=100", self.repo, pr.number),
        );
        Ok(review_events(self.http.pages::<PullReview>(&call, 20)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forge::State;

    // From docs.github.com/rest (pulls, reviews, statuses, commits/{sha}/pulls),
    // trimmed to the fields converge reads.
    const PULL: &str = r#"{
      "url": "https://api.github.com/repos/octocat/Hello-World/pulls/1347",
      "html_url": "https://github.com/octocat/Hello-World/pull/1347",
      "number": 1347, "state": "closed", "title": "Amazing new feature",
      "user": {"login": "octocat", "id": 1},
      "merged_at": "2011-01-26T19:01:12Z",
      "merge_commit_sha": "e5bd3914e2e596debea16f433f57875b5b90bcd6",
      "head": {"label": "octocat:new-topic", "ref": "new-topic", "sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e"},
      "base": {"label": "octocat:master", "ref": "master", "sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e"},
      "merged": true, "merged_by": {"login": "hubot", "id": 2}
    }"#;

    const REVIEWS: &str = r#"[{
      "id": 80, "user": {"login": "octocat", "id": 1},
      "body": "Here is the body for the review.", "state": "APPROVED",
      "html_url": "https://github.com/octocat/Hello-World/pull/12#pullrequestreview-80",
      "commit_id": "ecdd80bb57125d7ba9641ffaa4d7d2c19d3f3091"
    }, {
      "id": 81, "user": {"login": "hubot", "id": 2}, "state": "APPROVED",
      "commit_id": "6dcb09b5b57875f334f61aebed695e2e4193db5e"
    }, {
      "id": 82, "user": {"login": "monalisa", "id": 3}, "state": "DISMISSED",
      "commit_id": "6dcb09b5b57875f334f61aebed695e2e4193db5e"
    }]"#;

    const STATUSES: &str = r#"[{
      "url": "https://api.github.com/repos/octocat/Hello-World/statuses/6dcb09b5b57875f334f61aebed695e2e4193db5e",
      "id": 1, "state": "success", "description": "Build has completed successfully",
      "target_url": "https://ci.example.com/1000/output", "context": "continuous-integration/jenkins"
    }]"#;

    #[test]
    fn github_pull_requests_and_reviews_read_as_converge_sees_them() {
        let pr = PullRequest::from(serde_json::from_str::<Pull>(PULL).expect("pull"));
        assert_eq!(pr.number, 1347);
        assert!(pr.merged);
        assert_eq!(pr.merged_by.as_deref(), Some("hubot"));
        assert_eq!(pr.author, "octocat");
        assert_eq!(pr.base_ref, "master");
        let events = review_events(serde_json::from_str(REVIEWS).expect("reviews"));
        let (approvers, stale) = crate::review::count(&pr.author, &pr.head_sha, &events);
        // octocat is the author; monalisa's review was dismissed.
        assert_eq!(approvers.into_iter().collect::<Vec<_>>(), ["hubot"]);
        assert!(stale.is_empty());
        let s = statuses(serde_json::from_str(STATUSES).expect("statuses"));
        assert_eq!(s[0].state, State::Success);
        assert_eq!(s[0].context, "continuous-integration/jenkins");
    }

    #[test]
    fn github_requests_have_its_paths_and_bodies() {
        assert_eq!(
            list_path("/repos/o/r", "release/1.0"),
            "/repos/o/r/pulls?state=open&base=release/1.0&per_page=100"
        );
        assert_eq!(
            list_path("/repos/o/r", "a b"),
            "/repos/o/r/pulls?state=open&base=a%20b&per_page=100"
        );
        let body = status_body(&CommitStatus {
            context: "converge/prod/apply".into(),
            state: State::Pending,
            description: "applying".into(),
            target_url: Some("https://converge.example.com/environments/prod-a".into()),
        });
        // POST /repos/{owner}/{repo}/statuses/{sha}: state, target_url, description, context.
        assert_eq!(
            body,
            serde_json::json!({"state": "pending", "context": "converge/prod/apply",
                "description": "applying",
                "target_url": "https://converge.example.com/environments/prod-a"})
        );
        let associated: Vec<Associated> = serde_json::from_str(
            r#"[{"number": 1, "merged_at": null, "merge_commit_sha": "abc"},
                {"number": 1347, "merged_at": "2011-01-26T19:01:12Z", "merge_commit_sha": "abc"}]"#,
        )
        .expect("associated");
        assert_eq!(merged_number(&associated, "abc"), Some(1347));
        assert_eq!(merged_number(&associated, "def"), None);
    }
}
