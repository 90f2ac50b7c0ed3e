//! Custom templates against hostile claim values, through the binary: the
//! two injections of issue 20 (a `docker_image` that moved a `ConfigMap`
//! into `kube-system`, a static claim's `git_repository` that carried a
//! `ClusterRoleBinding` to `cluster-admin`) find no way out of the
//! environment's namespace; cluster-scoped kinds need the template listed
//! in `templates.cluster_scoped`; the schema refuses the hostile values.

use std::path::Path;

use crate::support::{Project, claim, repo, stderr, stdout};

/// The first hostile value: a flow-mapping break-out (no whitespace, so the
/// old `docker_image` pattern let it through).
const IMAGE: &str = r#"x},"namespace":"kube-system","labels":{"a":b"#;

/// The second: a second YAML document granting cluster-admin.
const REPOSITORY: &str = "https://git.example.com/platform/envs.git\n---\napiVersion: rbac.authorization.k8s.io/v1\n\
kind: ClusterRoleBinding\nmetadata:\n  name: pwn\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: cluster-admin\n\
subjects:\n- kind: User\n  name: attacker\n  apiGroup: rbac.authorization.k8s.io";

/// Templates a platform team could well write: values interpolated bare,
/// one in a flow mapping, one in block style.
fn templates(p: &Project) {
    p.write(
        "templates/images.yaml.j2",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: images, annotations: {image: {{ services[0].image }}}}\n",
    );
    p.write(
        "templates/source.yaml.j2",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: source\ndata:\n  repository: {{ environment.git_repository }}\n",
    );
}

/// The two hostile claims: a dynamic dev claim with the image, a static
/// prod claim with the repository.
fn hostile_claims(p: &Project) {
    let dev = claim("dev-img", "dev").replace(
        "  user-service: v1.2.3\n",
        &format!(
            "  user-service:\n    version: v1.2.3\n    docker_image: {}\n",
            serde_json::to_string(IMAGE).expect("json")
        ),
    );
    p.write("claims/dev-img.yaml", dev);
    let prod = format!(
        "{}git_repository: {}\n",
        claim("prod-repo", "prod"),
        serde_json::to_string(REPOSITORY).expect("json")
    );
    p.write("claims/prod-repo.yaml", prod);
}

/// The built-in schema without the patterns of the two fields: what the
/// renderer must withstand on its own.
fn permissive_schema(p: &Project) {
    let text = std::fs::read_to_string(repo().join("schemas/claim.v1.json")).expect("schema");
    let mut schema: serde_json::Value = serde_json::from_str(&text).expect("schema JSON");
    let props = &mut schema["properties"];
    props["git_repository"]
        .as_object_mut()
        .expect("git_repository")
        .remove("pattern");
    props["services"]["additionalProperties"]["else"]["properties"]["docker_image"]
        .as_object_mut()
        .expect("docker_image")
        .remove("pattern");
    p.write(
        "permissive.json",
        serde_json::to_string(&schema).expect("json"),
    );
}

/// Every object the manifests target wrote, with its file.
fn written(dir: &Path) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    for env in std::fs::read_dir(dir).expect("out").filter_map(Result::ok) {
        if !env.path().is_dir() {
            continue;
        }
        for f in std::fs::read_dir(env.path())
            .expect("env")
            .filter_map(Result::ok)
        {
            let path = f.path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read");
            let docs: Vec<serde_json::Value> =
                serde_saphyr::from_multiple(&text).expect("an object file is YAML");
            for doc in docs {
                out.push((path.display().to_string(), doc));
            }
        }
    }
    out
}

#[test]
fn hostile_values_stay_data_inside_the_environment_namespace() {
    let p = Project::new("schema: permissive.json\ntemplates: templates\n");
    permissive_schema(&p);
    templates(&p);
    hostile_claims(&p);
    let run = p.run(&["run", "--once"]);
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    assert_eq!(p.environments(), ["dev-img", "prod-repo"]);
    let objects = written(&p.path("out"));
    for (file, o) in &objects {
        let env = Path::new(file)
            .parent()
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .expect("env dir");
        assert_ne!(o["kind"], "ClusterRoleBinding", "{file}");
        if o["kind"] != "Namespace" {
            assert_eq!(o["metadata"]["namespace"], env, "{file}: {o}");
        }
    }
    let find = |env: &str, name: &str| {
        objects
            .iter()
            .find(|(f, o)| f.contains(&format!("/{env}/")) && o["metadata"]["name"] == name)
            .map_or_else(|| panic!("{env}/{name}"), |(_, o)| o.clone())
    };
    let images = find("dev-img", "images");
    assert_eq!(images["metadata"]["annotations"]["image"], IMAGE, "data");
    let source = find("prod-repo", "source");
    assert_eq!(source["data"]["repository"], REPOSITORY, "one value");
    assert_eq!(
        objects
            .iter()
            .filter(|(f, _)| f.contains("/prod-repo/"))
            .filter(|(_, o)| o["kind"] == "ConfigMap")
            .count(),
        3,
        "converge-claim, images and source, nothing more"
    );
    // The plan (what a PR review shows) sees the same.
    let plan = stdout(&p.run(&["plan", "--format", "json"]));
    assert!(
        !plan.contains("ClusterRoleBinding") && !plan.contains("kube-system"),
        "{plan}"
    );
}

#[test]
fn the_schema_refuses_the_hostile_values_by_file_pointer_and_rule() {
    let p = Project::new("");
    hostile_claims(&p);
    let out = p.run(&["validate", "--config", "converge.yaml", "claims"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = format!("{}{}", stdout(&out), stderr(&out));
    let line = |file: &str, pointer: &str| {
        text.lines()
            .find(|l| l.contains(file) && l.contains(pointer))
            .unwrap_or_else(|| panic!("no diagnostic for {file} {pointer}:\n{text}"))
            .to_owned()
    };
    let repository = line("prod-repo.yaml", "/git_repository");
    assert!(repository.contains("pattern"), "{repository}");
    let image = line("dev-img.yaml", "/services/user-service/docker_image");
    assert!(image.contains("pattern"), "{image}");
    // Nothing is applied from them.
    let run = p.run(&["run", "--once"]);
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    assert!(p.environments().is_empty(), "{:?}", p.environments());
}

#[test]
fn cluster_scoped_kinds_and_other_namespaces_need_the_template_listed() {
    let crb = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: {{ environment.name }}-view\n\
               roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}\n\
               subjects: [{kind: Group, name: {{ environment.pool }}, apiGroup: rbac.authorization.k8s.io}]\n";
    let p = Project::new("templates: templates\n");
    p.write("templates/crb.yaml.j2", crb);
    p.write("claims/a.yaml", claim("dev-a", "dev"));
    let run = p.run(&["run", "--once"]);
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    assert!(p.environments().is_empty(), "not applied");
    let plan = stdout(&p.run(&["plan"]));
    assert!(
        plan.contains("crb.yaml.j2")
            && plan.contains("ClusterRoleBinding \"dev-a-view\" is cluster-scoped")
            && plan.contains("templates.cluster_scoped"),
        "{plan}"
    );

    p.remove("templates/crb.yaml.j2");
    p.write(
        "templates/elsewhere.yaml.j2",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: kube-system\n",
    );
    let plan = stdout(&p.run(&["plan"]));
    assert!(
        plan.contains("elsewhere.yaml.j2") && plan.contains("names namespace \"kube-system\""),
        "{plan}"
    );

    // Listed, the platform team vouches for it.
    p.remove("templates/elsewhere.yaml.j2");
    p.write("templates/crb.yaml.j2", crb);
    p.write(
        "converge.yaml",
        std::fs::read_to_string(p.path("converge.yaml"))
            .expect("config")
            .replace(
                "templates: templates\n",
                "templates:\n  path: templates\n  cluster_scoped: [crb.yaml.j2]\n",
            ),
    );
    let run = p.run(&["run", "--once"]);
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    let text = std::fs::read_to_string(p.path("out/dev-a/clusterrolebinding-dev-a-view.yaml"))
        .expect("applied");
    assert!(!text.contains("namespace:"), "{text}");

    // A listed name that is not a template is a start-up error.
    p.write(
        "converge.yaml",
        std::fs::read_to_string(p.path("converge.yaml"))
            .expect("config")
            .replace("[crb.yaml.j2]", "[crbs.yaml.j2]"),
    );
    let run = p.run(&["run", "--once"]);
    assert_eq!(run.status.code(), Some(2));
    assert!(
        stderr(&run).contains("templates.cluster_scoped") && stderr(&run).contains("crbs.yaml.j2"),
        "{}",
        stderr(&run)
    );
}
