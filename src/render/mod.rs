//! Stage 5, render: claim + preset + resolved versions -> desired objects.
//!
//! The built-in templates produce the Kubernetes shape of PRODUCT.md (Namespace,
//! `ResourceQuota`, `LimitRange`, `NetworkPolicy`, `ConfigMap`, and per service a
//! Deployment, Service, `HorizontalPodAutoscaler` and, when HA, a
//! `PodDisruptionBudget`). A platform team's own minijinja templates (`*.j2` in
//! the configured directory) are rendered once per environment with the same
//! values, as data that cannot change the template's YAML structure, and kept
//! in the environment's namespace ([`template`]). Output is deterministic: objects in a fixed kind order, keys in a
//! fixed order, YAML bytes and a digest per object. Every object carries the
//! ownership labels.

mod builtin;
pub mod service;
mod services;
pub mod template;
pub mod yaml;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

use crate::claim::Claim;
use crate::config::preset::{Preset, Presets};
use crate::object::{Kind, ObjectRef, kind};
use crate::resolve::Resolved;
use crate::secret::{FingerprintKey, Secrets};

/// The label every object converge manages carries, with value `converge`.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The label naming the environment an object belongs to.
pub const ENVIRONMENT_LABEL: &str = "converge.dev/environment";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read templates {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid template {path}: {message}")]
    Template { path: String, message: String },
    /// `templates.cluster_scoped` names a file the directory does not hold.
    #[error("templates.cluster_scoped: {dir} has no template {name:?}")]
    UnknownClusterScoped { dir: String, name: String },
}

/// Why one environment did not render; the environment is left as it is.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A template failed (an undefined value, a failing filter, out of fuel).
    #[error("template {template}: {error:#}")]
    Template {
        template: String,
        #[source]
        error: minijinja::Error,
    },
    #[error("template {template}: template output is not YAML: {error}")]
    NotYaml {
        template: String,
        #[source]
        error: Box<serde_saphyr::Error>,
    },
    /// A document of a template's output is not a Kubernetes object
    /// converge can own (no kind, no name, no metadata mapping, ...).
    #[error("template {template}: {message}")]
    Object { template: String, message: String },
    /// Two objects share a kind and name.
    #[error("two objects are both {kind} {name:?}")]
    Duplicate { kind: Kind, name: Box<str> },
    /// A service's manifests cannot be fetched now (registry or git server
    /// unreachable, ...): the environment is kept as it is.
    #[error("service {service} {version}: manifests unavailable: {message}")]
    ManifestsUnavailable {
        service: String,
        version: String,
        message: String,
    },
    /// A service's manifests are refused for this environment (a fenced
    /// object, an undefined variable, a hostile artifact, not YAML).
    #[error("{0}")]
    Manifests(#[from] service::ManifestError),
    /// A claim's `ansible_artifact` names a service's manifests artifact
    /// where it may not (the policies, action `pin_manifests`) or is not a
    /// tag or digest.
    #[error("service {service}: ansible_artifact {reference} (rule {rule}): {message}")]
    Pin {
        service: String,
        reference: String,
        rule: &'static str,
        message: String,
    },
}

impl RenderError {
    /// The claim's field the error is about (a JSON pointer), when it is one.
    #[must_use]
    pub fn pointer(&self) -> String {
        match self {
            Self::Pin { service, .. } => crate::diagnostic::pointer_join(
                &crate::diagnostic::pointer_join("/services", service),
                "ansible_artifact",
            ),
            _ => String::new(),
        }
    }
}

/// One desired object: what it is and the digest of its YAML. The YAML
/// itself is not kept (10k environments of it would dominate memory); apply
/// renders an environment again when it has something to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub id: ObjectRef,
    /// SHA-256 of the object's YAML; for a `Secret`, HMAC-SHA256 under the
    /// installation's fingerprint key (a plain hash of a short value could
    /// be guessed).
    pub digest: Digest,
}

/// A SHA-256 content digest, 32 bytes in memory and `sha256:<hex>` on disk
/// and in the API. All zeroes ([`Digest::PENDING`]) marks an object whose
/// write is in flight: it never matches a real digest, so it is rewritten.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub const PENDING: Digest = Digest([0; 32]);

    #[must_use]
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }

    #[must_use]
    pub fn is_pending(&self) -> bool {
        *self == Digest::PENDING
    }

    /// `sha256:<64 hex>`, or the empty string for [`Digest::PENDING`].
    #[must_use]
    pub fn parse(s: &str) -> Option<Digest> {
        if s.is_empty() {
            return Some(Digest::PENDING);
        }
        crate::hex::decode32(s.strip_prefix("sha256:")?).map(Digest)
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_pending() {
            return Ok(());
        }
        f.write_str("sha256:")?;
        f.write_str(&crate::hex::encode(&self.0))
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Digest::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("not a sha256 digest: {s:?}")))
    }
}

/// An object with its YAML, exactly as the target stores it. A `Secret`'s
/// YAML holds plaintext (base64): `Debug` shows only its length, and it is
/// zeroed on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Rendered {
    pub object: Object,
    pub yaml: Yaml,
}

/// An object's YAML text; a `Secret`'s is zeroed on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Yaml {
    text: String,
    secret: bool,
}

impl Yaml {
    #[must_use]
    pub fn new(text: String, secret: bool) -> Yaml {
        Yaml { text, secret }
    }
}

impl std::ops::Deref for Yaml {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}

impl Drop for Yaml {
    fn drop(&mut self) {
        if self.secret {
            zeroize::Zeroize::zeroize(&mut self.text);
        }
    }
}

impl Rendered {
    /// Whether the YAML may hold secret values (a `Secret`).
    #[must_use]
    pub fn is_secret(&self) -> bool {
        &*self.object.id.kind == "Secret"
    }

    /// The YAML with a `Secret`'s `data`/`stringData` values replaced by
    /// `***` (what `converge render` prints unless asked otherwise).
    #[must_use]
    pub fn redacted_yaml(&self) -> std::borrow::Cow<'_, str> {
        if !self.is_secret() {
            return std::borrow::Cow::Borrowed(&*self.yaml);
        }
        let mut out = String::with_capacity(self.yaml.len());
        let mut in_data = false;
        let mut data_indent = None;
        for line in self.yaml.lines() {
            let indent = line.len() - line.trim_start().len();
            if indent == 0 {
                in_data = line.starts_with("data:") || line.starts_with("stringData:");
                data_indent = None;
                out.push_str(line);
            } else if in_data {
                // Only the keys directly under data are shown.
                let at = *data_indent.get_or_insert(indent);
                if indent != at {
                    continue;
                }
                let key = line.trim_start().split(':').next().unwrap_or_default();
                out.push_str(&line[..indent]);
                out.push_str(key);
                out.push_str(": '***'");
            } else {
                out.push_str(line);
            }
            out.push('\n');
        }
        std::borrow::Cow::Owned(out)
    }
}

impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rendered")
            .field("object", &self.object)
            .field("yaml_bytes", &self.yaml.len())
            .finish()
    }
}

/// What a renderer needs besides the claim.
pub struct Renderer {
    presets: Presets,
    registry: String,
    /// The image prefix of environments that use dev tags.
    dev_registry: Option<String>,
    templates: Vec<CustomTemplate>,
    /// Keys the digest of `Secret` objects (never a plain hash of values).
    fingerprint: FingerprintKey,
    /// Where services' own manifests come from (none: every service gets
    /// the built-in objects).
    manifests: Option<Arc<dyn service::Fetch>>,
    /// What services may emit into an environment (the policies).
    judge: Option<Arc<dyn service::Judge>>,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer")
            .field("templates", &self.templates.len())
            .finish_non_exhaustive()
    }
}

/// One custom template.
struct CustomTemplate {
    /// Its path, as diagnostics name it.
    path: String,
    /// Listed in `templates.cluster_scoped`: its objects keep the namespace
    /// they name (or none) and may be of cluster-scoped kinds.
    cluster_scoped: bool,
    env: minijinja::Environment<'static>,
}

/// An environment's values, as the templates see them.
#[derive(Debug, Clone, Serialize)]
pub struct Values<'a> {
    pub environment: EnvironmentValues<'a>,
    pub services: Vec<ServiceValues<'a>>,
    pub preset: &'a Preset,
    pub labels: BTreeMap<&'static str, String>,
    /// The environment's `Secret`: its name and keys, never its values.
    pub secrets: SecretValues<'a>,
}

/// What templates see of the secrets: where they are, not what they are.
#[derive(Debug, Clone, Serialize)]
pub struct SecretValues<'a> {
    /// The `Secret`'s name (empty when the claim has no secrets).
    pub name: &'static str,
    pub keys: &'a [String],
}

#[derive(Debug, Clone, Serialize)]
pub struct EnvironmentValues<'a> {
    pub name: &'a str,
    #[serde(rename = "type")]
    pub env_type: &'static str,
    pub pool: &'a str,
    pub owner: &'a str,
    pub deployment_method: &'static str,
    pub creation_date: String,
    pub expires_at: Option<String>,
    pub git_repository: Option<&'a str>,
    pub branch: Option<&'a str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceValues<'a> {
    pub name: &'a str,
    /// The resolved tag.
    pub version: &'a str,
    /// The constraint as written.
    pub constraint: &'a str,
    pub image: String,
    pub ansible_artifact: Option<&'a str>,
    /// The requested services this one came with as a dependency.
    pub dependency_of: &'a [String],
}

impl Renderer {
    /// A renderer with the built-in templates only.
    #[must_use]
    pub fn new(presets: Presets, registry: String) -> Renderer {
        Renderer {
            presets,
            registry,
            dev_registry: None,
            templates: Vec::new(),
            fingerprint: FingerprintKey::ephemeral(),
            manifests: None,
            judge: None,
        }
    }

    /// Services with manifests of their own render them, fetched through
    /// `fetch`, instead of the built-in objects; `judge` (the policies)
    /// says which objects a service may emit into an environment.
    #[must_use]
    pub fn with_manifests(
        mut self,
        fetch: Arc<dyn service::Fetch>,
        judge: Arc<dyn service::Judge>,
    ) -> Renderer {
        self.manifests = Some(fetch);
        self.judge = Some(judge);
        self
    }

    /// Where services' manifests come from, if any service has some.
    #[must_use]
    pub fn manifests(&self) -> Option<&Arc<dyn service::Fetch>> {
        self.manifests.as_ref()
    }

    /// Images of environments whose preset uses dev tags come from `registry`.
    #[must_use]
    pub fn with_dev_registry(mut self, registry: Option<String>) -> Renderer {
        self.dev_registry = registry;
        self
    }

    /// Uses the installation's fingerprint key for `Secret` digests.
    #[must_use]
    pub fn with_fingerprint_key(mut self, key: FingerprintKey) -> Renderer {
        self.fingerprint = key;
        self
    }

    /// Replaces the fingerprint key (a writer's, from the state dir).
    pub fn set_fingerprint_key(&mut self, key: FingerprintKey) {
        self.fingerprint = key;
    }

    /// The installation's fingerprint key.
    #[must_use]
    pub fn fingerprint_key(&self) -> &FingerprintKey {
        &self.fingerprint
    }

    /// Adds every `*.j2` file of `dir` (sorted by name); a syntax error is
    /// an error here, at start, and so is a name in `cluster_scoped` that
    /// is not one of them. Every value a template prints is data (see
    /// [`template`]): the text of a template may not contain the token
    /// printed values are replaced with.
    pub fn with_templates(
        mut self,
        dir: &Path,
        cluster_scoped: &[String],
    ) -> Result<Renderer, Error> {
        let read_err = |source| Error::Read {
            path: dir.display().to_string(),
            source,
        };
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .map_err(read_err)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "j2"))
            .collect();
        paths.sort();
        for name in cluster_scoped {
            if !paths
                .iter()
                .any(|p| p.file_name().is_some_and(|f| f == name.as_str()))
            {
                return Err(Error::UnknownClusterScoped {
                    dir: dir.display().to_string(),
                    name: name.clone(),
                });
            }
        }
        for path in paths {
            let shown = path.display().to_string();
            let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
                path: shown.clone(),
                source,
            })?;
            if text.contains(template::TOKEN) {
                return Err(Error::Template {
                    path: shown,
                    message: format!(
                        "{:?} is reserved (it stands for printed values)",
                        template::TOKEN
                    ),
                });
            }
            let mut env = minijinja::Environment::new();
            env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
            env.set_fuel(Some(1_000_000));
            env.set_formatter(template::formatter);
            env.add_template_owned(shown.clone(), text)
                .map_err(|e| Error::Template {
                    path: shown.clone(),
                    message: e.to_string(),
                })?;
            let cluster_scoped = path
                .file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| cluster_scoped.iter().any(|c| c == f));
            self.templates.push(CustomTemplate {
                path: shown,
                cluster_scoped,
                env,
            });
        }
        Ok(self)
    }

    #[must_use]
    pub fn presets(&self) -> &Presets {
        &self.presets
    }

    /// Renders one environment: the built-in objects (with the `Secret`
    /// when the claim has `secrets`), then every template's.
    pub fn render(
        &self,
        claim: &Claim,
        versions: &BTreeMap<String, Resolved>,
        expires_at: Option<DateTime<Utc>>,
        secrets: Option<&Secrets>,
    ) -> Result<Vec<Rendered>, RenderError> {
        let preset = self.presets.get(claim.environment_type);
        let values = self.values(claim, versions, expires_at, preset);
        let namespace: Arc<str> = Arc::from(claim.environment_name.as_str());
        let own = |s: &str| self.manifests.as_ref().is_some_and(|m| m.has(s));
        let mut built = builtin::objects(claim, &values, &own);
        if let Some(secrets) = secrets.filter(|_| !claim.secret_names.is_empty()) {
            built.push((
                "v1",
                "Secret",
                builtin::SECRET_NAME.to_owned(),
                builtin::secret(&values, secrets),
            ));
        }
        let mut objects: Vec<Rendered> = built
            .into_iter()
            .map(|(api_version, k, name, yaml)| Rendered {
                object: Object {
                    id: ObjectRef {
                        api_version: crate::object::shared(api_version),
                        kind: kind(k),
                        namespace: (k != "Namespace").then(|| namespace.clone()),
                        name: name.into_boxed_str(),
                    },
                    digest: digest(yaml.as_bytes()),
                },
                yaml: Yaml::new(yaml, k == "Secret"),
            })
            .collect();
        if let (Some(fetch), Some(judge)) = (&self.manifests, &self.judge) {
            objects.extend(Self::render_services(
                (fetch.as_ref(), judge.as_ref()),
                (claim, expires_at),
                &values,
                preset,
                &namespace,
            )?);
        }
        for t in &self.templates {
            objects.extend(Self::render_template(t, &values, &namespace)?);
        }
        for o in &mut objects {
            if o.is_secret() {
                o.object.digest = Digest(self.fingerprint.mac(&[b"object", o.yaml.as_bytes()]));
            }
        }
        objects.sort_by(|a, b| a.object.id.cmp(&b.object.id));
        // Within an environment a kind and a name name one object, whatever
        // the group or namespace (the manifests target's file names rely on it).
        let mut seen = std::collections::HashSet::with_capacity(objects.len());
        for o in &objects {
            let id = &o.object.id;
            if !seen.insert((id.kind.to_ascii_lowercase(), &id.name)) {
                return Err(RenderError::Duplicate {
                    kind: id.kind.clone(),
                    name: id.name.clone(),
                });
            }
        }
        Ok(objects)
    }

    /// One custom template's objects: printed values put in as data, the
    /// ownership labels added, each object placed in the environment's
    /// namespace (unless the template is cluster-scoped).
    fn render_template(
        t: &CustomTemplate,
        values: &Values<'_>,
        namespace: &Arc<str>,
    ) -> Result<Vec<Rendered>, RenderError> {
        let (text, printed) = t
            .env
            .get_template(&t.path)
            .and_then(|tpl| {
                template::render(
                    &tpl,
                    minijinja::Value::from(minijinja::value::Serde(values)),
                )
            })
            .map_err(|error| RenderError::Template {
                template: t.path.clone(),
                error,
            })?;
        let docs: Vec<Value> = serde_saphyr::from_str_multiple_with_options(
            &text,
            crate::yaml_limits::template_options(),
        )
        .map_err(|error| RenderError::NotYaml {
            template: t.path.clone(),
            error: Box::new(error),
        })?;
        let object_error = |message: String| RenderError::Object {
            template: t.path.clone(),
            message,
        };
        let quoted = template::quoted(&text);
        let mut out = Vec::with_capacity(docs.len());
        for doc in docs.into_iter().filter(|d| !d.is_null()) {
            let doc = template::fill(doc, &printed, &quoted).map_err(object_error)?;
            let mut doc =
                with_labels(doc, &values.labels).map_err(|m| object_error(m.to_owned()))?;
            template::place(&mut doc, namespace, t.cluster_scoped).map_err(object_error)?;
            out.push(to_object(&doc, namespace).map_err(object_error)?);
        }
        Ok(out)
    }

    fn values<'a>(
        &self,
        claim: &'a Claim,
        versions: &'a BTreeMap<String, Resolved>,
        expires_at: Option<DateTime<Utc>>,
        preset: &'a Preset,
    ) -> Values<'a> {
        let registry = match (&self.dev_registry, preset.use_dev_tags) {
            (Some(dev), true) => dev.as_str(),
            _ => self.registry.as_str(),
        };
        // Every resolved service: the claim's and the dependencies the
        // catalog brought along (which have no claim entry).
        let services = versions
            .iter()
            .map(|(name, resolved)| {
                let svc = claim.services.get(name);
                ServiceValues {
                    name,
                    version: &resolved.tag,
                    constraint: &resolved.constraint,
                    image: svc.and_then(|s| s.docker_image.clone()).unwrap_or_else(|| {
                        format!("{}/{name}:{}", registry.trim_end_matches('/'), resolved.tag)
                    }),
                    ansible_artifact: svc.and_then(|s| s.ansible_artifact.as_deref()),
                    dependency_of: &resolved.dependency_of,
                }
            })
            .collect();
        Values {
            environment: EnvironmentValues {
                name: claim.environment_name.as_str(),
                env_type: claim.environment_type.as_str(),
                pool: &claim.environment_pool,
                owner: &claim.user,
                deployment_method: claim.deployment_method.as_str(),
                creation_date: timestamp(claim.creation_date),
                expires_at: expires_at.map(timestamp),
                git_repository: claim.git_repository.as_deref(),
                branch: claim.branch.as_deref(),
            },
            services,
            preset,
            labels: ownership_labels(claim.environment_name.as_str()),
            secrets: SecretValues {
                name: if claim.secret_names.is_empty() {
                    ""
                } else {
                    builtin::SECRET_NAME
                },
                keys: &claim.secret_names,
            },
        }
    }
}

/// RFC 3339 with second precision, `Z` for UTC.
#[must_use]
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The labels every object of environment `name` carries.
#[must_use]
pub fn ownership_labels(name: &str) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        (MANAGED_BY, "converge".to_owned()),
        (ENVIRONMENT_LABEL, name.to_owned()),
    ])
}

/// A Kubernetes label value: `[A-Za-z0-9._-]`, at most 63 characters,
/// alphanumeric at both ends (`@` becomes `_at_`).
#[must_use]
pub fn label_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '_' | '-' => out.push(c),
            '@' => out.push_str("_at_"),
            _ => out.push('_'),
        }
    }
    out.truncate(63);
    out.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

/// The claim as applied: resolved versions, secrets as names only.
pub(crate) fn redacted_claim(claim: &Claim, v: &Values<'_>) -> String {
    let services: Map<String, Value> = v
        .services
        .iter()
        .map(|s| {
            let mut service =
                json!({"constraint": s.constraint, "version": s.version, "image": s.image});
            if !s.dependency_of.is_empty() {
                service["dependency_of"] = json!(s.dependency_of);
            }
            (s.name.to_owned(), service)
        })
        .collect();
    let secrets: Map<String, Value> = claim
        .secret_names
        .iter()
        .map(|n| (n.clone(), json!("***")))
        .collect();
    let doc = json!({
        "environment_name": v.environment.name,
        "environment_type": v.environment.env_type,
        "environment_pool": v.environment.pool,
        "user": v.environment.owner,
        "deployment_method": v.environment.deployment_method,
        "creation_date": v.environment.creation_date,
        "expires_at": v.environment.expires_at,
        "git_repository": v.environment.git_repository,
        "branch": v.environment.branch,
        "services": services,
        "secrets": secrets,
    });
    serde_json::to_string_pretty(&doc).expect("a JSON value serializes")
}

/// Adds the ownership labels to a template's object.
fn with_labels(
    mut doc: Value,
    labels: &BTreeMap<&'static str, String>,
) -> Result<Value, &'static str> {
    let meta = doc
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .ok_or("template object has no metadata mapping")?;
    let entry = meta
        .entry("labels")
        .or_insert_with(|| Value::Object(Map::new()));
    let map = entry
        .as_object_mut()
        .ok_or("metadata.labels is not a mapping")?;
    for (k, v) in labels {
        map.insert((*k).to_owned(), Value::String(v.clone()));
    }
    Ok(doc)
}

fn to_object(doc: &Value, environment: &Arc<str>) -> Result<Rendered, String> {
    let field = |ptr: &str| {
        doc.pointer(ptr)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let api_version = field("/apiVersion").ok_or("object has no apiVersion")?;
    let k = field("/kind").ok_or("object has no kind")?;
    let name = field("/metadata/name").ok_or("object has no metadata.name")?;
    if !k.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(format!("object kind {k:?} is not a Kubernetes kind"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        || name.len() > 253
    {
        return Err(format!("object name {name:?} is not a DNS-1123 subdomain"));
    }
    let yaml = yaml::to_string(doc);
    let namespace = field("/metadata/namespace").map(|ns| {
        if ns == &**environment {
            environment.clone()
        } else {
            Arc::from(ns)
        }
    });
    let object = Object {
        id: ObjectRef {
            api_version: crate::object::shared(api_version),
            kind: kind(k),
            namespace,
            name: name.into(),
        },
        digest: digest(yaml.as_bytes()),
    };
    let yaml = Yaml::new(yaml, k == "Secret");
    Ok(Rendered { object, yaml })
}

/// The digest of bytes.
#[must_use]
pub fn digest(bytes: &[u8]) -> Digest {
    Digest::of(bytes)
}

#[cfg(test)]
mod emitters;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_kubernetes_safe() {
        assert_eq!(
            label_value("john.doe@company.com"),
            "john.doe_at_company.com"
        );
        assert_eq!(label_value("-x y-"), "x_y");
        assert_eq!(label_value(&"a".repeat(80)).len(), 63);
    }

    #[test]
    fn dev_tag_types_take_their_images_from_the_dev_registry() {
        let claim = |t: &str| {
            Claim::from_document(
                "f",
                serde_json::json!({
                    "user": "u@x.io", "environment_pool": "p", "creation_date": "2024-01-15T10:30:00Z",
                    "environment_name": "e", "environment_type": t, "deployment_method": "dynamic",
                    "services": {"s": "1.0.0"}
                }),
            )
            .expect("valid")
        };
        let versions = BTreeMap::from([(
            "s".to_owned(),
            Resolved {
                tag: "1.0.0".into(),
                constraint: "1.0.0".into(),
                dependency_of: Vec::new(),
            },
        )]);
        let presets = |dev_uses_dev_tags: bool| {
            let overrides = BTreeMap::from([(
                crate::claim::EnvironmentType::Dev,
                serde_json::json!({"use_dev_tags": dev_uses_dev_tags}),
            )]);
            Presets::new(&overrides).expect("presets")
        };
        // (type, dev uses dev tags, dev registry configured) -> image prefix
        let table = [
            ("sue", false, true, "snap"),
            ("sue", false, false, "rel"),
            ("dev", false, true, "rel"),
            ("dev", true, true, "snap"),
            ("stage", true, true, "rel"),
            ("prod", false, true, "rel"),
        ];
        for (t, dev_tags, configured, want) in table {
            let renderer = Renderer::new(presets(dev_tags), "rel".into())
                .with_dev_registry(configured.then(|| "snap".to_owned()));
            let c = claim(t);
            let preset = renderer.presets().get(c.environment_type);
            let values = renderer.values(&c, &versions, None, preset);
            assert_eq!(
                values.services[0].image,
                format!("{want}/s:1.0.0"),
                "{t} {dev_tags} {configured}"
            );
        }
    }

    #[test]
    fn a_secret_renders_base64_values_under_a_keyed_digest_and_prints_redacted() {
        use crate::secret::{FingerprintKey, Secrets};
        let doc = serde_json::json!({
            "user": "john.doe@company.com", "environment_pool": "team1",
            "creation_date": "2024-01-15T10:30:00Z", "environment_name": "dev-s",
            "environment_type": "dev", "deployment_method": "dynamic",
            "services": {}, "secrets": {"db": "ENC[...]"},
        });
        let claim = Claim::from_document("f", doc).expect("claim");
        let presets = Presets::new(&BTreeMap::new()).expect("presets");
        let key = FingerprintKey::new([1; 32]);
        let renderer = Renderer::new(presets, "r".into()).with_fingerprint_key(key.clone());
        let values = BTreeMap::from([(
            "db".to_owned(),
            zeroize::Zeroizing::new(b"hunter2".to_vec()),
        )]);
        let secrets = Secrets::new(values, "dev-s", &key);
        let objects = renderer
            .render(&claim, &BTreeMap::new(), None, Some(&secrets))
            .expect("renders");
        let secret = objects.iter().find(|o| o.is_secret()).expect("a Secret");
        assert!(
            secret.yaml.contains("db: aHVudGVyMg=="),
            "{}",
            &*secret.yaml
        );
        assert_ne!(
            secret.object.digest,
            digest(secret.yaml.as_bytes()),
            "keyed, not a plain hash"
        );
        let shown = secret.redacted_yaml();
        assert!(
            shown.contains("db: '***'") && !shown.contains("aHVudGVyMg"),
            "{shown}"
        );
        assert!(!format!("{objects:?}").contains("aHVudGVyMg"));
        for o in objects.iter().filter(|o| !o.is_secret()) {
            assert!(!o.yaml.contains("aHVudGVyMg") && !o.yaml.contains("hunter2"));
        }
        // Another installation's key gives another digest.
        let other = Renderer::new(Presets::new(&BTreeMap::new()).expect("presets"), "r".into())
            .with_fingerprint_key(FingerprintKey::new([2; 32]));
        let again = other
            .render(&claim, &BTreeMap::new(), None, Some(&secrets))
            .expect("renders");
        let d2 = again
            .iter()
            .find(|o| o.is_secret())
            .expect("Secret")
            .object
            .digest;
        assert_ne!(d2, secret.object.digest);
    }

    #[test]
    fn templates_see_secret_keys_never_values() {
        let doc = serde_json::json!({
            "user": "u@x", "environment_pool": "team1",
            "creation_date": "2024-01-15T10:30:00Z", "environment_name": "dev-s",
            "environment_type": "dev", "deployment_method": "dynamic",
            "services": {}, "secrets": {"db": "ENC[...]", "api": "ENC[...]"},
        });
        let claim = Claim::from_document("f", doc).expect("claim");
        let presets = Presets::new(&BTreeMap::new()).expect("presets");
        let renderer = Renderer::new(presets, "r".into());
        let preset = renderer.presets().get(claim.environment_type);
        let versions = BTreeMap::new();
        let values = renderer.values(&claim, &versions, None, preset);
        let json = serde_json::to_value(&values).expect("values");
        assert_eq!(
            json["secrets"],
            serde_json::json!({"name": "converge-secrets", "keys": ["api", "db"]})
        );
    }

    #[test]
    fn node_placement_follows_the_preset() {
        let doc = serde_json::json!({
            "user": "u@x.io", "environment_pool": "p", "creation_date": "2024-01-15T10:30:00Z",
            "environment_name": "e", "environment_type": "dev", "deployment_method": "dynamic",
            "services": {"s": "1.0.0"}
        });
        let claim = Claim::from_document("f", doc).expect("valid");
        let versions = BTreeMap::from([(
            "s".to_owned(),
            Resolved {
                tag: "1.0.0".into(),
                constraint: "1.0.0".into(),
                dependency_of: Vec::new(),
            },
        )]);
        let pod_spec = |patch: serde_json::Value| {
            let overrides = BTreeMap::from([(crate::claim::EnvironmentType::Dev, patch)]);
            let renderer = Renderer::new(Presets::new(&overrides).expect("presets"), "r".into());
            let objects = renderer
                .render(&claim, &versions, None, None)
                .expect("renders");
            let d = objects
                .iter()
                .find(|o| &*o.object.id.kind == "Deployment")
                .expect("a Deployment");
            let v: Value = serde_saphyr::from_str(&d.yaml).expect("YAML");
            v["spec"]["template"]["spec"].clone()
        };
        let pools = serde_json::json!(["a", "b"]);
        let required = pod_spec(serde_json::json!({"node_pools": pools}));
        let term = &required["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0];
        assert_eq!(term["matchExpressions"][0]["values"], pools, "{required}");
        assert_eq!(required["tolerations"][1]["value"], "b");
        let preferred =
            pod_spec(serde_json::json!({"node_pools": pools, "placement": "preferred"}));
        let pref = &preferred["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
            [0];
        assert_eq!(pref["weight"], 100);
        assert_eq!(
            pref["preference"]["matchExpressions"][0]["values"], pools,
            "{preferred}"
        );
        let none = pod_spec(serde_json::json!({"node_pools": pools, "placement": "none"}));
        assert!(none.get("affinity").is_none(), "{none}");
        assert_eq!(none["tolerations"][0]["value"], "a");
        let empty = pod_spec(serde_json::json!({"node_pools": []}));
        assert!(
            empty.get("affinity").is_none() && empty.get("tolerations").is_none(),
            "{empty}"
        );
    }

    #[test]
    fn digests_round_trip_as_sha256_hex() {
        let d = digest(b"x");
        let text = d.to_string();
        assert!(text.starts_with("sha256:") && text.len() == 71);
        assert_eq!(Digest::parse(&text), Some(d));
        assert_eq!(Digest::parse(""), Some(Digest::PENDING));
        assert_eq!(Digest::parse("sha256:zz"), None);
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
    }
}
