//! Service-owned manifests (issue 23), the pure half: a service's own YAML
//! files, fetched once per (service, version) by [`crate::artifact`] and
//! parsed once here ([`ServiceManifests::parse`]), then rendered per
//! environment ([`ServiceManifests::render`]):
//!
//! 1. `${var}` / `${var:=default}` substituted **into parsed scalars only**
//!    (a string value, never the text): a value carrying
//!    `"\n---\nkind: ClusterRoleBinding"` stays one string of one object;
//!    an undefined variable without a default is an error naming service,
//!    version, file, object and variable;
//! 2. the hard fence, outside policy: never a `Namespace` or another
//!    cluster-scoped kind ([`CLUSTER_SCOPED`]), never a binding to a
//!    `ClusterRole`, never a namespace other than the environment's; then
//!    the policy fence ([`Judge`]): each object is a Cedar request, action
//!    `emit`, which the renderer asks for all of an environment's objects
//!    at once (the default policies permit the documented allow-list);
//! 3. the namespace forced to the environment's, the ownership labels added,
//!    and every container named after the service (or the only one) given
//!    the resolved image.
//!
//! Any error refuses the whole environment (the pipeline keeps it as it is).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

/// Kinds that are cluster-scoped in Kubernetes (whatever their group: a
/// custom kind of one of these names is refused too). The hard fence
/// refuses them whatever the policies say; a custom cluster-scoped kind
/// the list does not know is refused by the Kubernetes target, which
/// learns each kind's scope from discovery before it writes.
pub const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "Node",
    "PersistentVolume",
    "ComponentStatus",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "APIService",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "MutatingAdmissionPolicy",
    "MutatingAdmissionPolicyBinding",
    "StorageClass",
    "CSIDriver",
    "CSINode",
    "VolumeAttachment",
    "VolumeAttributesClass",
    "PriorityClass",
    "RuntimeClass",
    "IngressClass",
    "IPAddress",
    "ServiceCIDR",
    "CertificateSigningRequest",
    "ClusterTrustBundle",
    "FlowSchema",
    "PriorityLevelConfiguration",
    "TokenReview",
    "SelfSubjectReview",
    "SubjectAccessReview",
    "SelfSubjectAccessReview",
    "SelfSubjectRulesReview",
    "DeviceClass",
    "ResourceSlice",
];

/// Where a (service, version)'s manifests came from, as plans, statuses
/// and the policies (`context.artifact`) see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Artifact {
    /// `sha256:…` of what was fetched (the OCI layer, or the git tree).
    pub digest: String,
    /// The OCI repository (`host/repository`) or the git URL, credentials
    /// removed.
    pub source: String,
    /// The artifact's `org.opencontainers.image.revision` annotation, or
    /// the git commit; empty when unknown.
    pub revision: String,
    /// The artifact's `org.opencontainers.image.source` annotation (the
    /// service's repository); empty when unknown.
    pub origin: String,
}

impl Artifact {
    /// An artifact known by its digest only.
    #[must_use]
    pub fn digest(digest: String) -> Artifact {
        Artifact {
            digest,
            ..Artifact::default()
        }
    }
}

/// One object a service's manifests emit into an environment, as the
/// policies judge it.
#[derive(Debug, Clone, Copy)]
pub struct Emit<'a> {
    pub service: &'a str,
    pub version: &'a str,
    pub artifact: &'a Artifact,
    pub file: &'a str,
    pub api_version: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
}

impl Emit<'_> {
    /// The API group (`""` for the core group).
    #[must_use]
    pub fn group(&self) -> &str {
        self.api_version.rsplit_once('/').map_or("", |(g, _)| g)
    }

    /// `Deployment.apps`, or `Service` for the core group.
    #[must_use]
    pub fn group_kind(&self) -> String {
        match self.group() {
            "" => self.kind.to_owned(),
            g => format!("{}.{g}", self.kind),
        }
    }
}

/// The policy fence: whether services may emit objects into an
/// environment (the Cedar policies, action `emit`, behind a trait so
/// rendering stays a function of what it is handed).
pub trait Judge: Send + Sync {
    /// The first of `emits` the policies refuse for `claim`'s environment:
    /// its index and why, in words (the policies that forbid it, or that
    /// none permits it).
    ///
    /// # Errors
    ///
    /// The first refused object.
    fn judge(
        &self,
        claim: &crate::claim::Claim,
        expires_at: Option<i64>,
        emits: &[Emit<'_>],
    ) -> Result<(), (usize, String)>;

    /// Whether `claim` may name `service`'s manifests artifact itself
    /// (`reference`: its `ansible_artifact`, a tag or `@sha256:<digest>`).
    ///
    /// # Errors
    ///
    /// Why not, in words.
    fn pin(
        &self,
        claim: &crate::claim::Claim,
        expires_at: Option<i64>,
        service: &str,
        reference: &str,
    ) -> Result<(), String>;
}

/// What a claim's `ansible_artifact` names of a service's manifests
/// artifact, as the store asks for it: a tag, or `@sha256:<hex>` (the
/// manifest's digest). Written as a tag (`1.2.4-hotfix`), a digest
/// (`sha256:<hex>` or `@sha256:<hex>`), or a whole reference of the
/// service's own repository (`repository` without `oci://`):
/// `<repository>:<tag>` or `<repository>@sha256:<hex>`.
///
/// # Errors
///
/// Another repository, or neither a tag nor a digest, in words.
pub fn pin_reference(value: &str, repository: Option<&str>) -> Result<String, String> {
    let digest = |hex: &str| {
        (hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| format!("@sha256:{hex}"))
    };
    let tag = |t: &str| {
        let mut b = t.bytes();
        (b.next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
            && t.len() <= 128
            && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-')))
        .then(|| t.to_owned())
    };
    let bare = value.strip_prefix("oci://").unwrap_or(value);
    let rest = match repository {
        Some(repo) if bare.contains('/') => match bare.strip_prefix(repo) {
            Some(rest) if rest.starts_with([':', '@']) => rest,
            _ => {
                return Err(format!(
                    "ansible_artifact {value:?} names another artifact than the service's manifests ({repo}): name a tag or digest of it"
                ));
            }
        },
        _ => value,
    };
    let found = if let Some(hex) = rest
        .strip_prefix("@sha256:")
        .or_else(|| rest.strip_prefix("sha256:"))
    {
        digest(hex)
    } else {
        tag(rest.strip_prefix(':').unwrap_or(rest))
    };
    found.ok_or_else(|| {
        format!(
            "ansible_artifact {value:?} of a service with manifests must name a tag or sha256:<64 hex> digest of its artifact"
        )
    })
}

/// An object of a service's manifests rendered for an environment, with
/// where it was written.
#[derive(Debug)]
pub struct Emitted {
    pub file: Arc<str>,
    /// `Kind/name` as written.
    pub object: String,
    pub value: Value,
}

/// A file of the artifact: its path inside it and its text.
#[derive(Debug, Clone)]
pub struct File {
    pub path: String,
    pub text: String,
}

/// One parsed document of a service's manifests.
#[derive(Debug)]
struct Document {
    file: Arc<str>,
    /// `Kind/name` as written (before substitution), for messages.
    object: String,
    value: Value,
}

/// A (service, version)'s manifests, parsed once.
#[derive(Debug)]
pub struct ServiceManifests {
    /// What was fetched, and from where.
    pub artifact: Artifact,
    documents: Vec<Document>,
}

/// Why a service's manifests did not render for an environment (boxed:
/// errors stay small).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(transparent)]
pub struct ManifestError(pub Box<Refusal>);

impl From<Refusal> for ManifestError {
    fn from(r: Refusal) -> ManifestError {
        ManifestError(Box::new(r))
    }
}

/// What was refused, where, by which rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("service {service} {version}: {file}: {object}{rule}: {message}")]
pub struct Refusal {
    pub service: String,
    pub version: String,
    pub file: String,
    /// `Kind/name` (empty when the file did not parse).
    pub object: String,
    /// The rule broken, `" (rule fence)"` style; empty for parse errors.
    pub rule: String,
    pub message: String,
}

/// Where a renderer takes services' manifests from: the IO side
/// ([`crate::artifact::Store`]) behind a trait, as the secrets' key service
/// is, so rendering stays a function of what it is handed.
pub trait Fetch: Send + Sync {
    /// Whether `service` has manifests of its own.
    fn has(&self, service: &str) -> bool;
    /// The manifests of `service` at `version` (`dev`: from the dev
    /// registry). `Err`: unavailable now (kept as is, tried again next
    /// pass); `Ok(Err)`: fetched and refused (hostile, not YAML).
    ///
    /// # Errors
    ///
    /// The registry or git server could not be read, in words.
    #[allow(clippy::type_complexity, reason = "two kinds of failure, kept apart")]
    fn get(
        &self,
        service: &str,
        version: &str,
        dev: bool,
    ) -> Result<Result<Arc<ServiceManifests>, ManifestError>, String>;
    /// What a claim's `ansible_artifact` names of `service`'s artifact: a
    /// tag, or `@sha256:<hex>` ([`pin_reference`]).
    ///
    /// # Errors
    ///
    /// Not a tag or digest of the service's own artifact, in words.
    fn pin(&self, service: &str, ansible_artifact: &str) -> Result<String, String> {
        let _ = service;
        pin_reference(ansible_artifact, None)
    }
    /// A pass begins: what failed in the last one is tried again.
    fn begin_pass(&self) {}
}

/// What substitution sees: the environment's variables.
pub type Variables = BTreeMap<String, String>;

/// What one environment asks of a service's manifests.
pub struct Placement<'a> {
    pub service: &'a str,
    pub version: &'a str,
    pub image: &'a str,
    pub namespace: &'a Arc<str>,
    pub labels: &'a BTreeMap<&'static str, String>,
    pub variables: &'a Variables,
}

impl ServiceManifests {
    /// Parses every `*.yaml`/`*.yml` file (sorted by path) under the
    /// template budgets; empty documents are skipped.
    ///
    /// # Errors
    ///
    /// A file that is not YAML, or a document that is not a mapping with a
    /// kind and a name.
    pub fn parse(
        service: &str,
        version: &str,
        artifact: Artifact,
        mut files: Vec<File>,
    ) -> Result<ServiceManifests, ManifestError> {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let mut documents = Vec::new();
        let yaml = |f: &&File| {
            std::path::Path::new(&f.path)
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
        };
        for f in files.iter().filter(yaml) {
            let err = |object: String, message: String| {
                ManifestError::from(Refusal {
                    service: service.to_owned(),
                    version: version.to_owned(),
                    file: f.path.clone(),
                    object,
                    rule: String::new(),
                    message,
                })
            };
            let docs: Vec<Value> = serde_saphyr::from_str_multiple_with_options(
                &f.text,
                crate::yaml_limits::template_options(),
            )
            .map_err(|e| err(String::new(), format!("not YAML: {e}")))?;
            let file: Arc<str> = Arc::from(f.path.as_str());
            for value in docs.into_iter().filter(|d| !d.is_null()) {
                let object = identity(&value).map_err(|m| err(String::new(), m))?;
                documents.push(Document {
                    file: file.clone(),
                    object,
                    value,
                });
            }
        }
        Ok(ServiceManifests {
            artifact,
            documents,
        })
    }

    /// How many objects the manifests hold.
    #[must_use]
    pub fn len(&self) -> usize {
        self.documents.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.documents.is_empty()
    }

    /// The environment's objects: substituted, fenced (the hard rules; the
    /// policies are asked by the renderer, for all services at once),
    /// placed, labelled, the image set.
    ///
    /// # Errors
    ///
    /// An undefined variable, a fenced object: the first one found.
    pub fn render(&self, p: &Placement<'_>) -> Result<Vec<Emitted>, ManifestError> {
        let mut out = Vec::with_capacity(self.documents.len());
        for d in &self.documents {
            let err = |rule: &str, message: String| {
                ManifestError::from(Refusal {
                    service: p.service.to_owned(),
                    version: p.version.to_owned(),
                    file: d.file.to_string(),
                    object: d.object.clone(),
                    rule: format!(" (rule {rule})"),
                    message,
                })
            };
            let mut doc = d.value.clone();
            substitute(&mut doc, p.variables).map_err(|var| {
                err(
                    "undefined-variable",
                    format!("variable {var:?} is not defined and has no default"),
                )
            })?;
            fence(&doc, p.namespace).map_err(|m| err("fence", m))?;
            place(&mut doc, p).map_err(|m| err("object", m.to_owned()))?;
            out.push(Emitted {
                file: d.file.clone(),
                object: d.object.clone(),
                value: doc,
            });
        }
        Ok(out)
    }
}

/// `Kind/name` of a parsed document.
fn identity(doc: &Value) -> Result<String, String> {
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .ok_or("a document has no kind")?;
    let name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("a {kind} has no metadata.name"))?;
    Ok(format!("{kind}/{name}"))
}

/// Substitutes `${var}` and `${var:=default}` in every string scalar (keys
/// included), in place; `$${` is a literal `${`. Returns the first
/// undefined variable. A substituted value is text of the scalar, nothing
/// else: the document's structure is the file's.
fn substitute(v: &mut Value, vars: &Variables) -> Result<(), String> {
    match v {
        Value::String(s) if s.contains('$') => {
            let whole = is_one_reference(s);
            let text = expand(s, vars)?;
            // `replicas: ${replicas:=2}`: a scalar that is one reference
            // and gets an integer is that integer (a type, never structure).
            *v = match text.parse::<i64>() {
                Ok(n) if whole => Value::from(n),
                _ => Value::String(text),
            };
            Ok(())
        }
        Value::Array(items) => items.iter_mut().try_for_each(|i| substitute(i, vars)),
        Value::Object(map) => {
            if map.keys().any(|k| k.contains('$')) {
                let old = std::mem::take(map);
                for (k, mut val) in old {
                    substitute(&mut val, vars)?;
                    map.insert(expand(&k, vars)?, val);
                }
                Ok(())
            } else {
                map.values_mut().try_for_each(|i| substitute(i, vars))
            }
        }
        _ => Ok(()),
    }
}

/// Whether `s` is exactly one `${...}` reference.
fn is_one_reference(s: &str) -> bool {
    s.strip_prefix("${")
        .and_then(|r| r.strip_suffix('}'))
        .is_some_and(|body| !body.contains('}') && !body.contains("${"))
}

/// One scalar's text with its variables expanded.
fn expand(s: &str, vars: &Variables) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        if let Some(lit) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = lit;
            continue;
        }
        let Some(body) = after.strip_prefix("${") else {
            out.push('$');
            rest = &after[1..];
            continue;
        };
        let Some(end) = body.find('}') else {
            out.push_str(after);
            rest = "";
            break;
        };
        let expr = &body[..end];
        let (name, default) = match expr.split_once(":=") {
            Some((n, d)) => (n, Some(d)),
            None => (expr, None),
        };
        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if valid {
            match (vars.get(name), default) {
                (Some(v), _) => out.push_str(v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(name.to_owned()),
            }
        } else {
            // Not a variable reference: kept as written.
            out.push_str(&after[..end + 3]);
        }
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The hard fence around what a service may create, outside policy.
fn fence(doc: &Value, namespace: &str) -> Result<(), String> {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
    let api_version = doc
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if CLUSTER_SCOPED.contains(&kind) {
        return Err(format!(
            "{kind} of {api_version:?} is cluster-scoped: a service may create only namespaced objects in its environment's namespace"
        ));
    }
    if let Some(ns) = doc.pointer("/metadata/namespace")
        && ns.as_str() != Some(namespace)
    {
        return Err(format!(
            "namespace {ns} is not the environment's ({namespace})"
        ));
    }
    if kind == "RoleBinding" {
        let role = doc.get("roleRef").and_then(Value::as_object);
        let role_kind = role
            .and_then(|r| r.get("kind"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        if role_kind != "Role" {
            return Err(format!(
                "a RoleBinding may bind only a Role of the environment, not a {role_kind:?}"
            ));
        }
    }
    Ok(())
}

/// Namespace, ownership labels and the resolved image.
fn place(doc: &mut Value, p: &Placement<'_>) -> Result<(), &'static str> {
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let meta = doc
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .ok_or("object has no metadata mapping")?;
    meta.insert(
        "namespace".to_owned(),
        Value::String(p.namespace.to_string()),
    );
    let labels = meta
        .entry("labels")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or("metadata.labels is not a mapping")?;
    for (k, v) in p.labels {
        labels.insert((*k).to_owned(), Value::String(v.clone()));
    }
    let pod = match kind.as_str() {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => "/spec/template/spec",
        "CronJob" => "/spec/jobTemplate/spec/template/spec",
        _ => return Ok(()),
    };
    let Some(containers) = doc
        .pointer_mut(&format!("{pod}/containers"))
        .and_then(Value::as_array_mut)
    else {
        return Ok(());
    };
    let only = containers.len() == 1;
    for c in containers.iter_mut().filter_map(Value::as_object_mut) {
        let named = c.get("name").and_then(Value::as_str) == Some(p.service);
        if only || named {
            c.insert("image".to_owned(), Value::String(p.image.to_owned()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifests(text: &str) -> ServiceManifests {
        ServiceManifests::parse(
            "svc",
            "1.0.0",
            Artifact::digest("sha256:x".into()),
            vec![File {
                path: "deploy/app.yaml".into(),
                text: text.into(),
            }],
        )
        .expect("parses")
    }

    fn render(m: &ServiceManifests, vars: &[(&str, &str)]) -> Result<Vec<Value>, ManifestError> {
        render_emitted(m, vars).map(|out| out.into_iter().map(|e| e.value).collect())
    }

    fn render_emitted(
        m: &ServiceManifests,
        vars: &[(&str, &str)],
    ) -> Result<Vec<Emitted>, ManifestError> {
        let ns: Arc<str> = Arc::from("dev-x");
        let labels = BTreeMap::from([("app.kubernetes.io/managed-by", "converge".to_owned())]);
        let variables = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        m.render(&Placement {
            service: "svc",
            version: "1.0.0",
            image: "reg/svc:1.0.0",
            namespace: &ns,
            labels: &labels,
            variables: &variables,
        })
    }

    const DEPLOY: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: svc\nspec:\n  template:\n    spec:\n      containers:\n      - name: svc\n        image: placeholder\n        env:\n        - name: GREETING\n          value: ${greeting}\n        - name: LEVEL\n          value: ${level:=info}\n";

    #[test]
    fn a_value_with_a_document_separator_stays_one_scalar() {
        let m = manifests(DEPLOY);
        let hostile = "x\n---\nkind: ClusterRoleBinding\nmetadata:\n  name: pwn";
        let out = render(&m, &[("greeting", hostile)]).expect("renders");
        assert_eq!(out.len(), 1);
        let env = &out[0]["spec"]["template"]["spec"]["containers"][0]["env"];
        assert_eq!(env[0]["value"], hostile);
        assert_eq!(env[1]["value"], "info");
        assert_eq!(out[0]["metadata"]["namespace"], "dev-x");
        assert_eq!(
            out[0]["spec"]["template"]["spec"]["containers"][0]["image"],
            "reg/svc:1.0.0"
        );
        assert_eq!(
            out[0]["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "converge"
        );
        // Written and parsed again, still one object with that one string.
        let yaml = crate::render::yaml::to_string(&out[0]);
        let back: Vec<Value> = serde_saphyr::from_str_multiple(&yaml).expect("yaml");
        assert_eq!(back.len(), 1);
        assert_eq!(
            back[0]["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"],
            hostile
        );
    }

    #[test]
    fn an_undefined_variable_names_service_version_file_object_and_variable() {
        let e = render(&manifests(DEPLOY), &[]).expect_err("undefined");
        let text = e.to_string();
        for part in [
            "svc",
            "1.0.0",
            "deploy/app.yaml",
            "Deployment/svc",
            "greeting",
            "undefined-variable",
        ] {
            assert!(text.contains(part), "{part} in {text}");
        }
    }

    #[test]
    fn the_hard_fence_refuses_cluster_kinds_namespaces_and_cluster_role_bindings() {
        let cases = [
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n",
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: x\n",
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: x\nroleRef:\n  kind: ClusterRole\n  name: admin\n  apiGroup: rbac.authorization.k8s.io\n",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: kube-system\n",
            "apiVersion: evil.example/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: x\n",
        ];
        for c in cases {
            let e = render(&manifests(c), &[]).expect_err(c);
            assert!(e.0.rule.contains("fence"), "{e}");
        }
        let ok = "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: x\nroleRef:\n  kind: Role\n  name: r\n  apiGroup: rbac.authorization.k8s.io\n";
        render(&manifests(ok), &[]).expect("a binding to a Role is allowed");
        // Which namespaced kinds are the policies' to say (action emit).
        let secret = render_emitted(
            &manifests("apiVersion: v1\nkind: Secret\nmetadata:\n  name: x\n"),
            &[],
        )
        .expect("not the hard fence's");
        assert_eq!(&*secret[0].file, "deploy/app.yaml");
        assert_eq!(secret[0].object, "Secret/x");
    }

    #[test]
    fn a_whole_reference_to_an_integer_is_an_integer_and_anything_else_text() {
        let m = manifests(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: svc\nspec:\n  replicas: ${replicas:=2}\n  template:\n    metadata:\n      annotations:\n        n: \"v${replicas:=2}\"\n        s: ${greeting}\n",
        );
        let out = render(&m, &[("greeting", "7\n---\nkind: X")]).expect("renders");
        assert_eq!(out[0]["spec"]["replicas"], 2);
        assert_eq!(
            out[0]["spec"]["template"]["metadata"]["annotations"]["n"],
            "v2"
        );
        assert_eq!(
            out[0]["spec"]["template"]["metadata"]["annotations"]["s"],
            "7\n---\nkind: X"
        );
    }

    #[test]
    fn a_pin_is_a_tag_or_a_digest_of_the_service_s_own_artifact() {
        let hex = "ab".repeat(32);
        let repo = Some("reg:5000/oci/billing");
        for (value, want) in [
            ("1.2.4-hotfix", Ok("1.2.4-hotfix".to_owned())),
            (&*format!("sha256:{hex}"), Ok(format!("@sha256:{hex}"))),
            (&*format!("@sha256:{hex}"), Ok(format!("@sha256:{hex}"))),
            (
                &*format!("reg:5000/oci/billing@sha256:{hex}"),
                Ok(format!("@sha256:{hex}")),
            ),
            ("oci://reg:5000/oci/billing:2.0.0", Ok("2.0.0".to_owned())),
        ] {
            assert_eq!(pin_reference(value, repo), want, "{value}");
        }
        for value in [
            "reg:5000/oci/other:1.0.0",
            "reg:5000/oci/billing-x:1.0.0",
            "sha256:abc",
            "-x",
            "a/b",
        ] {
            assert!(pin_reference(value, repo).is_err(), "{value}");
        }
    }

    #[test]
    fn expansion_keeps_what_is_not_a_reference() {
        let vars = Variables::from([("a".to_owned(), "1".to_owned())]);
        assert_eq!(
            expand("$x ${a} $${a} ${a:=2} ${b:=z} ${not valid}", &vars).unwrap(),
            "$x 1 ${a} 1 z ${not valid}"
        );
        assert_eq!(expand("${a", &vars).unwrap(), "${a");
        assert_eq!(expand("${b}", &vars), Err("b".to_owned()));
    }
}
