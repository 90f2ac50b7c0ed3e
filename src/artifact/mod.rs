//! Service manifests, the IO half (issue 23): each (service, version)'s
//! artifact fetched **once** (an OCI artifact in Flux's format through the
//! registry client of [`crate::tags::registry`], [`oci`]), kept in a
//! content-addressed cache in the state dir ([`cache`]) so a restart does
//! not fetch again, unpacked in memory under caps ([`untar`]) and parsed
//! once ([`crate::render::service::ServiceManifests`]). The renderer asks
//! through [`crate::render::service::Fetch`]; a fetch that fails is
//! remembered for the rest of the pass (one timeout per artifact, not one
//! per environment) and tried again in the next (`Fetch::begin_pass`).

pub mod cache;
pub mod git;
pub mod kustomize;
pub mod oci;
pub mod untar;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::{Config, ManifestsConfig};
use crate::render::service::{Artifact, Fetch, ManifestError, ServiceManifests};
use crate::tags::registry;

type Parsed = Result<Arc<ServiceManifests>, ManifestError>;

/// A (service, version, dev tags)'s manifests.
type Key = (String, String, bool);

/// The store of services' manifests for one installation.
pub struct Store {
    /// Each service's own `manifests`, `{service}` filled in.
    own: BTreeMap<String, ManifestsConfig>,
    /// `services.defaults.manifests`, `{service}` not filled in.
    defaults: Option<ManifestsConfig>,
    options: registry::Options,
    clients: Mutex<HashMap<String, Arc<registry::Registry>>>,
    cache: cache::Cache,
    /// Parsed manifests (or their refusal), per (service, version); a key
    /// is fetched under its own lock, so concurrent renders wait for one
    /// fetch.
    parsed: Mutex<HashMap<Key, Arc<Mutex<Option<Parsed>>>>>,
    /// Fetches that failed in this pass, with why.
    failed: Mutex<HashMap<Key, String>>,
    /// Artifacts read from a registry or git server (not from the cache).
    fetches: AtomicU64,
    /// How a `kustomization.yaml` is built.
    kustomize: crate::config::KustomizeConfig,
    /// Where git mirrors go: the cache's directory, or, for a command
    /// without a state dir (read-only ones create none), a temporary one
    /// removed on drop.
    git_dir: PathBuf,
    temporary: bool,
}

impl Drop for Store {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.git_dir);
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("services", &self.own.len())
            .field("defaults", &self.defaults.is_some())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// The store a config describes; `None` when no service has manifests.
    #[must_use]
    pub fn from_config(config: &Config, state_dir: &Path) -> Option<Store> {
        let defaults = config
            .services
            .get(crate::config::SERVICES_DEFAULTS)
            .and_then(|s| s.manifests.clone());
        let own: BTreeMap<_, _> = config
            .services
            .keys()
            .filter(|n| *n != crate::config::SERVICES_DEFAULTS)
            .filter(|n| config.services[*n].manifests.is_some())
            .filter_map(|n| Some((n.clone(), config.manifests_of(n)?)))
            .collect();
        if own.is_empty() && defaults.is_none() {
            return None;
        }
        let v = &config.versions;
        let cache_dir = state_dir.join("artifacts");
        let temporary = !state_dir.exists();
        let git_dir = if temporary {
            std::env::temp_dir().join(format!("converge-artifacts-{}", std::process::id()))
        } else {
            cache_dir.clone()
        };
        Some(Store {
            git_dir,
            temporary,
            own,
            defaults,
            options: registry::Options {
                host: String::new(),
                plain_http: v.plain_http,
                credentials: crate::tags::credentials(v),
                ca_file: v.ca_file.clone(),
                timeout: v.timeout,
                max_tags: v.max_tags,
                page_size: v.page_size,
            },
            clients: Mutex::new(HashMap::new()),
            cache: cache::Cache::new(cache_dir, cache::DEFAULT_MAX_BYTES),
            parsed: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
            fetches: AtomicU64::new(0),
            kustomize: config.kustomize.clone(),
        })
    }

    /// Forgets this pass's failures (they are tried again) and the
    /// registries' "down" marks.
    fn forget_failures(&self) {
        lock(&self.failed).clear();
        let clients: Vec<_> = lock(&self.clients).values().cloned().collect();
        for c in clients {
            // An unreadable credentials file fails each fetch in turn.
            let _ = c.begin_scan(u32::MAX);
        }
    }

    /// Artifacts read from a registry or git server since start.
    #[must_use]
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    fn config_of(&self, service: &str) -> Option<ManifestsConfig> {
        if let Some(m) = self.own.get(service) {
            return Some(m.clone());
        }
        let d = self.defaults.as_ref()?;
        let fill = |t: &str| t.replace("{service}", service);
        Some(ManifestsConfig {
            oci: d.oci.as_deref().map(fill),
            oci_dev: d.oci_dev.as_deref().map(fill),
            git: d.git.as_ref().map(|g| crate::config::GitManifestsConfig {
                url: fill(&g.url),
                path: fill(&g.path),
                reference: fill(&g.reference),
            }),
        })
    }

    fn client(&self, host: &str) -> Result<Arc<registry::Registry>, String> {
        let mut clients = lock(&self.clients);
        if let Some(c) = clients.get(host) {
            return Ok(c.clone());
        }
        let c = registry::Registry::new(registry::Options {
            host: host.to_owned(),
            ..self.options.clone()
        })
        .map_err(|e| crate::diagnostic::chain(&e))?;
        c.begin_scan(u32::MAX)
            .map_err(|e| crate::diagnostic::chain(&e))?;
        let c = Arc::new(c);
        clients.insert(host.to_owned(), c.clone());
        Ok(c)
    }

    /// The layer of `oci` at `version`, from the cache or the registry
    /// (then cached). `Ok(Err)`: the artifact is refused, in words.
    fn pull(
        &self,
        service: &str,
        version: &str,
        oci: &str,
    ) -> Result<Result<(Artifact, Vec<u8>), String>, String> {
        let (host, repository) = oci::split(oci)?;
        let reference = cache::Reference::oci(host, repository, version);
        let source = format!("{host}/{repository}");
        if let Some((digest, layer, noted)) = self.cache.get(&reference) {
            count(service, "cached");
            let artifact = Artifact {
                digest,
                source,
                revision: noted.revision,
                origin: noted.origin,
            };
            return Ok(Ok((artifact, layer)));
        }
        let client = self.client(host)?;
        self.fetches.fetch_add(1, Ordering::Relaxed);
        // `@sha256:…` (a claim's ansible_artifact) is asked by digest.
        let asked = version.strip_prefix('@').unwrap_or(version);
        let artifact = match oci::pull(&client, repository, asked) {
            Ok(a) => a,
            Err(oci::Error::Registry(e)) => return Err(crate::diagnostic::chain(&e)),
            Err(e) => return Ok(Err(e.to_string())),
        };
        tracing::info!(service, version, digest = %artifact.digest, "service manifests fetched");
        let noted = cache::Noted {
            revision: artifact.revision,
            origin: artifact.origin,
        };
        self.cache
            .put(&reference, &artifact.digest, &artifact.layer, &noted);
        let facts = Artifact {
            digest: artifact.digest,
            source,
            revision: noted.revision,
            origin: noted.origin,
        };
        Ok(Ok((facts, artifact.layer)))
    }

    /// Reads, checks and parses one artifact (the cache first).
    fn load(&self, service: &str, version: &str, dev: bool) -> Result<Parsed, String> {
        let Some(config) = self.config_of(service) else {
            return Err(format!("service {service} has no manifests"));
        };
        let refused = |file: String, message: String| {
            ManifestError::from(crate::render::service::Refusal {
                service: service.to_owned(),
                version: version.to_owned(),
                file,
                object: String::new(),
                rule: " (rule artifact)".to_owned(),
                message,
            })
        };
        let parse = |artifact: Artifact, files: Vec<crate::render::service::File>| {
            let files = self.built(&artifact, files).map_err(|r| {
                ManifestError::from(crate::render::service::Refusal {
                    service: service.to_owned(),
                    version: version.to_owned(),
                    file: r.file,
                    object: String::new(),
                    rule: " (rule kustomize)".to_owned(),
                    message: r.message,
                })
            })?;
            ServiceManifests::parse(service, version, artifact, files).map(Arc::new)
        };
        // Dev tags come from the dev repository when there is one.
        let oci = match (&config.oci_dev, dev) {
            (Some(d), true) => Some(d),
            _ => config.oci.as_ref(),
        };
        let Some(oci) = oci else {
            let Some(g) = &config.git else {
                return Err(format!("service {service} has no manifests"));
            };
            if version.starts_with('@') {
                return Ok(Err(refused(
                    crate::source::sanitize_url(&g.url),
                    format!("manifests from git are named by tag, not by digest ({version})"),
                )));
            }
            let reference = g.reference.replace("{version}", version);
            let (digest, files) = match git::read(
                &self.fetches,
                &self.git_dir,
                &g.url,
                &reference,
                &g.path,
                untar::Limits::default(),
                self.options.timeout,
            )? {
                Ok(read) => read,
                Err(message) => return Ok(Err(refused(g.url.clone(), message))),
            };
            let url = crate::source::sanitize_url(&g.url);
            let artifact = Artifact {
                digest,
                source: url.clone(),
                revision: reference,
                origin: url,
            };
            return Ok(parse(artifact, files));
        };
        let (artifact, layer) = match self.pull(service, version, oci)? {
            Ok(pulled) => pulled,
            Err(message) => return Ok(Err(refused(oci.clone(), message))),
        };
        let files = match untar::read(&layer, untar::Limits::default()) {
            Ok(f) => f,
            Err(e) => return Ok(Err(refused(artifact.digest, e.to_string()))),
        };
        Ok(parse(artifact, files))
    }

    /// The files to parse: the artifact's own, or, when it holds a
    /// `kustomization.yaml`, what kustomize builds of it (checked first;
    /// the output cached by the artifact's digest, so a restart does not
    /// build again).
    fn built(
        &self,
        artifact: &Artifact,
        files: Vec<crate::render::service::File>,
    ) -> Result<Vec<crate::render::service::File>, kustomize::Refused> {
        let Some(root) = kustomize::root(&files)? else {
            return Ok(files);
        };
        let file = if root.is_empty() {
            "kustomization.yaml".to_owned()
        } else {
            format!("{root}/kustomization.yaml")
        };
        let reference = cache::Reference::built(&artifact.digest, &root);
        let output = if let Some((_, bytes, _)) = self.cache.get(&reference) {
            String::from_utf8(bytes).unwrap_or_default()
        } else {
            if !self.kustomize.allow_outside {
                kustomize::check(&files)?;
            }
            let started = std::time::Instant::now();
            let output = kustomize::build(
                &self.kustomize,
                &self.git_dir.join("kustomize"),
                &files,
                &root,
                untar::Limits::default().bytes,
            )
            .map_err(|message| kustomize::Refused {
                file: file.clone(),
                message,
            })?;
            tracing::info!(
                digest = %artifact.digest,
                root,
                took_ms = started.elapsed().as_millis(),
                "kustomize built"
            );
            let digest = format!(
                "sha256:{}",
                crate::hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(output.as_bytes()))
            );
            self.cache.put(
                &reference,
                &digest,
                output.as_bytes(),
                &cache::Noted::default(),
            );
            output
        };
        Ok(vec![crate::render::service::File {
            path: file,
            text: output,
        }])
    }
}

impl Fetch for Store {
    fn begin_pass(&self) {
        self.forget_failures();
    }

    fn pin(&self, service: &str, ansible_artifact: &str) -> Result<String, String> {
        let config = self.config_of(service);
        let oci = config.as_ref().and_then(|c| c.oci.as_deref());
        let repository = oci.map(|o| o.strip_prefix("oci://").unwrap_or(o));
        crate::render::service::pin_reference(ansible_artifact, repository)
    }

    fn has(&self, service: &str) -> bool {
        self.defaults.is_some() || self.own.contains_key(service)
    }

    fn get(&self, service: &str, version: &str, dev: bool) -> Result<Parsed, String> {
        let key = (service.to_owned(), version.to_owned(), dev);
        if let Some(why) = lock(&self.failed).get(&key) {
            return Err(why.clone());
        }
        let slot = lock(&self.parsed).entry(key.clone()).or_default().clone();
        let mut slot = lock(&slot);
        if let Some(p) = slot.as_ref() {
            return Ok(p.clone());
        }
        if let Some(why) = lock(&self.failed).get(&key) {
            return Err(why.clone());
        }
        let fetched_before = self.fetches();
        match self.load(service, version, dev) {
            Ok(p) => {
                if p.is_err() {
                    count(service, "refused");
                } else if self.fetches() != fetched_before {
                    count(service, "fetched");
                } else if self.config_of(service).is_some_and(|c| c.oci.is_none()) {
                    // A git mirror that held the tag (OCI counts its cache hits).
                    count(service, "cached");
                }
                *slot = Some(p.clone());
                Ok(p)
            }
            Err(why) => {
                count(service, "failed");
                tracing::warn!(service, version, error = %why, "service manifests unavailable");
                lock(&self.failed).insert(key, why.clone());
                Err(why)
            }
        }
    }
}

/// One more in `converge_manifests_fetches_total{service,outcome}`.
fn count(service: &str, outcome: &str) {
    crate::metrics::MANIFESTS_FETCHES
        .get_or_create(&crate::metrics::ManifestsFetchLabels {
            service: service.to_owned(),
            outcome: outcome.to_owned(),
        })
        .inc();
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
