//! The Kubernetes target's errors: a failed request, a failed setup, and
//! their classification into [`crate::target::Error`].

use super::shown;
use crate::object::ObjectRef;

/// One failed request, as the API server or the connection said.
#[derive(Debug, thiserror::Error)]
#[error("{verb} {resource}{object}: {message}")]
pub struct RequestError {
    /// `get`, `list`, `patch`, `delete`, `discover`.
    pub verb: &'static str,
    /// `deployments.apps`, `configmaps`.
    pub resource: String,
    /// ` <namespace>/<name>`, or empty.
    pub object: String,
    /// The HTTP status, when the server answered.
    pub status: Option<u16>,
    pub message: String,
    #[source]
    pub source: Option<kube::Error>,
}

/// Why the target cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot read kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("cannot read kubeconfig {path}: {source}")]
    KubeconfigUnreadable {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot use the kubeconfig context: {0}")]
    Context(#[source] kube::config::KubeconfigError),
    #[error(
        "no Kubernetes configuration: no kubeconfig given, none in $KUBECONFIG or ~/.kube/config, and not running in a cluster ({0})"
    )]
    Infer(#[source] kube::config::InferConfigError),
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    #[error("cannot start the Kubernetes client's runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

pub(super) fn request_error(
    verb: &'static str,
    resource: &str,
    object: &str,
    e: kube::Error,
) -> RequestError {
    let (status, message) = match &e {
        kube::Error::Api(s) => (Some(s.code), s.message.clone()),
        // The connection's failure (refused, reset, TLS, timed out), in
        // words: kube's own wrapper ("ServiceError") says nothing more.
        kube::Error::Service(inner) => {
            let message = crate::diagnostic::chain(inner.as_ref());
            return RequestError {
                verb,
                resource: resource.to_owned(),
                object: object.to_owned(),
                status: None,
                message,
                source: None,
            };
        }
        other => (None, crate::diagnostic::chain(other)),
    };
    RequestError {
        verb,
        resource: resource.to_owned(),
        object: object.to_owned(),
        status,
        message,
        source: Some(e),
    }
}

pub(super) fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// A refusal to change a field that cannot change once set, as the API
/// server structures it: a 422 `Invalid` status whose causes include a
/// `FieldValueInvalid` or `FieldValueForbidden` on that field (apimachinery's
/// `ValidateImmutableField`: a Deployment's `spec.selector`, a Job's
/// template, a Service's `clusterIP`; an `immutable` `ConfigMap`'s data). The
/// status carries no code for "immutable", so the cause's own message is read
/// last, and only that cause's (never the top-level message, which a webhook
/// can word as it likes).
pub(super) fn is_immutable(e: &kube::Error) -> bool {
    let kube::Error::Api(s) = e else {
        return false;
    };
    s.code == 422
        && s.reason == "Invalid"
        && s.details.as_ref().is_some_and(|d| {
            d.causes.iter().any(|c| {
                matches!(
                    c.reason.as_str(),
                    "FieldValueInvalid" | "FieldValueForbidden"
                ) && c.message.contains(IMMUTABLE)
            })
        })
}

/// What apimachinery's field errors say of an immutable field
/// (`FieldImmutableErrorMsg`, "field is immutable", and the wordings of the
/// kinds that allow some changes: "is immutable after creation", "is
/// immutable when `immutable` is set").
const IMMUTABLE: &str = "immutable";

/// A refusal to create in a Namespace that is being deleted (the cause
/// `NamespaceTerminating` the API server gives with its 403): transient, it
/// is gone in a moment and the next try creates it anew.
pub(super) fn is_namespace_terminating(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.details.as_ref().is_some_and(|d| {
        d.causes.iter().any(|c| c.reason == "NamespaceTerminating")
    }))
}

/// The Namespace a request was refused for not existing: the 404 of the
/// API server's `NamespaceLifecycle` admission (details `namespaces`,
/// core group, the Namespace's name), not the 404 of the object itself.
pub(super) fn missing_namespace(e: &kube::Error) -> Option<&str> {
    match e {
        kube::Error::Api(s) if s.code == 404 => s
            .details
            .as_ref()
            .filter(|d| d.kind == "namespaces" && d.group.is_empty() && !d.name.is_empty())
            .map(|d| d.name.as_str()),
        _ => None,
    }
}

/// An object the API server answers for with a `deletionTimestamp`: a
/// transient failure, applied again once it is gone.
pub(super) fn still_being_deleted(id: &ObjectRef, namespace: Option<&str>) -> crate::target::Error {
    crate::target::Error::Transient(Box::new(Failure::StillBeingDeleted {
        kind: id.kind.to_string(),
        object: shown(namespace, &id.name).trim().to_owned(),
    }))
}

/// A failure of the Kubernetes target that is not one failed request (that
/// is a [`RequestError`]), kept typed inside [`crate::target::Error`].
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The object exists with a `deletionTimestamp`.
    #[error("{kind} {object} is still being deleted; it is applied again once it is gone")]
    StillBeingDeleted { kind: String, object: String },
    /// A rendered object the target cannot read as YAML.
    #[error("the rendered {object} is not YAML: {source}")]
    NotYaml {
        object: String,
        #[source]
        source: serde_saphyr::Error,
    },
    /// An inventory `ConfigMap` that cannot be read as one.
    #[error("inventory ConfigMap {name} is corrupt: {detail}")]
    CorruptInventory {
        name: String,
        detail: String,
        #[source]
        source: Option<serde_json::Error>,
    },
    /// One failure shared by several environments (the inventory Namespace
    /// could not be made, so no environment of the call is applied).
    #[error(transparent)]
    Shared(std::sync::Arc<crate::target::Error>),
}

/// A failed request as a target error, by its HTTP status and the API
/// server's structured details (never by message text).
pub(super) fn classify(e: RequestError) -> crate::target::Error {
    match e.status {
        Some(403) if e.source.as_ref().is_some_and(is_namespace_terminating) => {
            crate::target::Error::Transient(Box::new(e))
        }
        Some(401 | 403) => crate::target::Error::Forbidden(Box::new(e)),
        Some(422) if e.source.as_ref().is_some_and(is_immutable) => {
            crate::target::Error::Immutable(Box::new(e))
        }
        Some(400 | 404 | 405 | 406 | 409 | 410 | 413 | 415 | 422) => {
            crate::target::Error::Invalid(Box::new(e))
        }
        _ => crate::target::Error::Transient(Box::new(e)),
    }
}
