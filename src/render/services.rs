//! The render of services' own manifests (issue 23) for one environment:
//! which artifact each service asks for (the resolved version, or the
//! claim's `ansible_artifact` where the policies let it), its objects
//! rendered with the environment's variables, then judged by the policies
//! all at once ([`service::Judge`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{Preset, RenderError, Rendered, Renderer, ServiceValues, Values, service, to_object};
use crate::claim::Claim;
use crate::resolve::Resolved;

impl Renderer {
    /// Per service with manifests of its own: what was asked for (the
    /// resolved version, or the claim's `ansible_artifact`) and the artifact
    /// it was found at. Called after a successful [`Renderer::render`] of
    /// the same claim and versions (the fetches are cached by then).
    #[must_use]
    pub fn artifacts(
        &self,
        claim: &Claim,
        versions: &BTreeMap<String, Resolved>,
    ) -> BTreeMap<String, (String, service::Artifact)> {
        let Some(fetch) = &self.manifests else {
            return BTreeMap::new();
        };
        let preset = self.presets.get(claim.environment_type);
        let mut out = BTreeMap::new();
        for (name, resolved) in versions.iter().filter(|(n, _)| fetch.has(n)) {
            let pin = claim
                .services
                .get(name)
                .and_then(|s| s.ansible_artifact.as_deref());
            let reference = match pin.map(|a| fetch.pin(name, a)) {
                Some(Ok(r)) => r,
                Some(Err(_)) => continue,
                None => resolved.tag.clone(),
            };
            if let Ok(Ok(m)) = fetch.get(name, &reference, preset.use_dev_tags) {
                out.insert(name.clone(), (reference, m.artifact.clone()));
            }
        }
        out
    }

    /// The objects of every service that has manifests of its own, each
    /// fetched (once per service and version, by `fetch`), rendered with
    /// this environment's variables ([`service`]), then judged by the
    /// policies all at once (action `emit`): one refused object refuses
    /// the environment.
    pub(super) fn render_services(
        (fetch, judge): (&dyn service::Fetch, &dyn service::Judge),
        (claim, expires_at): (&Claim, Option<DateTime<Utc>>),
        values: &Values<'_>,
        preset: &Preset,
        namespace: &Arc<str>,
    ) -> Result<Vec<Rendered>, RenderError> {
        let mut emitted = Vec::new();
        for s in values.services.iter().filter(|s| fetch.has(s.name)) {
            // A claim may name the artifact itself where the policies let it.
            let reference = match s.ansible_artifact {
                Some(a) => {
                    let refused = |rule, message| RenderError::Pin {
                        service: s.name.to_owned(),
                        reference: a.to_owned(),
                        rule,
                        message,
                    };
                    let pinned = fetch
                        .pin(s.name, a)
                        .map_err(|m| refused("ansible-artifact", m))?;
                    judge
                        .pin(claim, expires_at.map(|t| t.timestamp()), s.name, &pinned)
                        .map_err(|m| refused("policy", m))?;
                    std::borrow::Cow::Owned(pinned)
                }
                None => std::borrow::Cow::Borrowed(s.version),
            };
            let manifests =
                fetch
                    .get(s.name, &reference, preset.use_dev_tags)
                    .map_err(|message| RenderError::ManifestsUnavailable {
                        service: s.name.to_owned(),
                        version: s.version.to_owned(),
                        message,
                    })?;
            let manifests = manifests.map_err(RenderError::Manifests)?;
            let variables = service_variables(values, s, preset);
            let docs = manifests.render(&service::Placement {
                service: s.name,
                version: s.version,
                image: &s.image,
                namespace,
                labels: &values.labels,
                variables: &variables,
            })?;
            emitted.extend(docs.into_iter().map(|d| (s, manifests.clone(), d)));
        }
        let refusal =
            |(s, _, d): &(&ServiceValues<'_>, _, service::Emitted), rule: &str, message: String| {
                RenderError::Manifests(service::ManifestError::from(service::Refusal {
                    service: s.name.to_owned(),
                    version: s.version.to_owned(),
                    file: d.file.to_string(),
                    object: d.object.clone(),
                    rule: format!(" (rule {rule})"),
                    message,
                }))
            };
        let mut out = Vec::with_capacity(emitted.len());
        for e in &emitted {
            out.push(to_object(&e.2.value, namespace).map_err(|m| refusal(e, "object", m))?);
        }
        let emits: Vec<service::Emit<'_>> = emitted
            .iter()
            .zip(&out)
            .map(|((s, m, d), o)| service::Emit {
                service: s.name,
                version: s.version,
                artifact: &m.artifact,
                file: &d.file,
                api_version: &o.object.id.api_version,
                kind: &o.object.id.kind,
                name: &o.object.id.name,
            })
            .collect();
        if let Err((i, message)) = judge.judge(claim, expires_at.map(|t| t.timestamp()), &emits) {
            return Err(refusal(
                &emitted[i.min(emitted.len() - 1)],
                "policy",
                message,
            ));
        }
        Ok(out)
    }
}

/// The variables a service's manifests may use (`${name}`): the
/// environment's name, type, pool, owner and namespace, the service's
/// name, version and image, the claim's `git_repository` and `branch`
/// when it has them, and every scalar of the preset (`preset_<key>`).
fn service_variables(
    values: &Values<'_>,
    s: &ServiceValues<'_>,
    preset: &Preset,
) -> service::Variables {
    let env = &values.environment;
    let mut vars = service::Variables::from([
        ("environment".to_owned(), env.name.to_owned()),
        ("environment_name".to_owned(), env.name.to_owned()),
        ("environment_type".to_owned(), env.env_type.to_owned()),
        ("environment_pool".to_owned(), env.pool.to_owned()),
        ("owner".to_owned(), env.owner.to_owned()),
        ("namespace".to_owned(), env.name.to_owned()),
        ("service".to_owned(), s.name.to_owned()),
        ("version".to_owned(), s.version.to_owned()),
        ("image".to_owned(), s.image.clone()),
    ]);
    if let Some(r) = env.git_repository {
        vars.insert("git_repository".to_owned(), r.to_owned());
    }
    if let Some(b) = env.branch {
        vars.insert("branch".to_owned(), b.to_owned());
    }
    if let Ok(Value::Object(p)) = serde_json::to_value(preset) {
        for (k, v) in p {
            let text = match v {
                Value::String(t) => t,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => continue,
            };
            vars.insert(format!("preset_{k}"), text);
        }
    }
    vars
}
