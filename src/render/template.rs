//! A platform team's custom templates, rendered so that no value can change
//! the shape of their output.
//!
//! Only a template's own text is YAML. Whatever it prints (`{{ ... }}`, a
//! macro call, a filter block) reaches the YAML parser as a fixed token
//! (`__converge_value_<n>__`) and is put back into the parsed document as
//! data: a token that is a whole scalar becomes the printed value itself (a
//! string, number, boolean, null, list or mapping; a string when the
//! template quotes it), a token inside a longer scalar or key becomes the
//! value's text. A claim value can therefore add no key, document or object,
//! whatever characters it holds. Objects then stay in the environment's
//! namespace and may not be of a cluster-scoped kind unless the config lists
//! the template in `templates.cluster_scoped`.

use std::collections::HashSet;

use minijinja::value::Value as Printed;
use serde_json::{Map, Value};

/// The start of the token standing for the n-th printed value.
pub(super) const TOKEN: &str = "__converge_value_";
const TOKEN_END: &str = "__";

/// Kubernetes' cluster-scoped built-in kinds. A custom resource's scope is
/// known only to the cluster: the Kubernetes target refuses a cluster-scoped
/// kind that was rendered into a namespace (as every object of a template
/// not listed in `templates.cluster_scoped` is).
const CLUSTER_SCOPED: &[&str] = &[
    "APIService",
    "CertificateSigningRequest",
    "ClusterRole",
    "ClusterRoleBinding",
    "ClusterTrustBundle",
    "ComponentStatus",
    "CSIDriver",
    "CSINode",
    "CustomResourceDefinition",
    "DeviceClass",
    "DeviceTaintRule",
    "FlowSchema",
    "IngressClass",
    "IPAddress",
    "MutatingAdmissionPolicy",
    "MutatingAdmissionPolicyBinding",
    "MutatingWebhookConfiguration",
    "Namespace",
    "Node",
    "PersistentVolume",
    "PriorityClass",
    "PriorityLevelConfiguration",
    "ResourceSlice",
    "RuntimeClass",
    "SelfSubjectAccessReview",
    "SelfSubjectReview",
    "SelfSubjectRulesReview",
    "ServiceCIDR",
    "StorageClass",
    "StorageVersion",
    "StorageVersionMigration",
    "SubjectAccessReview",
    "TokenReview",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "ValidatingWebhookConfiguration",
    "VolumeAttachment",
    "VolumeAttributesClass",
];

/// Whether `kind` is one of Kubernetes' cluster-scoped built-in kinds.
#[must_use]
pub fn is_cluster_scoped(kind: &str) -> bool {
    CLUSTER_SCOPED.contains(&kind)
}

/// The values a render printed, in order (a render-local extension).
#[derive(Default)]
struct PrintedValues(Vec<Printed>);

/// The environment's formatter: records the value and prints its token.
/// A macro's or filter block's output holds the tokens of what it printed:
/// they are replaced by their text, so it becomes one string value too (a
/// filter that changes the tokens' text, such as `upper`, garbles them).
pub(super) fn formatter(
    out: &mut minijinja::Output<'_>,
    state: &mut minijinja::State<'_, '_>,
    value: &Printed,
) -> Result<(), minijinja::Error> {
    let printed = state.get_or_insert_extension_with(PrintedValues::default);
    let value = match value.as_str() {
        Some(s) if s.contains(TOKEN) => Printed::from(expand(s, &printed.0)),
        _ => value.clone(),
    };
    let n = printed.0.len();
    printed.0.push(value);
    std::fmt::Write::write_fmt(out, format_args!("{TOKEN}{n}{TOKEN_END}"))?;
    Ok(())
}

/// Renders a template: its output text (with tokens) and the printed values.
pub(super) fn render(
    template: &minijinja::Template<'_, '_>,
    ctx: Printed,
) -> Result<(String, Vec<Printed>), minijinja::Error> {
    let captured = template.render_captured(ctx)?;
    let printed = captured
        .state()
        .get_extension::<PrintedValues>()
        .map(|p| p.0.clone())
        .unwrap_or_default();
    Ok((captured.output().to_owned(), printed))
}

/// The token at the start of `s`: its index and length.
fn token_at(s: &str) -> Option<(usize, usize)> {
    let rest = s.strip_prefix(TOKEN)?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || !rest[digits..].starts_with(TOKEN_END) {
        return None;
    }
    let n = rest[..digits].parse().ok()?;
    Some((n, TOKEN.len() + digits + TOKEN_END.len()))
}

/// A printed value's text: what minijinja would have printed, none as empty.
fn text(v: &Printed) -> String {
    if v.is_none() || v.is_undefined() {
        String::new()
    } else {
        v.to_string()
    }
}

/// `s` with every token replaced by its value's text. Values are not
/// scanned again.
fn expand(s: &str, printed: &[Printed]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find(TOKEN) {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some((n, len)) = token_at(rest).filter(|(n, _)| *n < printed.len()) {
            out.push_str(&text(&printed[n]));
            rest = &rest[len..];
        } else {
            out.push_str(TOKEN);
            rest = &rest[TOKEN.len()..];
        }
    }
    out.push_str(rest);
    out
}

/// The indices of tokens the template quoted (`"{{ x }}"`, `'{{ x }}'`):
/// those stay strings whatever the value's type.
pub(super) fn quoted(output: &str) -> HashSet<usize> {
    let mut out = HashSet::new();
    let bytes = output.as_bytes();
    let mut from = 0;
    while let Some(at) = output[from..].find(TOKEN).map(|i| i + from) {
        match token_at(&output[at..]) {
            Some((n, len)) => {
                let end = at + len;
                if at > 0
                    && matches!(bytes[at - 1], b'"' | b'\'')
                    && bytes.get(end) == Some(&bytes[at - 1])
                {
                    out.insert(n);
                }
                from = end;
            }
            None => from = at + TOKEN.len(),
        }
    }
    out
}

/// Puts the printed values into a parsed document (see the module docs).
pub(super) fn fill(
    doc: Value,
    printed: &[Printed],
    quoted: &HashSet<usize>,
) -> Result<Value, String> {
    Ok(match doc {
        Value::String(s) => match token_at(&s) {
            Some((n, len)) if len == s.len() && n < printed.len() => {
                if quoted.contains(&n) {
                    Value::String(text(&printed[n]))
                } else {
                    serde_json::to_value(&printed[n])
                        .unwrap_or_else(|_| Value::String(text(&printed[n])))
                }
            }
            _ if s.contains(TOKEN) => Value::String(expand(&s, printed)),
            _ => Value::String(s),
        },
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|v| fill(v, printed, quoted))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(entries) => {
            let mut out = Map::with_capacity(entries.len());
            for (k, v) in entries {
                let k = if k.contains(TOKEN) {
                    expand(&k, printed)
                } else {
                    k
                };
                let v = fill(v, printed, quoted)?;
                if out.contains_key(&k) {
                    return Err(format!(
                        "the key {k:?} appears twice in one mapping once the printed values are in"
                    ));
                }
                out.insert(k, v);
            }
            Value::Object(out)
        }
        other => other,
    })
}

/// Keeps a template's object in the environment's namespace: a namespace
/// is added when it names none; another namespace, or a cluster-scoped
/// kind, is refused unless the template is listed in
/// `templates.cluster_scoped`.
pub(super) fn place(
    doc: &mut Value,
    environment: &str,
    cluster_scoped: bool,
) -> Result<(), String> {
    if cluster_scoped {
        return Ok(());
    }
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if is_cluster_scoped(&kind) {
        return Err(format!(
            "{kind} {name:?} is cluster-scoped; only a template listed in templates.cluster_scoped may create cluster-scoped objects"
        ));
    }
    let Some(meta) = doc.get_mut("metadata").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    match meta.get("namespace") {
        None | Some(Value::Null) => {
            meta.insert(
                "namespace".to_owned(),
                Value::String(environment.to_owned()),
            );
            Ok(())
        }
        Some(Value::String(ns)) if ns == environment => Ok(()),
        Some(other) => Err(format!(
            "{kind} {name:?} names namespace {other}; objects of a template not listed in templates.cluster_scoped live in the environment's namespace {environment:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> minijinja::Environment<'static> {
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.set_formatter(formatter);
        env
    }

    /// Renders `source` with `ctx` and parses it the way the renderer does.
    fn data(source: &str, ctx: &serde_json::Value) -> Result<Vec<Value>, String> {
        let mut env = env();
        env.add_template_owned("t", source.to_owned())
            .map_err(|e| e.to_string())?;
        let t = env.get_template("t").map_err(|e| e.to_string())?;
        let (out, printed) = render(&t, minijinja::Value::from(minijinja::value::Serde(ctx)))
            .map_err(|e| e.to_string())?;
        let quoted = quoted(&out);
        let docs: Vec<Value> = serde_saphyr::from_str_multiple_with_options(
            &out,
            crate::yaml_limits::template_options(),
        )
        .map_err(|e| e.to_string())?;
        docs.into_iter()
            .filter(|d| !d.is_null())
            .map(|d| fill(d, &printed, &quoted))
            .collect()
    }

    #[test]
    fn printed_values_are_data_whatever_they_hold() {
        let hostile = "x\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: pwn}";
        let ctx = serde_json::json!({"v": hostile, "n": 3, "list": ["a", "b"]});
        let t = "kind: ConfigMap\nmetadata: {name: c, annotations: {a: p/{{ v }}}}\ndata:\n  plain: {{ v }}\n  quoted: \"{{ v }}\"\n  n: {{ n }}\n  s: \"{{ n }}\"\n  l: {{ list }}\n  {{ v }}: k\n";
        let docs = data(t, &ctx).expect("renders");
        assert_eq!(docs.len(), 1, "no second document");
        let d = &docs[0];
        assert_eq!(d["data"]["plain"], hostile);
        assert_eq!(d["data"]["quoted"], hostile);
        assert_eq!(d["data"]["n"], 3);
        assert_eq!(d["data"]["s"], "3");
        assert_eq!(d["data"]["l"], serde_json::json!(["a", "b"]));
        assert_eq!(d["data"][hostile], "k");
        assert_eq!(
            d["metadata"]["annotations"]["a"],
            format!("p/{hostile}"),
            "inside a flow mapping, next to text"
        );
        // A flow-context break-out attempt stays one scalar.
        let flow = r#"x},"namespace":"kube-system","labels":{"a":b"#;
        let docs = data(
            "kind: ConfigMap\nmetadata: {name: c, annotations: {image: {{ v }}}}\n",
            &serde_json::json!({"v": flow}),
        )
        .expect("renders");
        assert_eq!(docs[0]["metadata"]["annotations"]["image"], flow);
        assert!(docs[0]["metadata"].get("namespace").is_none());
    }

    #[test]
    fn macros_filters_and_tojson_print_one_value() {
        let ctx = serde_json::json!({"v": "a: b"});
        let t = "{% macro m(x) %}k: {{ x }}{% endmacro %}one: {{ m(v) }}\ntwo: {% filter trim %}  {{ v }} {% endfilter %}\nthree: {{ v | tojson }}\nfour: {{ v | safe }}\n";
        let docs = data(t, &ctx).expect("renders");
        assert_eq!(docs[0]["one"], "k: a: b");
        assert_eq!(docs[0]["two"], "a: b");
        assert_eq!(docs[0]["three"], "\"a: b\"");
        assert_eq!(docs[0]["four"], "a: b");
    }

    #[test]
    fn a_printed_key_cannot_replace_a_written_one() {
        let err = data(
            "metadata:\n  namespace: env\n  {{ k }}: kube-system\n",
            &serde_json::json!({"k": "namespace"}),
        )
        .expect_err("refused");
        assert!(err.contains("\"namespace\" appears twice"), "{err}");
    }

    #[test]
    fn objects_stay_in_the_environment_namespace_unless_the_template_is_cluster_scoped() {
        let mut cm = serde_json::json!({"kind": "ConfigMap", "metadata": {"name": "c"}});
        place(&mut cm, "dev-a", false).expect("placed");
        assert_eq!(cm["metadata"]["namespace"], "dev-a");
        let mut elsewhere = serde_json::json!({"kind": "ConfigMap", "metadata": {"name": "c", "namespace": "kube-system"}});
        let err = place(&mut elsewhere, "dev-a", false).expect_err("refused");
        assert!(
            err.contains("kube-system") && err.contains("templates.cluster_scoped"),
            "{err}"
        );
        assert!(place(&mut elsewhere, "dev-a", true).is_ok());
        let mut crb =
            serde_json::json!({"kind": "ClusterRoleBinding", "metadata": {"name": "pwn"}});
        let err = place(&mut crb, "dev-a", false).expect_err("refused");
        assert!(
            err.contains("ClusterRoleBinding \"pwn\" is cluster-scoped"),
            "{err}"
        );
    }
}
