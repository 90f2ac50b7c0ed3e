//! The built-in objects, written straight to YAML.
//!
//! A cold plan renders ~200k objects for 10k environments; building each as a
//! `serde_json::Value` and then emitting it cost most of a pass. These objects
//! have a fixed shape, so they are written directly with the same layout and
//! scalar rules as [`super::yaml`] (the golden files pin the bytes). Custom
//! templates still go through values and the generic emitter.

use std::collections::BTreeMap;

use super::yaml::{push_key, push_string};
use super::{Values, label_value};
use crate::claim::Claim;
use crate::config::preset::Placement;

/// A YAML document under construction.
struct Doc {
    out: String,
    /// The next write continues a `- ` item line instead of indenting.
    inline: bool,
}

impl Doc {
    fn new() -> Doc {
        Doc {
            out: String::with_capacity(1024),
            inline: false,
        }
    }

    fn indent(&mut self, at: usize) {
        if self.inline {
            self.inline = false;
        } else {
            self.out.extend(std::iter::repeat_n(' ', at));
        }
    }

    /// `key:`, or `? key` and `:` on the next line for a key too long to be implicit.
    fn key(&mut self, at: usize, key: &str) {
        self.indent(at);
        if push_key(&mut self.out, key) {
            self.out.push('\n');
            self.out.extend(std::iter::repeat_n(' ', at));
        }
        self.out.push(':');
    }

    /// `key: "value"` (a string scalar).
    fn str(&mut self, at: usize, key: &str, value: &str) {
        self.key(at, key);
        self.out.push(' ');
        push_string(&mut self.out, value, at);
        self.out.push('\n');
    }

    /// `key: 3` (a number).
    fn num(&mut self, at: usize, key: &str, value: u32) {
        self.key(at, key);
        self.out.push(' ');
        self.out.push_str(&value.to_string());
        self.out.push('\n');
    }

    /// `key:` opening a nested mapping or sequence.
    fn open(&mut self, at: usize, key: &str) {
        self.key(at, key);
        self.out.push('\n');
    }

    /// `- ` starting a sequence item whose first entry follows on the same line.
    fn item(&mut self, at: usize) {
        self.indent(at);
        self.out.push_str("- ");
        self.inline = true;
    }

    /// A sequence of string scalars (`key: []` when empty).
    fn strs(&mut self, at: usize, key: &str, items: &[String]) {
        if items.is_empty() {
            self.key(at, key);
            self.out.push_str(" []\n");
            return;
        }
        self.open(at, key);
        for item in items {
            self.indent(at);
            self.out.push_str("- ");
            push_string(&mut self.out, item, at);
            self.out.push('\n');
        }
    }

    fn map(&mut self, at: usize, key: &str, entries: &[(&str, &str)]) {
        if entries.is_empty() {
            self.key(at, key);
            self.out.push_str(" {}\n");
            return;
        }
        self.open(at, key);
        for (k, v) in entries {
            self.str(at + 2, k, v);
        }
    }

    fn header(&mut self, api_version: &str, kind: &str) {
        self.str(0, "apiVersion", api_version);
        self.str(0, "kind", kind);
    }

    fn finish(self) -> String {
        self.out
    }
}

/// Extra labels first, then the ownership labels (as the generic path orders them).
fn labels<'a>(
    extra: &[(&'a str, &'a str)],
    own: &'a BTreeMap<&'static str, String>,
) -> Vec<(&'a str, &'a str)> {
    let mut out: Vec<(&str, &str)> = Vec::with_capacity(extra.len() + own.len());
    for (k, v) in extra {
        if !own.contains_key(k) {
            out.push((k, v));
        }
    }
    out.extend(own.iter().map(|(k, v)| (*k, v.as_str())));
    out
}

fn metadata(
    d: &mut Doc,
    v: &Values<'_>,
    name: &str,
    extra: &[(&str, &str)],
    annotations: &[(&str, &str)],
) {
    d.open(0, "metadata");
    d.str(2, "name", name);
    d.str(2, "namespace", v.environment.name);
    d.map(2, "labels", &labels(extra, &v.labels));
    if !annotations.is_empty() {
        d.map(2, "annotations", annotations);
    }
}

/// `(api_version, kind, name, yaml)` of every built-in object of an environment.
#[allow(
    clippy::many_single_char_names,
    clippy::too_many_lines,
    reason = "the built-in templates read top to bottom, one object after another, with short names"
)]
/// `own` names the services that bring their own manifests: they get no
/// built-in objects.
pub(super) fn objects(
    claim: &Claim,
    v: &Values<'_>,
    own: &dyn Fn(&str) -> bool,
) -> Vec<(&'static str, &'static str, String, String)> {
    let env = &v.environment;
    let p = v.preset;
    let mut out = Vec::with_capacity(5 + 4 * v.services.len());

    // Namespace
    let mut d = Doc::new();
    d.header("v1", "Namespace");
    d.open(0, "metadata");
    d.str(2, "name", env.name);
    let owner = label_value(env.owner);
    let extra = [
        ("converge.dev/type", env.env_type),
        ("converge.dev/pool", env.pool),
        ("converge.dev/owner", owner.as_str()),
    ];
    d.map(2, "labels", &labels(&extra, &v.labels));
    let waf = if p.waf { "enabled" } else { "disabled" };
    let mut annotations = vec![
        ("converge.dev/owner", env.owner),
        ("converge.dev/deployment-method", env.deployment_method),
        ("converge.dev/created-at", env.creation_date.as_str()),
    ];
    if let Some(at) = &env.expires_at {
        annotations.push(("converge.dev/expires-at", at.as_str()));
    }
    for key in [
        "converge.dev/logging",
        "converge.dev/monitoring",
        "converge.dev/gateway",
        "converge.dev/authz",
    ] {
        annotations.push((key, p.platform_services.as_str()));
    }
    annotations.push(("converge.dev/waf", waf));
    d.map(2, "annotations", &annotations);
    out.push(("v1", "Namespace", env.name.to_owned(), d.finish()));

    // ResourceQuota
    let mut d = Doc::new();
    d.header("v1", "ResourceQuota");
    metadata(&mut d, v, "quota", &[], &[]);
    d.open(0, "spec");
    let pods = p.quota.pods.to_string();
    d.map(
        2,
        "hard",
        &[
            ("requests.cpu", &p.quota.cpu),
            ("requests.memory", &p.quota.memory),
            ("limits.cpu", &p.quota.cpu),
            ("limits.memory", &p.quota.memory),
            ("pods", &pods),
        ],
    );
    out.push(("v1", "ResourceQuota", "quota".to_owned(), d.finish()));

    // LimitRange
    let c = &p.container;
    let mut d = Doc::new();
    d.header("v1", "LimitRange");
    metadata(&mut d, v, "defaults", &[], &[]);
    d.open(0, "spec");
    d.open(2, "limits");
    d.item(2);
    d.str(4, "type", "Container");
    d.map(
        4,
        "default",
        &[("cpu", &c.cpu_limit), ("memory", &c.memory_limit)],
    );
    d.map(
        4,
        "defaultRequest",
        &[("cpu", &c.cpu_request), ("memory", &c.memory_request)],
    );
    out.push(("v1", "LimitRange", "defaults".to_owned(), d.finish()));

    // NetworkPolicy
    let mut d = Doc::new();
    d.header("networking.k8s.io/v1", "NetworkPolicy");
    let name = "default-deny-from-other-namespaces";
    metadata(&mut d, v, name, &[], &[]);
    d.open(0, "spec");
    d.map(2, "podSelector", &[]);
    d.strs(2, "policyTypes", &["Ingress".to_owned()]);
    d.open(2, "ingress");
    d.item(2);
    d.open(4, "from");
    d.item(4);
    d.map(6, "podSelector", &[]);
    out.push((
        "networking.k8s.io/v1",
        "NetworkPolicy",
        name.to_owned(),
        d.finish(),
    ));

    // ConfigMap
    let mut d = Doc::new();
    d.header("v1", "ConfigMap");
    metadata(&mut d, v, "converge-claim", &[], &[]);
    d.map(
        0,
        "data",
        &[("claim.json", &super::redacted_claim(claim, v))],
    );
    out.push(("v1", "ConfigMap", "converge-claim".to_owned(), d.finish()));

    for s in v.services.iter().filter(|s| !own(s.name)) {
        let app = [
            ("app.kubernetes.io/name", s.name),
            ("app.kubernetes.io/version", s.version),
        ];
        let selector = [("app.kubernetes.io/name", s.name)];

        // Deployment
        let mut d = Doc::new();
        d.header("apps/v1", "Deployment");
        let mut annotations = vec![("converge.dev/version-constraint", s.constraint)];
        if let Some(artifact) = s.ansible_artifact {
            annotations.push(("converge.dev/ansible-artifact", artifact));
        }
        metadata(&mut d, v, s.name, &app, &annotations);
        d.open(0, "spec");
        // No `replicas`: the service's HorizontalPodAutoscaler owns the
        // field (through the scale subresource). Applying it would set the
        // count back on every release; omitted, server-side apply leaves
        // what the autoscaler decided (a new Deployment starts at 1 and the
        // autoscaler raises it to `minReplicas`).
        d.open(2, "selector");
        d.map(4, "matchLabels", &selector);
        d.open(2, "template");
        d.open(4, "metadata");
        d.map(6, "labels", &labels(&app, &v.labels));
        d.open(4, "spec");
        // The node-pool contract (README, "Node pools"): nodes labelled
        // `converge.dev/node-pool=<pool>`, tainted with that key or not.
        match (p.placement, p.node_pools.is_empty()) {
            (_, true) | (Placement::None, false) => {}
            (Placement::Required, false) => {
                d.open(6, "affinity");
                d.open(8, "nodeAffinity");
                d.open(10, "requiredDuringSchedulingIgnoredDuringExecution");
                d.open(12, "nodeSelectorTerms");
                d.item(12);
                d.open(14, "matchExpressions");
                d.item(14);
                d.str(16, "key", "converge.dev/node-pool");
                d.str(16, "operator", "In");
                d.strs(16, "values", &p.node_pools);
            }
            (Placement::Preferred, false) => {
                d.open(6, "affinity");
                d.open(8, "nodeAffinity");
                d.open(10, "preferredDuringSchedulingIgnoredDuringExecution");
                d.item(10);
                d.num(12, "weight", 100);
                d.open(12, "preference");
                d.open(14, "matchExpressions");
                d.item(14);
                d.str(16, "key", "converge.dev/node-pool");
                d.str(16, "operator", "In");
                d.strs(16, "values", &p.node_pools);
            }
        }
        if !p.node_pools.is_empty() {
            d.open(6, "tolerations");
            for pool in &p.node_pools {
                d.item(6);
                d.str(8, "key", "converge.dev/node-pool");
                d.str(8, "operator", "Equal");
                d.str(8, "value", pool);
                d.str(8, "effect", "NoSchedule");
            }
        }
        d.open(6, "containers");
        d.item(6);
        d.str(8, "name", s.name);
        d.str(8, "image", &s.image);
        d.open(8, "ports");
        d.item(8);
        d.str(10, "name", "http");
        d.num(10, "containerPort", 8080);
        d.open(8, "resources");
        d.map(
            10,
            "requests",
            &[("cpu", &c.cpu_request), ("memory", &c.memory_request)],
        );
        d.map(
            10,
            "limits",
            &[("cpu", &c.cpu_limit), ("memory", &c.memory_limit)],
        );
        out.push(("apps/v1", "Deployment", s.name.to_owned(), d.finish()));

        // Service
        let mut d = Doc::new();
        d.header("v1", "Service");
        metadata(&mut d, v, s.name, &app, &[]);
        d.open(0, "spec");
        d.map(2, "selector", &selector);
        d.open(2, "ports");
        d.item(2);
        d.str(4, "name", "http");
        d.num(4, "port", 80);
        d.str(4, "targetPort", "http");
        out.push(("v1", "Service", s.name.to_owned(), d.finish()));

        // HorizontalPodAutoscaler
        let a = &p.autoscaling;
        let mut d = Doc::new();
        d.header("autoscaling/v2", "HorizontalPodAutoscaler");
        metadata(
            &mut d,
            v,
            s.name,
            &[("converge.dev/autoscaling", &a.profile)],
            &[],
        );
        d.open(0, "spec");
        d.map(
            2,
            "scaleTargetRef",
            &[
                ("apiVersion", "apps/v1"),
                ("kind", "Deployment"),
                ("name", s.name),
            ],
        );
        d.num(2, "minReplicas", a.min_replicas);
        d.num(2, "maxReplicas", a.max_replicas);
        d.open(2, "metrics");
        d.item(2);
        d.str(4, "type", "Resource");
        d.open(4, "resource");
        d.str(6, "name", "cpu");
        d.open(6, "target");
        d.str(8, "type", "Utilization");
        d.num(8, "averageUtilization", a.target_cpu_utilization);
        out.push((
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
            s.name.to_owned(),
            d.finish(),
        ));

        if p.ha {
            let mut d = Doc::new();
            d.header("policy/v1", "PodDisruptionBudget");
            metadata(&mut d, v, s.name, &app, &[]);
            d.open(0, "spec");
            d.num(2, "minAvailable", 1);
            d.open(2, "selector");
            d.map(4, "matchLabels", &selector);
            out.push((
                "policy/v1",
                "PodDisruptionBudget",
                s.name.to_owned(),
                d.finish(),
            ));
        }
    }
    out
}

/// The name of the built-in `Secret` holding an environment's decrypted `secrets`.
pub const SECRET_NAME: &str = "converge-secrets";

/// The environment's `Secret` (Opaque, one key per `secrets` key, values
/// base64 in `data`). Its buffer is sized up front, so the plaintext is not
/// left behind in reallocated memory; the caller zeroes it on drop.
pub(super) fn secret(v: &Values<'_>, secrets: &crate::secret::Secrets) -> String {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::STANDARD;
    let size: usize = secrets
        .values()
        .iter()
        .map(|(k, s)| k.len() + s.expose().len() * 4 / 3 + 16)
        .sum();
    let mut d = Doc {
        out: String::with_capacity(1024 + 2 * size),
        inline: false,
    };
    d.header("v1", "Secret");
    metadata(&mut d, v, SECRET_NAME, &[], &[]);
    d.str(0, "type", "Opaque");
    if secrets.values().is_empty() {
        d.out.push_str("data: {}\n");
    } else {
        d.open(0, "data");
        let mut encoded = zeroize::Zeroizing::new(String::with_capacity(size));
        for (k, s) in secrets.values() {
            encoded.clear();
            engine.encode_string(s.expose(), &mut encoded);
            d.str(2, k, &encoded);
        }
    }
    d.finish()
}
