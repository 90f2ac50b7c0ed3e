//! Config parsing, defaults, presets and checks, case by case.

use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::claim::EnvironmentType;

fn kube(target_extra: &str) -> Result<Config, String> {
    Config::parse(&format!(
        "sources: []\ntarget:\n  kind: kubernetes\n{target_extra}"
    ))
}

#[test]
fn shards_take_defaults_and_exclude_leader_election() {
    let c = kube("  shards: {}\n").expect("shards parse");
    let TargetConfig::Kubernetes(k) = c.target else {
        panic!("kubernetes")
    };
    let sh = k.shards.expect("shards");
    assert_eq!(sh.lease_prefix, "converge-shard-");
    assert_eq!(sh.lease_duration, Duration::from_secs(15));
    let both = kube("  shards: {}\n  leader_election: {}\n").expect_err("refused");
    assert!(both.contains("exclude each other"), "{both}");
    let timing = kube("  shards: {renew_deadline: 20s}\n").expect_err("refused");
    assert!(
        timing.contains("renew_deadline < lease_duration"),
        "{timing}"
    );
    let name = kube("  shards: {identity: Pod_1}\n").expect_err("refused");
    assert!(name.contains("Lease"), "{name}");
}

#[test]
fn product_example_config_parses() {
    let text = r"
sources:
  - name: local
    kind: dir
    path: claims
  - name: envs
    kind: git
    url: https://git.example.com/platform/environments.git
    branch: main
    paths: ['environments/**/*.yaml']
    interval: 30s
  - name: dynamic
    kind: s3
    endpoint: http://127.0.0.1:9000
    region: us-east-1
    bucket: environments
    prefix: ''
    path_style: true
    static: false
    credentials:
      access_key_id_file: /run/secrets/s3-key-id
      secret_access_key_file: /run/secrets/s3-secret
    interval: 10s
target:
  kind: manifests
  path: out
state_dir: .converge
policies: policies
api:
  listen: 127.0.0.1:8090
safety:
  max_delete_fraction: 0.2
";
    let config = Config::parse(text).expect("parses");
    assert_eq!(config.sources.len(), 3);
    assert!(
        matches!(&config.sources[1], SourceConfig::Git { interval, .. } if *interval == Duration::from_secs(30))
    );
}

#[test]
fn a_bad_git_auth_block_fails_at_load_naming_the_source() {
    let git = |auth: &str| {
        Config::parse(&format!(
            "sources:\n  - name: envs\n    kind: git\n    url: https://git.example/envs.git\n    auth:\n{auth}"
        ))
    };
    let err = git("      token_file: t\n      ssh_key_file: k\n").expect_err("two methods");
    assert_eq!(
        err,
        "sources: envs: auth: give one of token_file, password_file or ssh_key_file"
    );
    let err = git("      password_file: p\n").expect_err("no user name");
    assert_eq!(err, "sources: envs: auth.password_file needs auth.username");
    let config = git("      username: ci\n      password_file: p\n").expect("valid");
    let SourceConfig::Git {
        auth: Some(auth), ..
    } = &config.sources[0]
    else {
        panic!("a git source with auth");
    };
    assert_eq!(
        auth.method(),
        Ok(GitAuth::Basic {
            username: "ci".to_owned(),
            password_file: PathBuf::from("p"),
        })
    );
}

#[test]
fn the_versions_block_and_the_catalog_are_checked_at_load() {
    let config = Config::parse(
        "images:\n  registry: r.example/rel\n  dev_registry: r.example/snap\nversions:\n  from: registry\n  interval: 2m\n  credentials: {username: ci, password_file: p}\n  ca_file: ca.pem\nservices:\n  checkout: {depends_on: [billing]}\n  billing: {version: ^1.0.0}\n",
    )
    .expect("parses");
    assert_eq!(config.versions.from, VersionsFrom::Registry);
    assert_eq!(config.versions.interval, Duration::from_mins(2));
    assert_eq!(config.images.registry_for(true), "r.example/snap");
    let bad = [
        (
            "versions:\n  credentials: {password_file: p}\n",
            "versions.credentials: give username with password_file, or token_file",
        ),
        (
            "versions:\n  from: git\n",
            "versions.from: git needs versions.git.url",
        ),
        (
            "services:\n  a: {depends_on: [b]}\n  b: {depends_on: [a]}\n",
            "services: the dependencies form a cycle: a -> b -> a",
        ),
        (
            "services:\n  a: {depends_on: [nope]}\n",
            "services.a.depends_on names \"nope\", which is not in the catalog",
        ),
    ];
    for (text, want) in bad {
        assert_eq!(Config::parse(text).expect_err(text), want);
    }
    let err = Config::parse("services:\n  a: {version: \"^x\"}\n").expect_err("bad constraint");
    assert!(err.starts_with("services.a.version: "), "{err}");
}

#[test]
fn unknown_keys_are_refused() {
    let err = Config::parse("sources: []\ntraget: {}\n").expect_err("refused");
    assert!(err.contains("traget"), "{err}");
}

#[test]
fn preset_overrides_merge_field_by_field() {
    let config =
        Config::parse("presets:\n  dev:\n    replicas: 2\n    autoscaling: {max_replicas: 9}\n")
            .expect("parses");
    let presets = Presets::new(&config.presets).expect("valid");
    let dev = presets.get(EnvironmentType::Dev);
    assert_eq!(
        (
            dev.replicas,
            dev.autoscaling.max_replicas,
            dev.autoscaling.min_replicas
        ),
        (2, 9, 1)
    );
    let err = Config::parse("presets:\n  dev:\n    replicaz: 2\n").expect_err("refused");
    assert!(err.contains("replicaz"), "{err}");
}

#[test]
fn an_invalid_preset_is_refused_at_load_naming_the_key_and_rule() {
    for (yaml, want) in [
        (
            "presets: {dev: {placement: sometimes}}",
            "presets.dev: unknown variant `sometimes`",
        ),
        (
            "presets: {prod: {node_pools: [general, \"Gen Pool\"]}}",
            "presets.prod.node_pools[1]: \"Gen Pool\" is not a Kubernetes label value",
        ),
        (
            "presets: {stage: {node_pools: [a, a]}}",
            "presets.stage.node_pools[1]: \"a\" is listed twice",
        ),
        (
            "presets: {dev: {autoscaling: {min_replicas: 4}}}",
            "presets.dev.autoscaling: 1 <= min_replicas <= max_replicas",
        ),
        (
            "presets: {sue: {autoscaling: {target_cpu_utilization: 0}}}",
            "presets.sue.autoscaling.target_cpu_utilization",
        ),
    ] {
        let err = Config::parse(yaml).expect_err(yaml);
        assert!(err.contains(want), "{yaml}: {err}");
    }
    for ok in [
        "presets: {dev: {node_pools: []}}",
        "presets: {dev: {placement: preferred}, prod: {placement: none}}",
    ] {
        Config::parse(ok).expect(ok);
    }
}

#[test]
fn durations_parse_and_print() {
    for (s, secs) in [("30s", 30), ("5m", 300), ("24h", 86_400), ("2d", 172_800)] {
        assert_eq!(parse_duration(s), Ok(Duration::from_secs(secs)));
        assert_eq!(
            parse_duration(&format_duration(Duration::from_secs(secs))),
            Ok(Duration::from_secs(secs))
        );
    }
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    for bad in ["", "5", "m", "5w", "-1s"] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
}

#[test]
fn service_manifests_fill_in_the_service_and_need_one_place() {
    let c = Config::parse(
        "services:\n  defaults:\n    manifests:\n      oci: r.example/m/{service}-manifests\n  billing:\n    depends_on: [auth]\n    manifests:\n      git: {url: \"https://g.example/{service}.git\", path: deploy}\n  auth: {}\n",
    )
    .expect("parses");
    let auth = c.manifests_of("auth").expect("defaults");
    assert_eq!(auth.oci.as_deref(), Some("r.example/m/auth-manifests"));
    let billing = c.manifests_of("billing").expect("its own");
    let git = billing.git.expect("git");
    assert_eq!(git.url, "https://g.example/billing.git");
    assert_eq!(git.reference, "refs/tags/{version}");
    assert!(c.catalog().is_ok(), "defaults is not a service");
    let err = Config::parse(
        "services:\n  billing:\n    manifests:\n      oci: r/m\n      git: {url: u}\n",
    )
    .expect_err("both");
    assert!(err.contains("services.billing.manifests"), "{err}");
}

#[test]
fn a_forge_block_has_defaults_and_refuses_unknown_keys() {
    let git = |forge: &str| {
        Config::parse(&format!(
            "sources:\n  - name: envs\n    kind: git\n    url: https://git.example/o/envs.git\n    forge:\n{forge}"
        ))
    };
    let config = git("      kind: forgejo\n      token_file: t\n").expect("valid");
    let SourceConfig::Git {
        forge: Some(forge), ..
    } = &config.sources[0]
    else {
        panic!("a git source with a forge");
    };
    assert_eq!(forge.kind, ForgeKind::Gitea, "Forgejo speaks Gitea's API");
    assert!(forge.pull_requests && forge.commit_statuses);
    assert_eq!(
        (forge.api_url.as_deref(), forge.context.as_deref()),
        (None, None)
    );
    assert_eq!(forge.timeout, Duration::from_secs(10));
    assert!(git("      kind: gitea\n      token_file: t\n      tokn: x\n").is_err());
    assert!(git("      kind: bitbucket\n      token_file: t\n").is_err());
    assert!(
        git("      kind: gitea\n").is_err(),
        "token_file is required"
    );
}
