//! `converge claim put`: every file judged as the daemon would judge it
//! as an object of the bucket source, then all uploaded, or none.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::bucket::{Bucket, Candidate, content_type, extension};
use super::wait::{self, Awaited};
use super::{Common, Error, note};
use crate::source::s3::Precondition;

pub(super) fn run(
    files: &[PathBuf],
    source: &str,
    replace: bool,
    if_match: Option<&str>,
    common: &Common,
) -> Result<u8, Error> {
    if if_match.is_some() && files.len() != 1 {
        return Err(Error::Refused(
            "--if-match names one object's version: give one file".to_owned(),
        ));
    }
    if files.iter().filter(|f| *f == Path::new("-")).count() > 1 {
        return Err(Error::Refused("stdin (-) can be read once".to_owned()));
    }
    let mut bucket = Bucket::open(&common.config, source)?;
    let candidates = files
        .iter()
        .map(|f| read(f).map(|(shown, bytes)| candidate(&bucket, shown, bytes)))
        .collect::<Result<Vec<_>, _>>()?;
    // What is at each key now: a create must find nothing there when it
    // writes, a replace this version.
    let mut expect = Vec::with_capacity(candidates.len());
    for c in &candidates {
        let now = bucket
            .s3
            .head(&c.key)
            .map_err(crate::source::s3::WriteError::from)?;
        let object = bucket.s3.object_url(&c.key);
        expect.push(match (&if_match, now) {
            (Some(etag), _) => Precondition::Matches((*etag).to_owned()),
            (None, None) => Precondition::Absent,
            (None, Some(v)) if replace => Precondition::Matches(v.etag),
            (None, Some(v)) => {
                return Err(Error::Refused(format!(
                    "{object} exists (ETag {}, for {}): give --replace to replace it; nothing uploaded",
                    v.etag, c.shown
                )));
            }
        });
    }
    let judged = bucket.judge(&candidates)?;
    for line in &judged.notes {
        note(line);
    }
    if !judged.diagnostics.is_empty() {
        for d in &judged.diagnostics {
            note(&d.to_string());
        }
        let invalid: std::collections::BTreeSet<&str> =
            judged.diagnostics.iter().map(|d| d.file.as_str()).collect();
        note(&format!(
            "{} of {} file(s) invalid: nothing uploaded",
            invalid.len(),
            candidates.len()
        ));
        return Ok(1);
    }
    let mut awaited = Vec::new();
    let before = if common.wait {
        Some(wait::Follow::start(&bucket, common)?)
    } else {
        None
    };
    for (i, (c, pre)) in candidates.iter().zip(&expect).enumerate() {
        let written = bucket
            .s3
            .write(&c.key, c.bytes.clone(), content_type(&c.key), pre)
            .inspect_err(|_| {
                if i > 0 {
                    note(&format!(
                        "{i} of {} file(s) were uploaded before this failure (listed above)",
                        candidates.len()
                    ));
                }
            })?;
        let _ = writeln!(
            std::io::stdout().lock(),
            "{} {}",
            bucket.s3.object_url(&c.key),
            written.etag
        );
        if let Some(name) = environment_name(c) {
            awaited.push(Awaited::Applied {
                name,
                etag: written.etag,
                object: bucket.s3.object_url(&c.key),
            });
        }
    }
    match before {
        Some(follow) => follow.until_done(&awaited),
        None => Ok(0),
    }
}

/// The file's name in messages and its bytes (`-`: stdin, named
/// `stdin.yaml` or `stdin.json` by its content, so it is parsed as the
/// object will be).
pub(super) fn read(path: &Path) -> Result<(String, Vec<u8>), Error> {
    let mut bytes = Vec::new();
    if path == Path::new("-") {
        std::io::stdin()
            .lock()
            .read_to_end(&mut bytes)
            .map_err(|error| Error::Read {
                path: "stdin".to_owned(),
                error,
            })?;
        let shown = format!("stdin{}", extension("-", &bytes));
        return Ok((shown, bytes));
    }
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|error| Error::Read {
            path: path.display().to_string(),
            error,
        })?;
    Ok((path.display().to_string(), bytes))
}

/// A file and its object key: named after the environment it claims (in
/// its pool's folder with `pool_from_prefix`), else after the file.
fn candidate(bucket: &Bucket, shown: String, bytes: Vec<u8>) -> Candidate {
    let ext = extension(&shown, &bytes);
    let peek = Peek::of(&shown, &bytes);
    let name = peek.name.unwrap_or_else(|| {
        Path::new(&shown)
            .file_stem()
            .map_or_else(|| "claim".to_owned(), |s| s.to_string_lossy().into_owned())
    });
    let key = bucket.key_for(&name, peek.pool.as_deref().unwrap_or("_"), ext);
    Candidate { shown, bytes, key }
}

/// The environment a candidate claims, when it names a valid one.
fn environment_name(c: &Candidate) -> Option<String> {
    Peek::of(&c.shown, &c.bytes).name
}

/// The name and pool a file gives, read before it is judged (only to
/// place its object; judging reads it again, as the daemon will).
pub(super) struct Peek {
    pub(super) name: Option<String>,
    pub(super) pool: Option<String>,
}

impl Peek {
    pub(super) fn of(shown: &str, bytes: &[u8]) -> Peek {
        let file = crate::source::SourceFile::new(
            shown.to_owned(),
            crate::source::Content::Bytes(bytes.to_vec().into()),
        );
        let doc = crate::load::parse(&file).ok();
        let field = |k: &str| {
            doc.as_ref()
                .and_then(|d| d.get(k))
                .and_then(serde_json::Value::as_str)
                .filter(|v| crate::claim::EnvironmentName::is_valid(v))
                .map(str::to_owned)
        };
        Peek {
            name: field("environment_name"),
            pool: field("environment_pool"),
        }
    }
}
