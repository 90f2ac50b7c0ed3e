//! Tag sources (IO): the tags that exist, read from OCI registries
//! (`registry/`) or a repository's git tags (`git.rs`), for the pure
//! resolve stage to resolve constraints against. The config calls this the
//! `versions:` section (`versions.from`); its fixed lists are `tags:`.
//!
//! A [`Scanner`] lists the repositories of the services the claims need
//! ([`Key`]: a service, and whether its dev tags are meant) and keeps each
//! one's last good list. A failed listing keeps the last good list (and
//! marks it stale, so environments resolving against it say `TagsStale`);
//! nothing is ever dropped because a registry could not be read. Lists are
//! handed to the pipeline as a [`TagSet`]; a list whose tags did not change
//! keeps its digest, so no claim is resolved or rendered again for it.

pub mod git;
pub mod registry;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{Config, VersionsFrom};
use crate::resolve::{TagList, TagSet};

/// The tags of one service (its dev tags when `dev`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub service: String,
    pub dev: bool,
}

impl Key {
    /// The key in the state store: `release/<service>` or `dev/<service>`.
    #[must_use]
    pub fn stored(&self) -> String {
        format!(
            "{}/{}",
            if self.dev { "dev" } else { "release" },
            self.service
        )
    }

    fn parse(s: &str) -> Option<Key> {
        let (kind, service) = s.split_once('/')?;
        let dev = match kind {
            "dev" => true,
            "release" => false,
            _ => return None,
        };
        Some(Key {
            service: service.to_owned(),
            dev,
        })
    }
}

/// Why tags could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Registry(#[from] registry::Error),
    #[error(transparent)]
    Git(#[from] git::Error),
    #[error("images.{field}: {value:?} is not <host>[:port]/<path>")]
    BadRegistry { field: &'static str, value: String },
}

impl Error {
    /// A stable reason for conditions and metric labels.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Registry(e) => e.reason(),
            Self::Git(e) => e.reason(),
            Self::BadRegistry { .. } => "Misconfigured",
        }
    }
}

/// A list as the state store keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredList {
    pub tags: Vec<String>,
    pub listed_at: String,
}

/// One service's last good list and how its last listing went.
#[derive(Debug, Clone)]
struct Known {
    list: Arc<TagList>,
    listed_at: DateTime<Utc>,
    /// Listed successfully by this process, and the last attempt succeeded.
    fresh: bool,
}

/// Where repositories are listed.
enum Backend {
    Registry {
        /// Per host, one client.
        clients: BTreeMap<String, Arc<registry::Registry>>,
        /// (host, path prefix) of release and dev images.
        release: (String, String),
        dev: Option<(String, String)>,
    },
    Git {
        url: String,
        prefix: String,
        auth: crate::config::GitAuth,
        state_dir: std::path::PathBuf,
        /// The bound on one listing.
        timeout: Duration,
        /// URLs whose (abandoned) listing still runs.
        running: Arc<Mutex<BTreeSet<String>>>,
    },
}

/// What one scan did.
#[derive(Debug, Default)]
pub struct ScanOutcome {
    /// Some list's tags changed (or a list appeared).
    pub changed: bool,
    /// Some list turned stale or fresh again.
    pub staleness_changed: bool,
    /// Listings that failed: the key and the error's reason and message.
    pub failed: Vec<(Key, String, String)>,
    /// Repositories listed successfully.
    pub listed: usize,
}

/// The scan's state for the API: like a source's.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub last_success: Option<DateTime<Utc>>,
    pub errors: u64,
    pub last_error: Option<(String, String)>,
    pub scans: u64,
}

/// Lists the tags of the services the claims need and keeps the last good lists.
pub struct Scanner {
    backend: Backend,
    kind: &'static str,
    wanted: BTreeSet<Key>,
    known: BTreeMap<Key, Known>,
    /// The last failure per key (also for keys never listed).
    errors: BTreeMap<Key, (String, String)>,
    /// Keys whose list changed since the state store last got it.
    dirty: BTreeSet<Key>,
    pub interval: Duration,
    concurrency: usize,
    budget: u32,
    pub status: Status,
}

impl std::fmt::Debug for Scanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scanner")
            .field("kind", &self.kind)
            .field("wanted", &self.wanted.len())
            .finish_non_exhaustive()
    }
}

/// `host[:port]/path` -> (`host[:port]`, `path`).
fn split_registry(field: &'static str, value: &str) -> Result<(String, String), Error> {
    let bad = || Error::BadRegistry {
        field,
        value: value.to_owned(),
    };
    let value = value.trim_end_matches('/');
    let (host, path) = value.split_once('/').unwrap_or((value, ""));
    if host.is_empty() || host.contains("://") {
        return Err(bad());
    }
    Ok((host.to_owned(), path.to_owned()))
}

impl Scanner {
    /// The scanner a config asks for; `None` with `versions.from: static`.
    ///
    /// # Errors
    ///
    /// A registry that is not `host/path`, an unreadable CA file, bad git auth.
    pub fn from_config(config: &Config) -> Result<Option<Scanner>, Error> {
        let v = &config.versions;
        let (backend, kind) = match v.from {
            VersionsFrom::Static => return Ok(None),
            VersionsFrom::Registry => {
                let release = split_registry("registry", &config.images.registry)?;
                let dev = config
                    .images
                    .dev_registry
                    .as_deref()
                    .map(|d| split_registry("dev_registry", d))
                    .transpose()?;
                let credentials = credentials(v);
                let mut clients = BTreeMap::new();
                for (host, _) in std::iter::once(&release).chain(dev.iter()) {
                    if clients.contains_key(host) {
                        continue;
                    }
                    let client = registry::Registry::new(registry::Options {
                        host: host.clone(),
                        plain_http: v.plain_http,
                        credentials: credentials.clone(),
                        ca_file: v.ca_file.clone(),
                        timeout: v.timeout,
                        max_tags: v.max_tags,
                        page_size: v.page_size,
                    })?;
                    clients.insert(host.clone(), Arc::new(client));
                }
                (
                    Backend::Registry {
                        clients,
                        release,
                        dev,
                    },
                    "registry",
                )
            }
            VersionsFrom::Git => {
                let Some(git) = &v.git else {
                    return Ok(None);
                };
                let auth = git
                    .auth
                    .as_ref()
                    .map(crate::config::GitAuthConfig::method)
                    .transpose()
                    .map_err(|message| git::Error::Local {
                        url: crate::source::sanitize_url(&git.url),
                        path: config.state_dir.clone(),
                        message,
                    })?
                    .unwrap_or_default();
                (
                    Backend::Git {
                        url: git.url.clone(),
                        prefix: git.prefix.clone(),
                        auth,
                        state_dir: config.state_dir.clone(),
                        timeout: v.timeout,
                        running: Arc::default(),
                    },
                    "git-tags",
                )
            }
        };
        Ok(Some(Scanner {
            backend,
            kind,
            wanted: BTreeSet::new(),
            known: BTreeMap::new(),
            errors: BTreeMap::new(),
            dirty: BTreeSet::new(),
            interval: v.interval,
            concurrency: v.concurrency.max(1),
            budget: v.budget,
            status: Status::default(),
        }))
    }

    /// `registry` or `git-tags`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The key a lookup of `service` (dev or not) is listed under: without a
    /// dev registry (and for git tags) dev lookups use the release list.
    fn normalize(&self, service: &str, dev: bool) -> Key {
        let dev = dev && matches!(&self.backend, Backend::Registry { dev: Some(_), .. });
        Key {
            service: service.to_owned(),
            dev,
        }
    }

    /// The services the claims need now (scans list only these); returns
    /// the keys never tried yet.
    pub fn want(&mut self, wanted: &BTreeSet<(String, bool)>) -> Vec<Key> {
        let now: BTreeSet<Key> = wanted
            .iter()
            .map(|(service, dev)| self.normalize(service, *dev))
            .collect();
        let new = now
            .iter()
            .filter(|k| !self.known.contains_key(*k) && !self.errors.contains_key(*k))
            .cloned()
            .collect();
        self.errors.retain(|k, _| now.contains(k));
        self.wanted = now;
        new
    }

    /// The lists the pipeline resolves against.
    #[must_use]
    pub fn tag_set(&self) -> TagSet {
        let mut set = TagSet::default();
        let dev_lists = matches!(&self.backend, Backend::Registry { dev: Some(_), .. });
        for (key, known) in &self.known {
            set.insert(&key.service, key.dev, known.list.clone());
        }
        set.with_dev_fallback(!dev_lists)
    }

    /// Why the list `service` (dev or not) resolves against is stale, if it is.
    #[must_use]
    pub fn stale(&self, service: &str, dev: bool) -> Option<String> {
        let key = self.normalize(service, dev);
        let known = self.known.get(&key)?;
        if known.fresh {
            return None;
        }
        Some(match self.errors.get(&key) {
            Some((_, message)) => message.clone(),
            None => format!(
                "not listed yet since start (last listed {})",
                crate::render::timestamp(known.listed_at)
            ),
        })
    }

    /// True when some list is stale.
    #[must_use]
    pub fn any_stale(&self) -> bool {
        self.known
            .iter()
            .any(|(k, v)| !v.fresh && self.wanted.contains(k))
    }

    /// The last failure listing `service`, when it has no list at all.
    #[must_use]
    pub fn failure(&self, service: &str, dev: bool) -> Option<&(String, String)> {
        let key = self.normalize(service, dev);
        if self.known.contains_key(&key) {
            return None;
        }
        self.errors.get(&key)
    }

    /// Number of lists known.
    #[must_use]
    pub fn lists(&self) -> usize {
        self.known.len()
    }

    /// The lists the state store kept (from the last run): used until the
    /// first scan, and marked stale until then.
    pub fn restore(&mut self, stored: &BTreeMap<String, Vec<u8>>) {
        for (k, bytes) in stored {
            let (Some(key), Ok(list)) =
                (Key::parse(k), serde_json::from_slice::<StoredList>(bytes))
            else {
                continue;
            };
            let listed_at = DateTime::parse_from_rfc3339(&list.listed_at)
                .map_or_else(|_| Utc::now(), |t| t.with_timezone(&Utc));
            self.wanted.insert(key.clone());
            self.known.insert(
                key,
                Known {
                    list: Arc::new(TagList::new(list.tags)),
                    listed_at,
                    fresh: false,
                },
            );
        }
    }

    /// The lists that changed since the last call, for the state store.
    pub fn take_dirty(&mut self) -> Vec<(String, Vec<u8>)> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .filter_map(|key| {
                let known = self.known.get(&key)?;
                let stored = StoredList {
                    tags: known.list.tags.clone(),
                    listed_at: crate::render::timestamp(known.listed_at),
                };
                Some((key.stored(), serde_json::to_vec(&stored).ok()?))
            })
            .collect()
    }

    /// The wanted repositories, as metric labels name them.
    fn repository(&self, key: &Key) -> String {
        match &self.backend {
            Backend::Registry { release, dev, .. } => {
                let (host, path) = if key.dev {
                    dev.as_ref().unwrap_or(release)
                } else {
                    release
                };
                format!("{host}/{}", join(path, &key.service))
            }
            Backend::Git { url, prefix, .. } => format!(
                "{}#{}",
                crate::source::sanitize_url(&url.replace("{service}", &key.service)),
                prefix.replace("{service}", &key.service)
            ),
        }
    }

    /// Each wanted repository's last listing size (`converge_tags_seen`).
    #[must_use]
    pub fn seen(&self) -> Vec<(String, usize)> {
        self.known
            .iter()
            .map(|(k, v)| (self.repository(k), v.list.tags.len()))
            .collect()
    }

    /// Lists `only` (every wanted key when `None`): never-listed and
    /// longest-unlisted repositories first, `concurrency` at a time.
    pub fn scan(&mut self, only: Option<&[Key]>) -> ScanOutcome {
        let mut keys: Vec<Key> = match only {
            Some(k) => k.to_vec(),
            None => self.wanted.iter().cloned().collect(),
        };
        keys.sort_by_key(|k| self.known.get(k).map(|v| v.listed_at));
        let results = match &self.backend {
            Backend::Registry {
                clients,
                release,
                dev,
            } => self.scan_registry(&keys, clients, release, dev.as_ref()),
            Backend::Git {
                url,
                prefix,
                auth,
                state_dir,
                timeout,
                running,
            } => self.scan_git(&keys, url, prefix, auth, state_dir, (*timeout, running)),
        };
        self.absorb(results)
    }

    fn absorb(&mut self, results: Vec<(Key, Result<Arc<TagList>, Error>)>) -> ScanOutcome {
        let mut out = ScanOutcome::default();
        let now = Utc::now();
        for (key, result) in results {
            match result {
                Ok(list) => {
                    out.listed += 1;
                    self.errors.remove(&key);
                    if let Some(k) = self.known.get_mut(&key) {
                        if k.list.digest != list.digest {
                            k.list = list;
                            out.changed = true;
                            self.dirty.insert(key.clone());
                        }
                        out.staleness_changed |= !k.fresh;
                        k.fresh = true;
                        k.listed_at = now;
                    } else {
                        out.changed = true;
                        self.dirty.insert(key.clone());
                        let known = Known {
                            list,
                            listed_at: now,
                            fresh: true,
                        };
                        self.known.insert(key, known);
                    }
                }
                Err(e) => {
                    if let Some(k) = self.known.get_mut(&key) {
                        out.staleness_changed |= k.fresh;
                        k.fresh = false;
                    }
                    let entry = (e.reason().to_owned(), e.to_string());
                    self.errors.insert(key.clone(), entry.clone());
                    out.failed.push((key, entry.0, entry.1));
                }
            }
        }
        self.status.scans += 1;
        if out.failed.is_empty() {
            self.status.last_success = Some(now);
            self.status.last_error = None;
        } else {
            self.status.errors += 1;
            self.status.last_error = out.failed.first().map(|(_, r, m)| (r.clone(), m.clone()));
        }
        out
    }

    fn scan_registry(
        &self,
        keys: &[Key],
        clients: &BTreeMap<String, Arc<registry::Registry>>,
        release: &(String, String),
        dev: Option<&(String, String)>,
    ) -> Vec<(Key, Result<Arc<TagList>, Error>)> {
        let mut out = Vec::new();
        let mut work = Vec::new();
        let mut started: BTreeMap<&str, Result<(), registry::Error>> = BTreeMap::new();
        for key in keys {
            let (host, path) = if key.dev {
                dev.unwrap_or(release)
            } else {
                release
            };
            let Some(client) = clients.get(host) else {
                continue;
            };
            let begun = started
                .entry(host.as_str())
                .or_insert_with(|| client.begin_scan(self.budget));
            if let Err(e) = begun {
                out.push((key.clone(), Err(e.again().into())));
                continue;
            }
            work.push((key.clone(), client.clone(), join(path, &key.service)));
        }
        out.extend(parallel(&work, self.concurrency, |(key, client, repo)| {
            let result = client
                .list(repo)
                .map(|l| {
                    if l.truncated {
                        tracing::warn!(repository = %repo, kept = l.tags.len(), "more tags than versions.max_tags; the rest are not read");
                    }
                    Arc::new(TagList::new(l.tags))
                })
                .map_err(Error::from);
            (key.clone(), result)
        }));
        out
    }

    fn scan_git(
        &self,
        keys: &[Key],
        url: &str,
        prefix: &str,
        auth: &crate::config::GitAuth,
        state_dir: &std::path::Path,
        (timeout, running): (Duration, &Arc<Mutex<BTreeSet<String>>>),
    ) -> Vec<(Key, Result<Arc<TagList>, Error>)> {
        // One listing per distinct URL (`{service}` in it: a repository per service).
        let mut urls: BTreeMap<String, Vec<&Key>> = BTreeMap::new();
        for key in keys {
            urls.entry(url.replace("{service}", &key.service))
                .or_default()
                .push(key);
        }
        let work: Vec<(String, Vec<&Key>)> = urls.into_iter().collect();
        let listed = parallel(&work, self.concurrency, |(u, keys)| {
            let result =
                git::GitTags::new(u, auth.clone(), state_dir).list_within(timeout, running);
            (keys.clone(), result)
        });
        let mut out = Vec::new();
        for (keys, result) in listed {
            for key in keys {
                let r = match &result {
                    Ok(tags) => Ok(git::for_service(tags, prefix, &key.service)),
                    Err(e) => Err(Error::Git(git::Error::Remote {
                        url: crate::source::sanitize_url(url),
                        reason: e.reason(),
                        message: e.to_string(),
                    })),
                };
                out.push((key.clone(), r));
            }
        }
        out
    }
}

fn join(path: &str, service: &str) -> String {
    if path.is_empty() {
        service.to_owned()
    } else {
        format!("{path}/{service}")
    }
}

/// Runs `f` over `items` on at most `n` threads; results in any order.
fn parallel<T: Sync, R: Send>(items: &[T], n: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let out = Mutex::new(Vec::with_capacity(items.len()));
    std::thread::scope(|scope| {
        for _ in 0..n.min(items.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else {
                        break;
                    };
                    let r = f(item);
                    out.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(r);
                }
            });
        }
    });
    out.into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The registry credentials `versions.credentials` names (the artifact
/// store reads service manifests with them too).
#[must_use]
pub fn credentials(v: &crate::config::VersionsConfig) -> registry::Credentials {
    match &v.credentials {
        None => registry::Credentials::None,
        Some(c) => match (&c.username, &c.password_file, &c.token_file) {
            (Some(username), Some(password_file), None) => registry::Credentials::Basic {
                username: username.clone(),
                password_file: password_file.clone(),
            },
            (_, _, Some(token_file)) => registry::Credentials::Token {
                token_file: token_file.clone(),
            },
            _ => registry::Credentials::None,
        },
    }
}
