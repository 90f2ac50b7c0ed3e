//! Bad input from the issue's list: each bad file gets one clear diagnostic
//! line (`FILE: POINTER: MESSAGE (RULE)`), `validate` exits 1, nothing panics
//! or hangs, and the good claim beside it is still validated, rendered and
//! applied. The big and deep inputs are generated here, never committed.

use crate::support::{Project, claim, converge, stderr, stdout};

/// Nesting depth of the deep documents.
const DEEP: usize = 10_000;

/// One bad input: the files it consists of (one, or two for a duplicate), and
/// the diagnostic each of them must get.
struct Case {
    /// File name under `claims/` and its bytes.
    files: Vec<(&'static str, Vec<u8>)>,
    /// The JSON pointer as the text diagnostic shows it (`/` is the whole document).
    pointer: &'static str,
    rule: &'static str,
    /// Something the message must say, so the user knows what to fix.
    says: &'static str,
}

fn case(
    file: &'static str,
    bytes: impl Into<Vec<u8>>,
    pointer: &'static str,
    rule: &'static str,
    says: &'static str,
) -> Case {
    Case {
        files: vec![(file, bytes.into())],
        pointer,
        rule,
        says,
    }
}

/// `claim(name, "dev")` with `from` replaced by `to`.
fn claim_with(name: &str, from: &str, to: &str) -> String {
    let good = claim(name, "dev");
    assert!(good.contains(from), "the claim has {from:?}");
    good.replacen(from, to, 1)
}

/// A valid claim as JSON, with `services` as given.
fn json_claim(name: &str, services: &str) -> String {
    format!(
        r#"{{"user": "john.doe@company.com", "environment_pool": "team1", "creation_date": "2024-01-15T10:30:00Z", "environment_name": "{name}", "environment_type": "dev", "expiration_date": null, "deployment_method": "dynamic", "services": {services}}}"#
    )
}

const SERVICES: &str = "services:\n  user-service: v1.2.3\n";

/// Every bad input of the issue, with the pointer and rule it is reported with.
#[allow(clippy::too_many_lines, reason = "a table of cases")]
fn cases() -> Vec<Case> {
    let alias_bomb = "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n\
                      c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n\
                      e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n\
                      g: [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n";
    let nested = format!("{}{}", "[".repeat(DEEP), "]".repeat(DEEP));
    let huge = format!("x: \"{}\"\n", "a".repeat(50 * 1000 * 1000));
    let mut latin1 = claim("dev-latin1", "dev").into_bytes();
    latin1.extend_from_slice(b"# caf\xe9 (Latin-1)\n");
    let two_documents = format!(
        "{}---\n{}",
        claim("dev-two-docs", "dev"),
        claim("dev-two-docs-b", "dev")
    );
    vec![
        case("alias-bomb.yaml", alias_bomb, "/", "yaml-budget", "budget"),
        case(
            "deep-field.json",
            json_claim("dev-deep-field", &nested),
            "/",
            "json",
            "recursion limit",
        ),
        case(
            "deep-document.json",
            nested.clone(),
            "/",
            "json",
            "recursion limit",
        ),
        case(
            "duplicate-key.json",
            json_claim("dev-duplicate-key", r#"{"user-service": "v1.2.3"}"#)
                .strip_suffix('}')
                .map(|open| format!(r#"{open}, "environment_type": "prod"}}"#))
                .expect("an object"),
            "/environment_type",
            "duplicate-key",
            "more than once",
        ),
        case(
            "deep-flow.yaml",
            claim_with("dev-deep-flow", SERVICES, &format!("services: {nested}\n")),
            "/",
            "yaml",
            "recursion limit",
        ),
        case(
            "deep-block.yaml",
            claim_with(
                "dev-deep-block",
                SERVICES,
                &format!("services:\n  {}x\n", "- ".repeat(DEEP)),
            ),
            "/",
            "yaml-budget",
            "budget",
        ),
        case("huge.yaml", huge, "/", "max-size", "more than the limit"),
        case("latin1.yaml", latin1, "/", "utf-8", "not UTF-8"),
        case("empty.yaml", "", "/", "empty", "empty"),
        case(
            "two-documents.yaml",
            two_documents,
            "/",
            "one-document",
            "several YAML documents",
        ),
        case(
            "unknown-field.yaml",
            format!("{}colour: blue\n", claim("dev-unknown-field", "dev")),
            "/colour",
            "additionalProperties",
            "colour",
        ),
        case(
            "wrong-type.yaml",
            claim_with("dev-wrong-type", SERVICES, "services: 42\n"),
            "/services",
            "type",
            "42",
        ),
        case("list.yaml", "- a\n- b\n", "/", "type", "a list"),
        case(
            "upper-case.yaml",
            claim("Dev-Upper", "dev"),
            "/environment_name",
            "pattern",
            "Dev-Upper",
        ),
        case(
            "long-name.yaml",
            claim(&"a".repeat(64), "dev"),
            "/environment_name",
            "maxLength",
            "63",
        ),
        case(
            "unknown-type.yaml",
            claim_with(
                "dev-unknown-type",
                "environment_type: dev",
                "environment_type: qa",
            ),
            "/environment_type",
            "enum",
            "qa",
        ),
        case(
            "bad-operator.yaml",
            claim_with("dev-bad-operator", "v1.2.3", "\">=a\""),
            "/services/user-service",
            "version",
            ">=a",
        ),
        case(
            "five-parts.yaml",
            claim_with("dev-five-parts", "v1.2.3", "1.2.3.4.5"),
            "/services/user-service",
            "version",
            "too many version parts",
        ),
        case(
            "expiry-first.yaml",
            claim_with(
                "dev-expiry-first",
                "expiration_date: null",
                "expiration_date: \"2024-01-14T00:00:00Z\"",
            ),
            "/expiration_date",
            "expiration-after-creation",
            "not after creation_date",
        ),
        case(
            "bad-creation-date.yaml",
            claim_with(
                "dev-bad-creation",
                "\"2024-01-15T10:30:00Z\"",
                "\"yesterday\"",
            ),
            "/creation_date",
            "format",
            "yesterday",
        ),
        case(
            "bad-expiration-date.yaml",
            claim_with(
                "dev-bad-expiration",
                "expiration_date: null",
                "expiration_date: \"2024-02-30T10:00:00Z\"",
            ),
            "/expiration_date",
            "format",
            "2024-02-30",
        ),
        Case {
            files: vec![
                ("dup-a.yaml", claim("dev-dup", "dev").into_bytes()),
                (
                    "dup-b.json",
                    json_claim("dev-dup", r#"{"a": "v1.0.0"}"#).into_bytes(),
                ),
            ],
            pointer: "/environment_name",
            rule: "duplicate-environment",
            says: "also claimed by",
        },
        case(
            "other-pool.yaml",
            claim_with(
                "dev-other-pool",
                "environment_pool: team1",
                "environment_pool: team2",
            ),
            "/",
            "policy",
            "pool \"team2\"",
        ),
        case(
            "unknown-user.yaml",
            claim_with(
                "dev-unknown-user",
                "john.doe@company.com",
                "nobody@company.com",
            ),
            "/",
            "policy",
            "nobody@company.com",
        ),
        case(
            "sue-in-ai.yaml",
            claim("sue-in-ai", "sue")
                .replacen("john.doe@company.com", "jane.roe@company.com", 1)
                .replacen("environment_pool: team1", "environment_pool: ai", 1),
            "/",
            "policy",
            "sue-not-in-ai-pool",
        ),
    ]
}

/// A project with `claims/good.yaml` (environment `dev-good`) and `files`.
fn project_with(files: &[(&str, Vec<u8>)]) -> Project {
    let project = Project::new("");
    project.write("claims/good.yaml", claim("dev-good", "dev"));
    for (name, bytes) in files {
        project.write(&format!("claims/{name}"), bytes);
    }
    project
}

/// Checks that `run --once` applied `dev-good` and nothing else.
fn assert_only_good_applied(project: &Project, what: &str) {
    let run = project.run(&["run", "--once"]);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{what}: run --once: {}",
        stderr(&run)
    );
    assert!(
        !stderr(&run).contains("panicked"),
        "{what}: {}",
        stderr(&run)
    );
    assert!(
        project
            .path("out/dev-good/namespace-dev-good.yaml")
            .is_file(),
        "{what}: the good claim is applied"
    );
    assert_eq!(
        project.environments(),
        ["dev-good"],
        "{what}: only the good claim is applied"
    );
}

#[test]
fn every_bad_input_gets_one_diagnostic_line_and_the_good_claim_still_applies() {
    for case in cases() {
        let names: Vec<&str> = case.files.iter().map(|(name, _)| *name).collect();
        let what = names.join(" + ");
        let project = project_with(&case.files);

        let validate = project.run(&["validate", "claims"]);
        let out = stdout(&validate);
        assert_eq!(
            validate.status.code(),
            Some(1),
            "{what}: validate exit code\n{out}"
        );
        assert!(
            !stderr(&validate).contains("panicked"),
            "{what}: {}",
            stderr(&validate)
        );
        assert!(
            !out.contains("good.yaml"),
            "{what}: the good claim is valid\n{out}"
        );
        let lines: Vec<&str> = out.lines().collect();
        let (summary, diagnostics) = lines.split_last().expect("validate prints a summary");
        assert_eq!(
            *summary,
            format!("1 of {} files valid", names.len() + 1),
            "{what}: summary"
        );
        assert_eq!(
            diagnostics.len(),
            names.len(),
            "{what}: one line per bad file\n{out}"
        );
        for name in &names {
            let prefix = format!("claims/{name}: {}: ", case.pointer);
            let line = diagnostics
                .iter()
                .find(|l| l.starts_with(&format!("claims/{name}: ")))
                .unwrap_or_else(|| panic!("{what}: no diagnostic for {name}\n{out}"));
            assert!(
                line.starts_with(&prefix),
                "{what}: expected {prefix:?}...\n{line}"
            );
            assert!(
                line.ends_with(&format!(" ({})", case.rule)),
                "{what}: rule\n{line}"
            );
            assert!(
                line.contains(case.says),
                "{what}: should say {:?}\n{line}",
                case.says
            );
        }

        assert_only_good_applied(&project, &what);
    }
}

#[test]
fn validate_json_names_file_pointer_and_rule_of_every_bad_input_in_one_run() {
    let cases = cases();
    let files: Vec<(&str, Vec<u8>)> = cases.iter().flat_map(|c| c.files.iter().cloned()).collect();
    let project = project_with(&files);

    let validate = project.run(&["validate", "--format", "json", "claims"]);
    assert_eq!(validate.status.code(), Some(1), "{}", stderr(&validate));
    let doc: serde_json::Value =
        serde_json::from_slice(&validate.stdout).expect("validate --format json prints JSON");
    assert_eq!(doc["files"], files.len() + 1);
    assert_eq!(doc["invalid"], files.len());
    let diagnostics = doc["diagnostics"]
        .as_array()
        .expect("diagnostics is a list");
    let field =
        |d: &serde_json::Value, key: &str| d[key].as_str().expect("a string field").to_owned();
    for case in &cases {
        let pointer = if case.pointer == "/" {
            ""
        } else {
            case.pointer
        };
        for (name, _) in &case.files {
            let file = format!("claims/{name}");
            let mine: Vec<(String, String)> = diagnostics
                .iter()
                .filter(|d| field(d, "file") == file)
                .map(|d| (field(d, "pointer"), field(d, "rule")))
                .collect();
            assert_eq!(mine, [(pointer.to_owned(), case.rule.to_owned())], "{file}");
        }
    }
    assert_eq!(diagnostics.len(), files.len(), "nothing else is reported");

    assert_only_good_applied(&project, "every bad input at once");
}

/// Applies `dev-keep` from `claims/keep.yaml`, replaces that file with
/// `corrupt`, and runs another pass (from `cwd`, or the project directory).
/// Returns the project and whether `out/dev-keep/` is exactly as it was.
fn corrupt_an_applied_claim(corrupt: &[u8], cwd: Option<&std::path::Path>) -> (Project, bool) {
    let project = project_with(&[("keep.yaml", claim("dev-keep", "dev").into_bytes())]);
    let first = project.run(&["run", "--once"]);
    assert_eq!(
        first.status.code(),
        Some(0),
        "first pass: {}",
        stderr(&first)
    );
    assert_eq!(project.environments(), ["dev-good", "dev-keep"]);
    let before = files_under(&project.path("out/dev-keep"));
    assert!(
        before
            .iter()
            .any(|(name, _)| name == "namespace-dev-keep.yaml")
    );

    project.write("claims/keep.yaml", corrupt);
    // Allow mass deletion, so that a planned deletion is applied, not held.
    let config = project.path("converge.yaml");
    let config = config.to_str().expect("a UTF-8 temporary path");
    let args = ["run", "--once", "--allow-mass-delete", "--config", config];
    let second = match cwd {
        Some(dir) => converge(dir, &args),
        None => project.run(&args),
    };
    assert_eq!(
        second.status.code(),
        Some(0),
        "second pass: {}",
        stderr(&second)
    );
    assert!(!stderr(&second).contains("panicked"), "{}", stderr(&second));
    let kept = files_under(&project.path("out/dev-keep")) == before;
    (project, kept)
}

/// The files of a directory (hidden ones included), with their contents, sorted.
fn files_under(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(String, Vec<u8>)> = entries
        .map(|e| e.expect("a directory entry").path())
        .map(|p| {
            let name = p
                .file_name()
                .expect("a file name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&p).expect("read an applied file"))
        })
        .collect();
    files.sort();
    files
}

#[test]
fn an_applied_environment_stays_when_its_claim_becomes_broken_yaml() {
    let (project, kept) = corrupt_an_applied_claim(b"environment_name: dev-keep\nuser: [\n", None);
    assert!(kept, "out/dev-keep/ is left exactly as it was");
    let plan = project.run(&["plan"]);
    assert_eq!(
        plan.status.code(),
        Some(0),
        "no changes planned:\n{}",
        stdout(&plan)
    );
}

#[test]
fn an_applied_environment_stays_when_its_claim_becomes_non_utf8() {
    let (project, kept) = corrupt_an_applied_claim(b"environment_name: dev-k\xffeep\n", None);
    assert!(kept, "out/dev-keep/ is left exactly as it was");
    let plan = project.run(&["plan"]);
    assert_eq!(
        plan.status.code(),
        Some(0),
        "no changes planned:\n{}",
        stdout(&plan)
    );
}

#[test]

fn an_applied_environment_stays_when_its_claim_becomes_invalid_and_converge_runs_from_another_directory()
 {
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let (_project, kept) = corrupt_an_applied_claim(b"\xff\xfe", Some(elsewhere.path()));
    assert!(kept, "out/dev-keep/ is left exactly as it was");
}
