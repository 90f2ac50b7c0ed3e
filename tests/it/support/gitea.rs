//! A real Gitea (v1.27.3, built by `scripts/tools`) for the forge tests: on
//! 127.0.0.1 on a free port, `SQLite`, in a temporary directory, under
//! `scripts/tether` (a killed test leaves no server), stopped on drop.
//!
//! Three users are made through Gitea's CLI: `admin` (a site admin),
//! `reviewer` and `author`, each with an access token of every scope.
//! Repositories are per test ([`Gitea::repo`]): created by the admin with
//! `auto_init`, both other users collaborators with write access. Commits are
//! pushed over HTTP with a token by the real `git`; pull requests are opened,
//! reviewed and merged through the API, and comments and commit statuses
//! read back from it.
//!
//! One instance per test process ([`Gitea::shared`]); a test that stops the
//! server ([`Gitea::stop`], [`Gitea::start_again`]) starts its own
//! ([`Gitea::start`]).

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::free_port;
use super::kube::tool;

pub const ADMIN: &str = "admin";
pub const REVIEWER: &str = "reviewer";
pub const AUTHOR: &str = "author";
const PASSWORD: &str = "converge-test-password-1";

/// The Gitea source tree (locales, templates): `[server] STATIC_ROOT_PATH`.
fn static_root() -> PathBuf {
    let bin = tool("gitea");
    let root = bin
        .parent()
        .and_then(Path::parent)
        .expect("tools dir")
        .join("share/gitea");
    assert!(
        root.join("options").is_dir(),
        "{} is missing: scripts/tools keeps Gitea's source tree there",
        root.display()
    );
    root
}

/// A running Gitea and its users' tokens.
pub struct Gitea {
    pub port: u16,
    dir: tempfile::TempDir,
    server: Mutex<Option<Child>>,
    tokens: Vec<(String, String)>,
    agent: ureq::Agent,
}

impl Gitea {
    /// The instance every forge test shares that needs no stop of its own.
    pub fn shared() -> &'static Gitea {
        static SHARED: OnceLock<Gitea> = OnceLock::new();
        SHARED.get_or_init(Gitea::start)
    }

    /// A new Gitea with its three users.
    #[must_use]
    pub fn start() -> Gitea {
        let started = Instant::now();
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut gitea = Gitea {
            port,
            dir,
            server: Mutex::new(None),
            tokens: Vec::new(),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(30)))
                .build()
                .into(),
        };
        gitea.write_ini();
        gitea.cli(&["migrate"]);
        for user in [ADMIN, REVIEWER, AUTHOR] {
            let mut args = vec![
                "admin",
                "user",
                "create",
                "--username",
                user,
                "--password",
                PASSWORD,
                "--must-change-password=false",
            ];
            let email = format!("{user}@company.com");
            args.extend(["--email", &email]);
            if user == ADMIN {
                args.push("--admin");
            }
            gitea.cli(&args);
            let token = gitea.token(user, "all");
            gitea.tokens.push((user.to_owned(), token));
        }
        gitea.start_again();
        eprintln!(
            "gitea: {} ready in {:.1} s",
            gitea.url(),
            started.elapsed().as_secs_f64()
        );
        gitea
    }

    fn ini(&self) -> PathBuf {
        self.dir.path().join("app.ini")
    }

    fn write_ini(&self) {
        let d = self.dir.path();
        let root = if rustix::process::getuid().is_root() {
            "I_AM_BEING_UNSAFE_RUNNING_AS_ROOT = true\n"
        } else {
            ""
        };
        let random = |n: usize| (0..n).map(|_| fastrand::alphanumeric()).collect::<String>();
        let ini = format!(
            "{root}APP_NAME = converge-test\nRUN_MODE = prod\nWORK_PATH = {work}\n\n\
             [security]\nINSTALL_LOCK = true\nSECRET_KEY = {secret}\nINTERNAL_TOKEN = {internal}\n\n\
             [database]\nDB_TYPE = sqlite3\nPATH = {work}/gitea.db\n\n\
             [server]\nHTTP_ADDR = 127.0.0.1\nHTTP_PORT = {port}\nROOT_URL = {url}/\n\
             DISABLE_SSH = true\nOFFLINE_MODE = true\nSTATIC_ROOT_PATH = {static_root}\n\
             APP_DATA_PATH = {work}/data\nLFS_START_SERVER = false\n\n\
             [repository]\nROOT = {work}/repos\n\n\
             [service]\nDISABLE_REGISTRATION = true\n\n\
             [log]\nMODE = file\nLEVEL = Warn\nROOT_PATH = {work}/log\n\n\
             [queue]\nTYPE = level\n\n\
             [indexer]\nISSUE_INDEXER_TYPE = db\nREPO_INDEXER_ENABLED = false\n\n\
             [cron]\nENABLED = false\n\n\
             [mailer]\nENABLED = false\n\n\
             [api]\nMAX_RESPONSE_ITEMS = 100\n",
            work = d.display(),
            secret = random(32),
            internal = random(64),
            port = self.port,
            url = self.url(),
            static_root = static_root().display(),
        );
        std::fs::write(self.ini(), ini).expect("write app.ini");
    }

    /// Runs `gitea ARGS --config app.ini`; returns its trimmed stdout.
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(tool("gitea"))
            .args(args)
            .arg("--config")
            .arg(self.ini())
            .arg("--work-path")
            .arg(self.dir.path())
            .env("GITEA_WORK_DIR", self.dir.path())
            .env_remove("GITEA_CUSTOM")
            .output()
            .expect("gitea runs");
        assert!(
            out.status.success(),
            "gitea {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A new access token of `user` with `scopes` (comma-separated Gitea
    /// scopes, e.g. `all` or `read:repository`).
    #[must_use]
    pub fn token(&self, user: &str, scopes: &str) -> String {
        let name = format!("t{}", fastrand::u64(..));
        self.cli(&[
            "admin",
            "user",
            "generate-access-token",
            "--username",
            user,
            "--token-name",
            &name,
            "--scopes",
            scopes,
            "--raw",
        ])
    }

    /// `user`'s token of every scope (made at start).
    #[must_use]
    pub fn user_token(&self, user: &str) -> &str {
        &self
            .tokens
            .iter()
            .find(|(u, _)| u == user)
            .unwrap_or_else(|| panic!("no user {user}"))
            .1
    }

    /// `http://127.0.0.1:PORT`, the same across restarts.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The API's base URL.
    #[must_use]
    pub fn api_url(&self) -> String {
        format!("{}/api/v1", self.url())
    }

    /// Stops the server (the data stays; [`Gitea::start_again`] serves it).
    pub fn stop(&self) {
        let mut server = self
            .server
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(mut child) = server.take() {
            drop(child.stdin.take());
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts `gitea web` (again) on the same port and waits until it answers.
    pub fn start_again(&self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("gitea.log"))
            .expect("log file");
        let mut child = Command::new(super::repo().join("scripts/tether"))
            .args(["--grace", "5"])
            .arg(tool("gitea"))
            .arg("web")
            .arg("--config")
            .arg(self.ini())
            .arg("--work-path")
            .arg(self.dir.path())
            .env("GITEA_WORK_DIR", self.dir.path())
            .env_remove("GITEA_CUSTOM")
            .current_dir(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("scripts/tether gitea web");
        let deadline = Instant::now() + Duration::from_mins(1);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("gitea web exited ({status}):\n{}", self.log_tail());
            }
            if self
                .agent
                .get(format!("{}/version", self.api_url()))
                .call()
                .is_ok_and(|r| r.status() == 200)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "gitea not ready in a minute:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        *self
            .server
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(child);
    }

    fn log_tail(&self) -> String {
        let mut text = String::new();
        for log in [
            self.dir.path().join("gitea.log"),
            self.dir.path().join("log/gitea.log"),
        ] {
            text.push_str(&std::fs::read_to_string(log).unwrap_or_default());
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// `METHOD /api/v1{path}` as `user` with a JSON body; the status and the
    /// JSON answer (`null` when empty).
    pub fn api(&self, user: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.api_url());
        let auth = format!("token {}", self.user_token(user));
        let response = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
            ("DELETE", _) => self
                .agent
                .delete(&url)
                .header("Authorization", &auth)
                .call(),
            (m, b) => {
                let b = b.cloned().unwrap_or(Value::Null).to_string();
                let request = match m {
                    "POST" => self.agent.post(&url),
                    "PUT" => self.agent.put(&url),
                    "PATCH" => self.agent.patch(&url),
                    other => panic!("method {other}"),
                };
                request
                    .header("Authorization", &auth)
                    .header("Content-Type", "application/json")
                    .send(b)
            }
        };
        let mut response = response.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    /// Like [`Gitea::api`], asserting a 2xx answer.
    pub fn ok(&self, user: &str, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (status, value) = self.api(user, method, path, body);
        assert!(
            (200..300).contains(&status),
            "{method} {path} as {user}: {status} {value}"
        );
        value
    }

    /// A new repository `admin/NAME` (with a first commit on `main`), the
    /// reviewer and the author collaborators with write access.
    pub fn repo(&self, name: &str) -> GiteaRepo<'_> {
        self.ok(
            ADMIN,
            "POST",
            "/user/repos",
            Some(
                &json!({"name": name, "auto_init": true, "default_branch": "main",
                         "private": false}),
            ),
        );
        for user in [REVIEWER, AUTHOR] {
            self.ok(
                ADMIN,
                "PUT",
                &format!("/repos/{ADMIN}/{name}/collaborators/{user}"),
                Some(&json!({"permission": "write"})),
            );
        }
        let work = tempfile::tempdir().expect("tempdir");
        let repo = GiteaRepo {
            gitea: self,
            owner: ADMIN.to_owned(),
            name: name.to_owned(),
            work,
        };
        repo.git(&["init", "-q", "-b", "main", "."]);
        for (k, v) in [
            ("user.name", "Ann Author"),
            ("user.email", "author@company.com"),
            ("commit.gpgsign", "false"),
        ] {
            repo.git(&["config", k, v]);
        }
        repo.git(&["remote", "add", "origin", &repo.push_url(AUTHOR)]);
        repo.git(&["fetch", "-q", "origin", "main"]);
        repo.git(&["checkout", "-q", "-B", "main", "origin/main"]);
        repo
    }
}

impl Drop for Gitea {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A repository on a [`Gitea`] and a work clone pushing to it.
pub struct GiteaRepo<'g> {
    pub gitea: &'g Gitea,
    pub owner: String,
    pub name: String,
    work: tempfile::TempDir,
}

impl GiteaRepo<'_> {
    /// The clone URL without credentials (what a git source names).
    #[must_use]
    pub fn clone_url(&self) -> String {
        format!("{}/{}/{}.git", self.gitea.url(), self.owner, self.name)
    }

    /// The clone URL with `user`'s token in it.
    #[must_use]
    pub fn push_url(&self, user: &str) -> String {
        format!(
            "http://{user}:{}@127.0.0.1:{}/{}/{}.git",
            self.gitea.user_token(user),
            self.gitea.port,
            self.owner,
            self.name
        )
    }

    #[must_use]
    pub fn work(&self) -> &Path {
        self.work.path()
    }

    /// `/repos/{owner}/{name}`.
    #[must_use]
    pub fn path(&self) -> String {
        format!("/repos/{}/{}", self.owner, self.name)
    }

    /// Runs `git ARGS` in the work clone; its trimmed stdout.
    pub fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(self.work())
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// On `branch` (created from `main` when new): writes (or with `None`
    /// removes) files, commits as `user`, pushes with `user`'s token; the
    /// new commit's id.
    pub fn push(
        &self,
        user: &str,
        branch: &str,
        files: &[(&str, Option<&str>)],
        message: &str,
    ) -> String {
        self.git(&["fetch", "-q", "origin"]);
        let exists = self
            .git(&["ls-remote", "--heads", "origin", branch])
            .contains(branch);
        let from = if exists {
            format!("origin/{branch}")
        } else {
            "origin/main".to_owned()
        };
        self.git(&["checkout", "-q", "-B", branch, &from]);
        for (path, content) in files {
            let full = self.work().join(path);
            match content {
                Some(c) => {
                    std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
                    std::fs::write(&full, c).expect("write");
                }
                None => {
                    let _ = std::fs::remove_file(&full);
                }
            }
        }
        self.git(&["add", "-A"]);
        let who = format!("{user} <{user}@company.com>");
        self.git(&[
            "-c",
            &format!("user.name={user}"),
            "-c",
            &format!("user.email={user}@company.com"),
            "commit",
            "-q",
            "--allow-empty",
            "--author",
            &who,
            "-m",
            message,
        ]);
        let push_url = self.push_url(user);
        self.git(&[
            "push",
            "-q",
            &push_url,
            &format!("HEAD:refs/heads/{branch}"),
        ]);
        self.git(&["rev-parse", "HEAD"])
    }

    /// Opens a pull request of `head` into `main` as `user`: its number.
    pub fn open_pull(&self, user: &str, head: &str, title: &str) -> u64 {
        let pr = self.gitea.ok(
            user,
            "POST",
            &format!("{}/pulls", self.path()),
            Some(&json!({"head": head, "base": "main", "title": title})),
        );
        pr["number"].as_u64().expect("PR number")
    }

    /// The pull request `number` as the API shows it.
    pub fn pull(&self, number: u64) -> Value {
        self.gitea.ok(
            ADMIN,
            "GET",
            &format!("{}/pulls/{number}", self.path()),
            None,
        )
    }

    /// `user` approves pull request `number` (at its current head).
    pub fn approve(&self, user: &str, number: u64) {
        let (status, body) = self.try_approve(user, number);
        assert!(
            (200..300).contains(&status),
            "approval of PR {number} by {user}: {status} {body}"
        );
    }

    /// `user` tries to approve pull request `number`: Gitea's answer
    /// (it refuses the poster's own approval with 422).
    pub fn try_approve(&self, user: &str, number: u64) -> (u16, Value) {
        let head = self.pull(number)["head"]["sha"]
            .as_str()
            .expect("head sha")
            .to_owned();
        self.gitea.api(
            user,
            "POST",
            &format!("{}/pulls/{number}/reviews", self.path()),
            Some(&json!({"event": "APPROVED", "body": "lgtm", "commit_id": head})),
        )
    }

    /// `user` merges pull request `number` (a merge commit); the merge
    /// commit's id.
    pub fn merge(&self, user: &str, number: u64) -> String {
        // Gitea checks mergeability in a queue: retry while it says no.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = self.gitea.api(
                user,
                "POST",
                &format!("{}/pulls/{number}/merge", self.path()),
                Some(&json!({"Do": "merge"})),
            );
            if (200..300).contains(&status) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "merge of PR {number}: {status} {body}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        self.pull(number)["merge_commit_sha"]
            .as_str()
            .expect("merge commit")
            .to_owned()
    }

    /// The issue comments of pull request `number`: (id, author, body).
    pub fn comments(&self, number: u64) -> Vec<(u64, String, String)> {
        let list = self.gitea.ok(
            ADMIN,
            "GET",
            &format!("{}/issues/{number}/comments", self.path()),
            None,
        );
        list.as_array()
            .expect("comments")
            .iter()
            .map(|c| {
                (
                    c["id"].as_u64().unwrap_or_default(),
                    c["user"]["login"].as_str().unwrap_or_default().to_owned(),
                    c["body"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// The commit statuses on `sha`, newest first: (context, state,
    /// description, target URL).
    pub fn statuses(&self, sha: &str) -> Vec<(String, String, String, String)> {
        let list = self.gitea.ok(
            ADMIN,
            "GET",
            &format!("{}/commits/{sha}/statuses?limit=100", self.path()),
            None,
        );
        let mut list = list.as_array().expect("statuses").clone();
        // Gitea lists them oldest first.
        list.sort_by_key(|s| std::cmp::Reverse(s["id"].as_u64().unwrap_or_default()));
        list.iter()
            .map(|s| {
                let text = |k: &str| s[k].as_str().unwrap_or_default().to_owned();
                (
                    text("context"),
                    text("status"),
                    text("description"),
                    text("target_url"),
                )
            })
            .collect()
    }
}
