//! The s3 source's requests: the listing of the prefix (every page, or a
//! failure as a whole) and the `GET`s of the objects the delta wants,
//! [`PARALLEL_GETS`] at a time.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_s3::Client;
use aws_sdk_s3::operation::get_object::GetObjectError;

use super::Options;
use super::delta::Listed;
use super::error::{Error, classify};
use crate::source::{Content, is_claim_file};

/// `GET`s in flight at once when many objects changed (the first poll).
const PARALLEL_GETS: usize = 16;

/// One object read by `GET`.
#[derive(Debug)]
pub(super) struct Fetched {
    pub(super) etag: Option<String>,
    pub(super) last_modified: Option<String>,
    pub(super) metadata: BTreeMap<String, String>,
    pub(super) content: Content,
}

/// Lists every claim object under the prefix, every page, or fails as a whole.
pub(super) async fn list(client: &Client, o: &Options) -> Result<(Vec<Listed>, usize), Error> {
    let mut out: BTreeMap<String, Listed> = BTreeMap::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = client
            .list_objects_v2()
            .bucket(&o.bucket)
            .prefix(&o.prefix)
            .set_continuation_token(token.take())
            .send()
            .await
            .map_err(|e| {
                let failure = classify(e, o, "listing");
                if pages == 0 {
                    failure
                } else {
                    Error::Interrupted {
                        location: o.location(),
                        pages,
                        cause: Box::new(failure),
                    }
                }
            })?;
        pages += 1;
        for object in page.contents() {
            let Some(key) = object.key() else { continue };
            if !is_claim_key(&o.prefix, key) {
                continue;
            }
            out.insert(
                key.to_owned(),
                Listed {
                    key: key.to_owned(),
                    etag: object.e_tag().map(unquote),
                    size: object
                        .size()
                        .and_then(|s| u64::try_from(s).ok())
                        .unwrap_or(0),
                    last_modified: object.last_modified().and_then(rfc3339),
                },
            );
        }
        if page.is_truncated() == Some(true) {
            token = page.next_continuation_token().map(str::to_owned);
            if token.is_none() {
                return Err(Error::Truncated {
                    location: o.location(),
                    page: pages,
                });
            }
        } else {
            return Ok((out.into_values().collect(), pages));
        }
    }
}

/// A key converge reads as a claim: a claim suffix, no hidden segment (as the
/// dir source skips `.git` and editor files), not a folder marker.
pub(super) fn is_claim_key(prefix: &str, key: &str) -> bool {
    let rel = key.strip_prefix(prefix).unwrap_or(key);
    !key.ends_with('/')
        && is_claim_file(key)
        && !rel.split('/').any(|segment| segment.starts_with('.'))
}

/// `GET`s the wanted objects, [`PARALLEL_GETS`] at a time; any failure fails all.
pub(super) async fn fetch_all(
    client: &Client,
    o: &Options,
    wanted: Vec<Listed>,
) -> Result<HashMap<String, Fetched>, Error> {
    let mut out = HashMap::with_capacity(wanted.len());
    let mut tasks = tokio::task::JoinSet::new();
    let mut wanted = wanted.into_iter();
    loop {
        while tasks.len() < PARALLEL_GETS {
            let Some(listed) = wanted.next() else { break };
            let (client, o) = (client.clone(), o.clone());
            tasks.spawn(async move {
                let fetched = get(&client, &o, &listed).await?;
                Ok::<_, Error>((listed.key, fetched))
            });
        }
        match tasks.join_next().await {
            None => return Ok(out),
            Some(Ok(Ok((key, fetched)))) => {
                out.insert(key, fetched);
            }
            Some(Ok(Err(failure))) => return Err(failure),
            Some(Err(error)) => {
                return Err(Error::Task {
                    location: o.location(),
                    error,
                });
            }
        }
    }
}

/// One `GetObject`: bytes (up to the cap), `ETag`, last-modified, metadata.
pub(super) async fn get(client: &Client, o: &Options, listed: &Listed) -> Result<Fetched, Error> {
    let what = format!("s3://{}/{}", o.bucket, listed.key);
    let output = client
        .get_object()
        .bucket(&o.bucket)
        .key(&listed.key)
        .send()
        .await
        .map_err(|e| {
            if e.as_service_error()
                .is_some_and(GetObjectError::is_no_such_key)
            {
                // Deleted between the listing and the GET: this listing is
                // already stale; the next poll lists again.
                Error::Vanished {
                    object: what.clone(),
                }
            } else {
                classify(e, o, "reading")
            }
        })?;
    let etag = output.e_tag().map(unquote);
    let last_modified = output.last_modified().and_then(rfc3339);
    let metadata: BTreeMap<String, String> = output
        .metadata()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let limit = o.max_file_bytes;
    let size = output.content_length().and_then(|n| u64::try_from(n).ok());
    let content = if let Some(size) = size.filter(|s| *s > limit) {
        Content::TooLarge { size, limit }
    } else {
        let mut body = output.body;
        let mut bytes = Vec::with_capacity(usize::try_from(size.unwrap_or(0)).unwrap_or(0));
        let read = async {
            while let Some(chunk) = body.try_next().await? {
                bytes.extend_from_slice(&chunk);
                if bytes.len() as u64 > limit {
                    return Ok(false);
                }
            }
            Ok::<_, aws_sdk_s3::primitives::ByteStreamError>(true)
        };
        match tokio::time::timeout(o.timeout, read).await {
            Err(_) => {
                return Err(Error::Timeout {
                    message: format!("reading {what} timed out after {:?}", o.timeout),
                });
            }
            Ok(Err(error)) => {
                return Err(Error::Body {
                    object: what,
                    error,
                });
            }
            Ok(Ok(false)) => Content::TooLarge {
                size: size.unwrap_or(bytes.len() as u64),
                limit,
            },
            Ok(Ok(true)) => Content::Bytes(bytes.into()),
        }
    };
    Ok(Fetched {
        etag,
        last_modified,
        metadata,
        content,
    })
}

pub(super) fn unquote(etag: &str) -> String {
    etag.trim_matches('"').to_owned()
}

pub(super) fn rfc3339(t: &aws_sdk_s3::primitives::DateTime) -> Option<String> {
    t.fmt(aws_sdk_s3::primitives::DateTimeFormat::DateTime).ok()
}
