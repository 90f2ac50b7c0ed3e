//! Object identity: what every target knows an object by.
//!
//! A leaf module. An [`ObjectRef`] is an object's group, version, kind,
//! namespace and name (kube-runtime's `ObjectRef` is the model). Identity is
//! group, kind, namespace and name: the version is how the object is written,
//! not which object it is, so `autoscaling/v1` and `autoscaling/v2` of one
//! `HorizontalPodAutoscaler` are the same object (never a create and a delete).
//! A file name is one target's mapping of an identity, not the identity.
//!
//! Kinds, API versions and namespaces are shared strings: the built-in kinds
//! and versions are allocated once per process, and an environment's objects
//! share its namespace, so 400k objects do not each carry copies.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, LazyLock};

use serde::{Deserialize, Serialize};

/// An object kind (`Deployment`).
pub type Kind = Arc<str>;

/// The kinds and API versions the built-in renderer emits, allocated once.
static WELL_KNOWN: LazyLock<Vec<Arc<str>>> = LazyLock::new(|| {
    [
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "Ingress",
        "LimitRange",
        "Namespace",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "ResourceQuota",
        "Secret",
        "Service",
        "v1",
        "apps/v1",
        "autoscaling/v2",
        "networking.k8s.io/v1",
        "policy/v1",
    ]
    .into_iter()
    .map(Arc::from)
    .collect()
});

/// `s` as a shared string: the well-known allocation when there is one.
#[must_use]
pub fn shared(s: &str) -> Arc<str> {
    WELL_KNOWN
        .iter()
        .find(|k| ***k == *s)
        .cloned()
        .unwrap_or_else(|| Arc::from(s))
}

/// `kind` as a [`Kind`]: shared when well known, allocated otherwise.
#[must_use]
pub fn kind(kind: &str) -> Kind {
    shared(kind)
}

/// The apply order of kinds: the Namespace first; quotas, limit ranges,
/// network policies, service accounts and RBAC; config maps and secrets;
/// services; workloads; autoscalers and disruption budgets; then anything
/// else (custom resources last, since they often depend on the rest).
/// Deletions run in the reverse order.
#[must_use]
pub fn kind_rank(kind: &str) -> u8 {
    match kind {
        "Namespace" => 0,
        "ResourceQuota" => 1,
        "LimitRange" => 2,
        "NetworkPolicy" => 3,
        "ServiceAccount" => 4,
        "Role" | "ClusterRole" => 5,
        "RoleBinding" | "ClusterRoleBinding" => 6,
        "ConfigMap" => 7,
        "Secret" => 8,
        "Service" => 9,
        "Deployment" | "StatefulSet" | "DaemonSet" | "Job" | "CronJob" => 10,
        "PodDisruptionBudget" => 11,
        "HorizontalPodAutoscaler" => 12,
        _ => 13,
    }
}

/// Which object: group/version (`apiVersion`), kind, namespace, name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectRef {
    /// `v1`, `apps/v1`, `example.org/v1alpha1`.
    #[serde(rename = "apiVersion")]
    pub api_version: Arc<str>,
    pub kind: Kind,
    /// `None` for cluster-scoped objects (a Namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<Arc<str>>,
    pub name: Box<str>,
}

impl ObjectRef {
    /// The API group (`""` for the core group).
    #[must_use]
    pub fn group(&self) -> &str {
        self.api_version.rsplit_once('/').map_or("", |(g, _)| g)
    }

    /// The API version within the group (`v1`).
    #[must_use]
    pub fn version(&self) -> &str {
        self.api_version
            .rsplit_once('/')
            .map_or(&*self.api_version, |(_, v)| v)
    }

    /// The parts that make up identity, in sort order.
    fn key(&self) -> (u8, &str, &str, Option<&str>, &str) {
        (
            kind_rank(&self.kind),
            &self.kind,
            self.group(),
            self.namespace.as_deref(),
            &self.name,
        )
    }

    /// The same object written with the shared allocations of `namespace`
    /// (an environment's objects share one) and of the well-known strings.
    #[must_use]
    pub fn interned(mut self, namespace: &Arc<str>) -> ObjectRef {
        if self.namespace.as_deref() == Some(&**namespace) {
            self.namespace = Some(namespace.clone());
        }
        self.kind = kind(&self.kind);
        self.api_version = shared(&self.api_version);
        self
    }
}

/// Identity: group, kind, namespace, name (not the version).
impl PartialEq for ObjectRef {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for ObjectRef {}

/// Apply order first (Namespace first), then kind, group, namespace, name.
impl Ord for ObjectRef {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

impl PartialOrd for ObjectRef {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Hash for ObjectRef {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

/// `Kind/name` (`Deployment/user-service`), as plans show objects.
impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> ObjectRef {
        ObjectRef {
            api_version: shared(api_version),
            kind: super::kind(kind),
            namespace: namespace.map(Arc::from),
            name: name.into(),
        }
    }

    #[test]
    fn identity_is_group_kind_namespace_name_not_version() {
        let v1 = r("autoscaling/v1", "HorizontalPodAutoscaler", Some("e"), "a");
        let v2 = r("autoscaling/v2", "HorizontalPodAutoscaler", Some("e"), "a");
        assert_eq!(v1, v2);
        assert_eq!((v1.group(), v1.version()), ("autoscaling", "v1"));
        let core = r("v1", "ConfigMap", Some("e"), "a");
        assert_eq!((core.group(), core.version()), ("", "v1"));
        assert_ne!(core, r("v1", "ConfigMap", Some("f"), "a"));
        assert_ne!(core, r("example.org/v1", "ConfigMap", Some("e"), "a"));
    }

    #[test]
    fn objects_sort_namespace_first_then_dependencies() {
        let mut refs = [
            r("apps/v1", "Deployment", Some("e"), "d"),
            r("example.org/v1", "Database", Some("e"), "x"),
            r("v1", "Namespace", None, "e"),
            r("v1", "ConfigMap", Some("e"), "c"),
        ];
        refs.sort();
        let kinds: Vec<&str> = refs.iter().map(|r| &*r.kind).collect();
        assert_eq!(kinds, ["Namespace", "ConfigMap", "Deployment", "Database"]);
    }
}
