//! `--wait`: follows environments through the daemon's read-only API (the
//! `converge status` client) until each is decided: applied from the
//! written object and Ready (0); Stalled, Failed, Expired or refused (1);
//! gone after `rm` (0), or its deletion held or failed (1). Progress is one
//! rewritten line on a terminal, a plain line per change otherwise (stderr).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::bucket::Bucket;
use super::{Common, Error};
use crate::status_client::{self, Options};

/// How often the API is asked.
const POLL: Duration = Duration::from_millis(500);

/// What to wait for.
#[derive(Debug, Clone)]
pub(super) enum Awaited {
    /// The environment applied from this version of its object.
    Applied {
        name: String,
        etag: String,
        object: String,
    },
    /// The environment deleted.
    Gone { name: String },
}

/// The API to follow, and the source's revision before the write (a
/// refusal counts only once the daemon has listed the bucket since).
pub(super) struct Follow {
    api: Options,
    source: String,
    revision_before: Option<String>,
    /// The newest event's id before the write.
    events_before: u64,
    timeout: Duration,
}

impl Follow {
    /// Asks the API for the source's revision before anything is written,
    /// so an unreachable API fails the command before the write.
    pub(super) fn start(bucket: &Bucket, common: &Common) -> Result<Follow, Error> {
        let api = &bucket.config.api;
        let url = common.url.clone().unwrap_or_else(|| {
            let scheme = if api.tls.is_some() { "https" } else { "http" };
            let listen = api
                .listen
                .replace("0.0.0.0:", "127.0.0.1:")
                .replace("[::]:", "[::1]:");
            format!("{scheme}://{listen}")
        });
        let options = Options {
            url,
            token_file: common.token_file.clone().or_else(|| api.token_file.clone()),
            ca_file: common.ca_file.clone(),
            json: true,
            environment: None,
        };
        let follow = Follow {
            revision_before: None,
            events_before: 0,
            source: bucket.name.clone(),
            api: options,
            timeout: common.wait_timeout,
        };
        let revision_before = follow.revision()?;
        let events_before = follow
            .events()?
            .iter()
            .filter_map(|e| e["id"].as_u64())
            .max()
            .unwrap_or(0);
        Ok(Follow {
            revision_before,
            events_before,
            ..follow
        })
    }

    /// The API's events, newest first.
    fn events(&self) -> Result<Vec<Value>, Error> {
        Ok(match status_client::events(&self.api)? {
            Value::Object(mut o) => match o.remove("items") {
                Some(Value::Array(items)) => items,
                _ => Vec::new(),
            },
            _ => Vec::new(),
        })
    }

    /// A warning since the write about environment `name` or the object
    /// (a refusal that leaves no status row, such as a limit on a new
    /// environment), as `message (reason)`.
    fn refusal_event(&self, name: &str, object: &str) -> Result<Option<String>, Error> {
        Ok(self
            .events()?
            .into_iter()
            .filter(|e| e["id"].as_u64().is_some_and(|id| id > self.events_before))
            .filter(|e| e["type"] == "Warning")
            .find(|e| {
                e["environment"] == name
                    || e["message"].as_str().is_some_and(|m| m.contains(object))
            })
            .map(|e| {
                format!(
                    "{} ({})",
                    e["message"].as_str().unwrap_or_default(),
                    e["reason"].as_str().unwrap_or_default()
                )
            }))
    }

    /// The source's revision as the daemon last read it.
    fn revision(&self) -> Result<Option<String>, Error> {
        let sources = status_client::sources(&self.api)?;
        Ok(sources["items"]
            .as_array()
            .and_then(|items| items.iter().find(|s| s["name"] == self.source.as_str()))
            .and_then(|s| s["revision"].as_str())
            .map(str::to_owned))
    }

    /// Follows each in turn; the highest exit code.
    pub(super) fn until_done(&self, awaited: &[Awaited]) -> Result<u8, Error> {
        let mut code = 0;
        let mut progress = Progress::new();
        for a in awaited {
            code = code.max(self.one(a, &mut progress)?);
        }
        Ok(code)
    }

    fn one(&self, awaited: &Awaited, progress: &mut Progress) -> Result<u8, Error> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let (name, decided) = match awaited {
                Awaited::Applied { name, etag, object } => {
                    let detail = status_client::environment(&self.api, name)?;
                    (name, self.applied(name, detail.as_ref(), etag, object)?)
                }
                Awaited::Gone { name } => {
                    let detail = status_client::environment(&self.api, name)?;
                    (name, gone(detail.as_ref()))
                }
            };
            match decided {
                Decided::Done(code, line) => {
                    progress.finish(&format!("{name}: {line}"));
                    return Ok(code);
                }
                Decided::Waiting(line) => {
                    let line = format!("{name}: {line}");
                    if Instant::now() >= deadline {
                        progress.finish(&line);
                        return Err(Error::Refused(format!(
                            "{name}: still not decided after {} (--wait-timeout)",
                            crate::config::format_duration(self.timeout)
                        )));
                    }
                    progress.show(&line);
                }
            }
            std::thread::sleep(POLL);
        }
    }

    /// Whether the environment is applied from the object version `etag`.
    fn applied(
        &self,
        name: &str,
        detail: Option<&Value>,
        etag: &str,
        object: &str,
    ) -> Result<Decided, Error> {
        let ours = detail.is_some_and(|d| d["provenance"]["etag"] == etag);
        if !ours && let Some(why) = self.refusal_event(name, object)? {
            return Ok(Decided::Done(1, format!("refused: {why}")));
        }
        let Some(d) = detail else {
            return Ok(Decided::Waiting(
                "waiting for the daemon to read the bucket".to_owned(),
            ));
        };
        let status = d["status"].as_str().unwrap_or_default();
        let why = condition(d);
        Ok(match status {
            "Ready" if ours => Decided::Done(0, "applied and Ready".to_owned()),
            "Stalled" | "Failed" | "Expired" if ours => {
                Decided::Done(1, format!("{status}: {why}"))
            }
            // A refused claim has no provenance of its own (the environment
            // keeps its last good one): it is this write's refusal once the
            // daemon has listed the bucket since the write (its revision
            // moved), or when the refusal names the object.
            "Invalid" if why.contains(object) || self.revision()? != self.revision_before => {
                Decided::Done(1, format!("refused: {why}"))
            }
            _ if !ours => Decided::Waiting(format!(
                "{status} (an earlier version); waiting for the daemon to read this one"
            )),
            _ => Decided::Waiting(format!("{status}: {why}")),
        })
    }
}

/// Whether the environment is gone.
fn gone(detail: Option<&Value>) -> Decided {
    let Some(d) = detail else {
        return Decided::Done(0, "gone".to_owned());
    };
    let status = d["status"].as_str().unwrap_or_default();
    let why = condition(d);
    match status {
        "Held" | "Failed" => Decided::Done(1, format!("{status}: {why}")),
        _ => Decided::Waiting(format!("{status}: waiting for its deletion")),
    }
}

/// The first condition's reason and message.
fn condition(d: &Value) -> String {
    let c = &d["conditions"][0];
    match (c["reason"].as_str(), c["message"].as_str()) {
        (Some(r), Some(m)) => format!("{m} ({r})"),
        _ => String::new(),
    }
}

enum Decided {
    Done(u8, String),
    Waiting(String),
}

/// Progress on stderr: a rewritten line on a terminal, else one line per change.
struct Progress {
    terminal: bool,
    last: String,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            terminal: std::io::stderr().is_terminal(),
            last: String::new(),
        }
    }

    fn show(&mut self, line: &str) {
        if line == self.last {
            return;
        }
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        line.clone_into(&mut self.last);
    }

    fn finish(&mut self, line: &str) {
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let _ = writeln!(err, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        self.last.clear();
    }
}
