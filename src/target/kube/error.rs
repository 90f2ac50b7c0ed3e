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

pub(super) fn is_immutable(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 422 && s.message.contains("immutable"))
}

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
    crate::target::Error::Transient(Box::new(std::io::Error::other(format!(
        "{} {} is still being deleted; it is applied again once it is gone",
        id.kind,
        shown(namespace, &id.name).trim()
    ))))
}

/// A failed request as a target error, by its HTTP status.
pub(super) fn classify(e: RequestError) -> crate::target::Error {
    match e.status {
        Some(403) if e.source.as_ref().is_some_and(is_namespace_terminating) => {
            crate::target::Error::Transient(Box::new(e))
        }
        Some(401 | 403) => crate::target::Error::Forbidden(Box::new(e)),
        Some(422) if e.message.contains("immutable") => {
            crate::target::Error::Immutable(Box::new(e))
        }
        Some(400 | 404 | 405 | 406 | 409 | 410 | 413 | 415 | 422) => {
            crate::target::Error::Invalid(Box::new(e))
        }
        _ => crate::target::Error::Transient(Box::new(e)),
    }
}
