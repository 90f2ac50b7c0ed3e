//! Loading the config: the file read under a size cap, parsed under the
//! YAML budgets, checked across blocks, relative paths resolved against the
//! file's directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{
    Config, GitTagsConfig, KubernetesConfig, Presets, SourceConfig, TargetConfig, VersionsFrom,
};

/// Files above this size are refused before parsing (claims are ~1 KiB).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config {path}: {source}{}", if source.kind() == std::io::ErrorKind::NotFound { " (give the config file with --config)" } else { "" })]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Why the `services:` catalog cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    #[error("services.{service}.version: {error}")]
    Version {
        service: String,
        #[source]
        error: crate::claim::VersionError,
    },
    /// An unknown dependency or a cycle.
    #[error(transparent)]
    Dependencies(#[from] crate::resolve::CatalogError),
}

impl Config {
    /// Reads and parses a config file; relative paths become relative to its directory.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = read_capped(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse(&text).map_err(|message| Error::Invalid {
            path: path.to_owned(),
            message,
        })?;
        let base = path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let base = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };
        config.resolve_paths(&base);
        Ok(config)
    }

    /// Parses config YAML (paths left as written).
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config =
            serde_saphyr::from_str_with_options(text, crate::yaml_limits::options())
                .map_err(|e| e.to_string())?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        let mut names = std::collections::BTreeSet::new();
        for s in &self.sources {
            if !names.insert(s.name()) {
                return Err(format!("sources: the name {:?} is used twice", s.name()));
            }
            if let SourceConfig::Git {
                name,
                auth: Some(auth),
                ..
            } = s
            {
                auth.method()
                    .map_err(|message| format!("sources: {name}: {message}"))?;
            }
        }
        if let Some(url) = &self.api.external_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(format!(
                "api.external_url: {url:?} is not an http:// or https:// address"
            ));
        }
        if !(0.0..=1.0).contains(&self.safety.max_delete_fraction) {
            return Err("safety.max_delete_fraction must be between 0 and 1".to_owned());
        }
        if let TargetConfig::Kubernetes(KubernetesConfig {
            leader_election: Some(le),
            ..
        }) = &self.target
            && (le.renew_deadline >= le.lease_duration || le.retry_period >= le.renew_deadline)
        {
            return Err(
                "target.leader_election: retry_period < renew_deadline < lease_duration is needed, so a leader stops applying before its lease can be taken"
                    .to_owned(),
            );
        }
        if let TargetConfig::Kubernetes(k) = &self.target
            && let Some(sh) = &k.shards
        {
            if k.leader_election.is_some() {
                return Err(
                    "target: leader_election and shards exclude each other (shards: every replica writes its own share; leader_election: one replica writes all)"
                        .to_owned(),
                );
            }
            if sh.renew_deadline >= sh.lease_duration || sh.retry_period >= sh.renew_deadline {
                return Err(
                    "target.shards: retry_period < renew_deadline < lease_duration is needed, so a member stops applying before its environments move"
                        .to_owned(),
                );
            }
            if !crate::shard::valid_name_part(&sh.lease_prefix)
                || !crate::shard::valid_name_part(&sh.identity)
            {
                return Err(
                    "target.shards: lease_prefix and identity may hold only lower-case letters, digits, '-' and '.' (they name a Lease)"
                        .to_owned(),
                );
            }
        }
        Presets::new(&self.presets).map_err(|e| e.to_string())?;
        self.catalog().map_err(|e| e.to_string())?;
        self.check_manifests()?;
        if self.versions.from == VersionsFrom::Git && self.versions.git.is_none() {
            return Err("versions.from: git needs versions.git.url".to_owned());
        }
        if let Some(GitTagsConfig {
            auth: Some(auth), ..
        }) = &self.versions.git
        {
            auth.method().map_err(|m| format!("versions.git: {m}"))?;
        }
        if let Some(c) = &self.versions.credentials
            && (c.password_file.is_some() == c.token_file.is_some()
                || (c.password_file.is_some() && c.username.is_none()))
        {
            return Err(
                "versions.credentials: give username with password_file, or token_file".to_owned(),
            );
        }
        if self.versions.concurrency == 0
            || self.versions.budget == 0
            || self.versions.max_tags == 0
        {
            return Err("versions: concurrency, budget and max_tags must be at least 1".to_owned());
        }
        Ok(())
    }

    /// The service catalog, checked: constraints parse, every dependency is
    /// in the catalog, no cycle.
    pub fn catalog(&self) -> Result<crate::resolve::Catalog, ServicesError> {
        let mut entries = BTreeMap::new();
        for (name, s) in &self.services {
            if name == super::schema::SERVICES_DEFAULTS {
                continue;
            }
            let version = s.version.parse().map_err(|error| ServicesError::Version {
                service: name.clone(),
                error,
            })?;
            let entry = crate::resolve::CatalogEntry {
                depends_on: s.depends_on.clone(),
                version,
            };
            entries.insert(name.clone(), entry);
        }
        Ok(crate::resolve::Catalog::new(entries)?)
    }

    /// Where each service's manifests live: its own `manifests`, else
    /// `services.defaults.manifests`, `{service}` filled in. A service the
    /// catalog does not list uses the defaults too ([`Config::manifests_of`]).
    ///
    /// # Errors
    ///
    /// An entry with both or neither of `oci` and `git`.
    pub fn check_manifests(&self) -> Result<(), String> {
        for (name, s) in &self.services {
            if let Some(m) = &s.manifests
                && m.oci.is_some() == m.git.is_some()
            {
                return Err(format!(
                    "services.{name}.manifests: give exactly one of oci and git"
                ));
            }
        }
        Ok(())
    }

    /// The manifests of `service`, `{service}` filled in.
    #[must_use]
    pub fn manifests_of(&self, service: &str) -> Option<super::schema::ManifestsConfig> {
        let m = self
            .services
            .get(service)
            .and_then(|s| s.manifests.as_ref())
            .or_else(|| {
                self.services
                    .get(super::schema::SERVICES_DEFAULTS)
                    .and_then(|s| s.manifests.as_ref())
            })?;
        let fill = |t: &str| t.replace("{service}", service);
        Some(super::schema::ManifestsConfig {
            oci: m.oci.as_deref().map(fill),
            oci_dev: m.oci_dev.as_deref().map(fill),
            git: m.git.as_ref().map(|g| super::schema::GitManifestsConfig {
                url: fill(&g.url),
                path: fill(&g.path),
                reference: fill(&g.reference),
            }),
        })
    }

    fn resolve_paths(&mut self, base: &Path) {
        let join = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        for s in &mut self.sources {
            match s {
                SourceConfig::Dir { path, shown, .. } => {
                    *shown = path.display().to_string();
                    join(path);
                }
                SourceConfig::Git {
                    auth,
                    signatures,
                    url,
                    forge,
                    ..
                } => {
                    if let Some(f) = forge {
                        join(&mut f.token_file);
                    }
                    for p in auth
                        .iter_mut()
                        .flat_map(|a| {
                            [&mut a.token_file, &mut a.password_file, &mut a.ssh_key_file]
                        })
                        .flatten()
                    {
                        join(p);
                    }
                    if let Some(sig) = signatures {
                        if let Some(p) = &mut sig.allowed_signers {
                            join(p);
                        }
                        sig.openpgp_keys.iter_mut().for_each(&join);
                    }
                    // A local repository path (not a URL) is relative to the config too.
                    if !url.contains("://")
                        && !url.contains('@')
                        && Path::new(url.as_str()).is_relative()
                    {
                        *url = base.join(url.as_str()).display().to_string();
                    }
                }
                SourceConfig::S3 { .. } => {}
            }
        }
        for s in &mut self.sources {
            if let SourceConfig::S3 {
                credentials,
                ca_file,
                ..
            } = s
            {
                let creds = credentials
                    .as_mut()
                    .map(|c| [&mut c.access_key_id_file, &mut c.secret_access_key_file]);
                for p in creds.into_iter().flatten().chain([ca_file]).flatten() {
                    join(p);
                }
            }
        }
        match &mut self.target {
            TargetConfig::Manifests { path }
            | TargetConfig::Kubernetes(KubernetesConfig {
                kubeconfig: Some(path),
                ..
            }) => join(path),
            TargetConfig::Kubernetes(_) => {}
        }
        join(&mut self.state_dir);
        self.resolve_version_paths(base);
        for p in &mut self.secrets.age_key_files {
            join(p);
        }
        if let Some(tls) = &mut self.api.tls {
            join(&mut tls.cert_file);
            join(&mut tls.key_file);
        }
        for p in [
            &mut self.policies,
            &mut self.identities,
            &mut self.schema,
            &mut self.api.token_file,
        ]
        .into_iter()
        .flatten()
        {
            join(p);
        }
        if let Some(t) = &mut self.templates {
            join(&mut t.path);
        }
        // A bare name is looked up on PATH; a path is the config's.
        if self.kustomize.path.components().count() > 1 {
            join(&mut self.kustomize.path);
        }
    }

    /// The `versions:` block's files and a local git tag repository.
    fn resolve_version_paths(&mut self, base: &Path) {
        let join = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        let creds = self.versions.credentials.as_mut();
        for p in creds
            .into_iter()
            .flat_map(|c| [&mut c.password_file, &mut c.token_file])
            .chain([&mut self.versions.ca_file])
            .flatten()
        {
            join(p);
        }
        if let Some(git) = &mut self.versions.git {
            for p in git
                .auth
                .iter_mut()
                .flat_map(|a| [&mut a.token_file, &mut a.password_file, &mut a.ssh_key_file])
                .flatten()
            {
                join(p);
            }
            if !git.url.contains("://")
                && !git.url.contains('@')
                && Path::new(&git.url).is_relative()
            {
                git.url = base.join(&git.url).display().to_string();
            }
        }
    }
}

fn read_capped(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(DEFAULT_MAX_FILE_BYTES)
        .read_to_string(&mut text)?;
    Ok(text)
}
