//! A service's `kustomization.yaml`, built by the real `kustomize` (v5,
//! `kustomize:` in the config, as Argo CD's repo server runs it) once per
//! (service, version): the artifact's files are written to a scratch
//! directory, every kustomization in them is checked first (each path it
//! names is a file or directory of the artifact, inside its root: no `../`
//! past it, no remote base, no Helm chart; unless `allow_outside`), then
//! `kustomize build` runs in a process group of its own with a cleared
//! environment, its output capped, and is killed at `timeout`. The built
//! YAML is what [`crate::render::service::ServiceManifests::parse`] reads.

use std::io::Read as _;
use std::path::{Component, Path};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::config::KustomizeConfig;
use crate::render::service::File;

/// The file names kustomize reads as a kustomization.
const NAMES: &[&str] = &["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Fields of a kustomization that are lists of paths.
const PATH_LISTS: &[&str] = &[
    "resources",
    "bases",
    "components",
    "crds",
    "configurations",
    "patchesStrategicMerge",
    "generators",
    "transformers",
    "validators",
];

/// Fields that make kustomize reach a network (Helm charts).
const NETWORK: &[&str] = &["helmCharts", "helmChartInflationGenerator", "helmGlobals"];

/// Why an artifact's kustomization was refused: the file and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub file: String,
    pub message: String,
}

/// The directory (`""`: the root) of the kustomization to build: the
/// shallowest one. `None`: the artifact is plain YAML.
///
/// # Errors
///
/// Two kustomizations at the same, shallowest depth (which one is meant?).
pub fn root(files: &[File]) -> Result<Option<String>, Refused> {
    let mut found: Vec<(usize, &str, &str)> = files
        .iter()
        .filter_map(|f| {
            let (dir, name) = f.path.rsplit_once('/').unwrap_or(("", f.path.as_str()));
            NAMES
                .contains(&name)
                .then(|| (depth(dir), dir, f.path.as_str()))
        })
        .collect();
    found.sort_unstable();
    match found.as_slice() {
        [] => Ok(None),
        [(d, _, a), (e, _, b), ..] if d == e => Err(Refused {
            file: (*a).to_owned(),
            message: format!(
                "two kustomizations at the top of the artifact ({a} and {b}): keep one"
            ),
        }),
        [(_, dir, _), ..] => Ok(Some((*dir).to_owned())),
    }
}

fn depth(dir: &str) -> usize {
    if dir.is_empty() {
        0
    } else {
        dir.split('/').count()
    }
}

/// Every kustomization of the artifact names only its own files and
/// directories: checked before kustomize runs.
///
/// # Errors
///
/// The first kustomization that reaches outside, names a remote base or
/// a Helm chart, or does not parse.
pub fn check(files: &[File]) -> Result<(), Refused> {
    for f in files {
        let (dir, name) = f.path.rsplit_once('/').unwrap_or(("", f.path.as_str()));
        if !NAMES.contains(&name) {
            continue;
        }
        let refused = |message: String| Refused {
            file: f.path.clone(),
            message,
        };
        let doc: Value =
            serde_saphyr::from_str_with_options(&f.text, crate::yaml_limits::template_options())
                .map_err(|e| refused(format!("not YAML: {e}")))?;
        for key in NETWORK {
            if doc.get(key).is_some() {
                return Err(refused(format!(
                    "{key}: Helm charts are fetched from the network; not allowed (kustomize.allow_outside)"
                )));
            }
        }
        for (field, path) in named_paths(&doc) {
            local(files, dir, &path).map_err(|why| refused(format!("{field}: {path:?} {why}")))?;
        }
    }
    Ok(())
}

/// Every path a kustomization names, with the field naming it.
fn named_paths(doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    };
    for field in PATH_LISTS {
        for p in strings(doc.get(*field)) {
            // An inline generator or transformer config, not a path.
            if !p.contains('\n') {
                out.push(((*field).to_owned(), p));
            }
        }
    }
    for field in ["patches", "patchesJson6902", "replacements"] {
        for item in doc
            .get(field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(p) = item.get("path").and_then(Value::as_str) {
                out.push((format!("{field}[].path"), p.to_owned()));
            }
        }
    }
    for field in ["configMapGenerator", "secretGenerator"] {
        for item in doc
            .get(field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for f in strings(item.get("files")) {
                // `key=path` or `path`.
                let p = f.split_once('=').map_or(f.as_str(), |(_, p)| p);
                out.push((format!("{field}[].files"), p.to_owned()));
            }
            for p in strings(item.get("envs")) {
                out.push((format!("{field}[].envs"), p));
            }
            if let Some(p) = item.get("env").and_then(Value::as_str) {
                out.push((format!("{field}[].env"), p.to_owned()));
            }
        }
    }
    if let Some(p) = doc.pointer("/openapi/path").and_then(Value::as_str) {
        out.push(("openapi.path".to_owned(), p.to_owned()));
    }
    out
}

/// Whether `path`, named by a kustomization in `dir`, is a file or a
/// directory of the artifact, inside it.
fn local(files: &[File], dir: &str, path: &str) -> Result<(), &'static str> {
    if path.contains("://") || path.starts_with("git@") || path.contains("?ref=") {
        return Err("is a remote base: not allowed (kustomize.allow_outside)");
    }
    let joined = Path::new(dir).join(path);
    let mut parts: Vec<&str> = Vec::new();
    for c in joined.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str().unwrap_or_default()),
            Component::CurDir => {}
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return Err(
                        "reaches outside the artifact (../ past its root): not allowed (kustomize.allow_outside)",
                    );
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err("is an absolute path: not allowed (kustomize.allow_outside)");
            }
        }
    }
    let at = parts.join("/");
    let exists = files.iter().any(|f| {
        f.path == at
            || (f.path.starts_with(&at) && f.path.as_bytes().get(at.len()) == Some(&b'/'))
            || at.is_empty()
    });
    if exists {
        Ok(())
    } else {
        Err(
            "is neither a file nor a directory of the artifact (a remote base?): not allowed (kustomize.allow_outside)",
        )
    }
}

/// Runs kustomize on the artifact's files: the built YAML. `Err`: it
/// could not build (the artifact is refused), in words.
///
/// # Errors
///
/// kustomize could not start, failed, timed out (killed) or printed more
/// than `max_bytes`.
pub fn build(
    config: &KustomizeConfig,
    scratch: &Path,
    files: &[File],
    root: &str,
    max_bytes: u64,
) -> Result<String, String> {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let scratch = std::path::absolute(scratch).unwrap_or_else(|_| scratch.to_owned());
    let work = scratch.join(format!(
        "kustomize-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    let result = write_tree(&work, files)
        .map_err(|e| format!("cannot write the artifact to {}: {e}", work.display()))
        .and_then(|()| run(config, &work, &work.join(root), max_bytes));
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn write_tree(work: &Path, files: &[File]) -> std::io::Result<()> {
    for f in files {
        // untar and the git reader refused `..` and absolute paths.
        let p = work.join(&f.path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(p, &f.text)?;
    }
    std::fs::create_dir_all(work)
}

fn run(
    config: &KustomizeConfig,
    home: &Path,
    dir: &Path,
    max_bytes: u64,
) -> Result<String, String> {
    use std::os::unix::process::CommandExt as _;
    let shown = config.path.display();
    // A path (not a bare name looked up on PATH) is made absolute before
    // the child changes its directory.
    let program = if config.path.components().count() > 1 {
        std::path::absolute(&config.path).unwrap_or_else(|_| config.path.clone())
    } else {
        config.path.clone()
    };
    let mut cmd = Command::new(program);
    cmd.arg("build")
        .arg(dir)
        .env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .current_dir(home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().map_err(|e| {
        format!(
            "cannot run kustomize {shown:?}: {e} (config kustomize.path: a service whose manifests hold a kustomization.yaml needs kustomize v5)"
        )
    })?;
    let pid = child.id();
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let capped = move |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = (&mut r).take(max_bytes + 1).read_to_end(&mut buf);
            buf
        })
    };
    let out = capped(Box::new(stdout));
    let err = capped(Box::new(stderr));
    let deadline = Instant::now() + config.timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                kill(pid);
                let _ = child.wait();
                // The readers end when the group's pipes close; a process
                // that left the group is not waited for.
                return Err(format!(
                    "kustomize build did not finish within {} (killed)",
                    crate::config::format_duration(config.timeout)
                ));
            }
            Err(e) => {
                kill(pid);
                let _ = child.wait();
                return Err(format!("kustomize: {e}"));
            }
        }
    };
    // Whatever it started is gone with it.
    kill(pid);
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    if !status.success() {
        let text = String::from_utf8_lossy(&err);
        let text: String = text.trim().chars().take(2000).collect();
        return Err(format!("kustomize build failed ({status}): {text}"));
    }
    if out.len() as u64 > max_bytes {
        return Err(format!(
            "kustomize build printed more than {max_bytes} bytes"
        ));
    }
    String::from_utf8(out)
        .map_err(|_| "kustomize build printed bytes that are not UTF-8".to_owned())
}

fn kill(pid: u32) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[(&str, &str)]) -> Vec<File> {
        list.iter()
            .map(|(p, t)| File {
                path: (*p).to_owned(),
                text: (*t).to_owned(),
            })
            .collect()
    }

    #[test]
    fn the_shallowest_kustomization_is_built_and_two_of_them_are_ambiguous() {
        let f = files(&[
            ("deploy/base/kustomization.yaml", "resources: [d.yaml]\n"),
            ("deploy/kustomization.yaml", "resources: [base]\n"),
        ]);
        assert_eq!(root(&f), Ok(Some("deploy".to_owned())));
        assert_eq!(root(&files(&[("a.yaml", "x: 1\n")])), Ok(None));
        let two = files(&[("a/kustomization.yaml", ""), ("b/kustomization.yml", "")]);
        assert!(root(&two).is_err());
    }

    #[test]
    fn a_kustomization_names_only_the_artifact_s_own_files() {
        let tree = |k: &str| {
            files(&[
                ("deploy/base/kustomization.yaml", "resources: [d.yaml]\n"),
                ("deploy/base/d.yaml", "kind: X\n"),
                ("deploy/patch.yaml", "kind: X\n"),
                ("deploy/kustomization.yaml", k),
            ])
        };
        assert_eq!(
            check(&tree(
                "resources: [base, ./base/d.yaml]\npatches:\n- path: patch.yaml\nconfigMapGenerator:\n- name: c\n  files: [k=patch.yaml]\n"
            )),
            Ok(())
        );
        for (k, why) in [
            ("resources: [../../etc]\n", "reaches outside the artifact"),
            ("resources: [../../../x]\n", "reaches outside the artifact"),
            (
                "resources: [github.com/org/repo//deploy?ref=v1]\n",
                "remote base",
            ),
            ("resources: [https://example.com/x.yaml]\n", "remote base"),
            ("resources: [missing]\n", "neither a file nor a directory"),
            ("resources: [/etc/passwd]\n", "absolute path"),
            ("patches:\n- path: ../../x.yaml\n", "patches[].path"),
            (
                "configMapGenerator:\n- name: c\n  files: [k=../../../etc/passwd]\n",
                "reaches outside",
            ),
            ("helmCharts:\n- name: x\n", "Helm charts"),
        ] {
            let e = check(&tree(k)).expect_err(k);
            assert_eq!(e.file, "deploy/kustomization.yaml");
            assert!(e.message.contains(why), "{k}: {}", e.message);
        }
    }
}
