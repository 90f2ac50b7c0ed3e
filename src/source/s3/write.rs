//! What `converge claim` does to a bucket besides reading it: look an
//! object up (`HEAD`, `GET`), list the claim keys, write one object on a
//! condition, delete one. Same client, credentials, timeouts and error
//! classification as the source's polls (messages name the endpoint and
//! bucket, never a credential).
//!
//! A write is conditional: a create must find no object at the key, a
//! replace the `ETag` it was given. The condition is checked twice: a `HEAD`
//! just before the `PUT`, and the `PUT` itself carries `If-None-Match: *` or
//! `If-Match: "<etag>"`, which AWS S3 and `MinIO` enforce (`412
//! PreconditionFailed`, `409 ConditionalRequestConflict`). Garage (2.5)
//! ignores both headers on `PUT` and `DELETE`: there only the `HEAD` check
//! guards, and a writer between it and the `PUT` wins silently (a window of
//! one round trip).

use aws_sdk_s3::operation::head_object::HeadObjectError;
use aws_sdk_s3::primitives::ByteStream;

use super::S3Source;
use super::error::{Error, classify};
use super::fetch::{Fetched, get, list, rfc3339, unquote};
use crate::source::Content;

/// One version of an object: its `ETag` (unquoted) and last-modified time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    pub etag: String,
    /// RFC 3339.
    pub last_modified: Option<String>,
}

/// What a write expects to find at the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// No object: a create.
    Absent,
    /// The object at this `ETag` (unquoted): a replace.
    Matches(String),
}

/// Why a conditional write or a delete did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A create found an object at the key.
    #[error("{object} already exists (ETag {etag})")]
    Exists { object: String, etag: String },
    /// A replace found another version, or none.
    #[error("{object} changed since it was read: expected ETag {expected}, found {}", .found.as_deref().map_or_else(|| "no object".to_owned(), |e| format!("ETag {e}")))]
    Changed {
        object: String,
        expected: String,
        found: Option<String>,
    },
    /// The server refused the write on its precondition (`412`, `409`).
    #[error(
        "{object}: the server refused the write on its precondition ({code}): someone else wrote it meanwhile"
    )]
    Refused { object: String, code: String },
    #[error(transparent)]
    S3(#[from] Error),
}

impl S3Source {
    /// The source's options (bucket, prefix, endpoint, `static`).
    #[must_use]
    pub fn options(&self) -> &super::Options {
        &self.options
    }

    /// `s3://bucket/key`, for messages.
    #[must_use]
    pub fn object_url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.options.bucket)
    }

    /// The claim keys under the prefix (every listing page).
    pub fn claim_keys(&mut self) -> Result<Vec<String>, Error> {
        let client = self.client()?;
        let (listing, _) = self.runtime.block_on(list(&client, &self.options))?;
        Ok(listing.into_iter().map(|l| l.key).collect())
    }

    /// The version of the object at `key`, `None` when there is none.
    pub fn head(&mut self, key: &str) -> Result<Option<ObjectVersion>, Error> {
        let client = self.client()?;
        let o = &self.options;
        let result = self
            .runtime
            .block_on(client.head_object().bucket(&o.bucket).key(key).send());
        match result {
            Ok(out) => Ok(Some(ObjectVersion {
                etag: out.e_tag().map(unquote).unwrap_or_default(),
                last_modified: out.last_modified().and_then(rfc3339),
            })),
            Err(e)
                if e.as_service_error()
                    .is_some_and(HeadObjectError::is_not_found) =>
            {
                Ok(None)
            }
            Err(e) => Err(classify(e, o, "looking up")),
        }
    }

    /// The object at `key` (its content up to the size cap) and its
    /// version; `None` when there is none.
    pub fn fetch(&mut self, key: &str) -> Result<Option<(Content, ObjectVersion)>, Error> {
        let client = self.client()?;
        let listed = super::delta::Listed {
            key: key.to_owned(),
            etag: None,
            size: 0,
            last_modified: None,
        };
        match self.runtime.block_on(get(&client, &self.options, &listed)) {
            Ok(Fetched {
                etag,
                last_modified,
                content,
                ..
            }) => Ok(Some((
                content,
                ObjectVersion {
                    etag: etag.unwrap_or_default(),
                    last_modified,
                },
            ))),
            Err(Error::Vanished { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes `body` at `key` if the object there is as `expect` says
    /// (module doc: how, and where it is racy); returns the new version.
    pub fn write(
        &mut self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
        expect: &Precondition,
    ) -> Result<ObjectVersion, WriteError> {
        let object = self.object_url(key);
        check(&object, expect, self.head(key)?)?;
        let client = self.client()?;
        let o = &self.options;
        let mut put = client
            .put_object()
            .bucket(&o.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(body));
        put = match expect {
            Precondition::Absent => put.if_none_match("*"),
            Precondition::Matches(etag) => put.if_match(format!("\"{etag}\"")),
        };
        match self.runtime.block_on(put.send()) {
            Ok(out) => Ok(ObjectVersion {
                etag: out.e_tag().map(unquote).unwrap_or_default(),
                last_modified: None,
            }),
            Err(e) => {
                let code = e
                    .as_service_error()
                    .and_then(aws_sdk_s3::error::ProvideErrorMetadata::code)
                    .map(str::to_owned);
                let status = e.raw_response().map(|r| r.status().as_u16());
                match (status, code) {
                    (Some(412 | 409), Some(code))
                        if code == "PreconditionFailed" || code == "ConditionalRequestConflict" =>
                    {
                        Err(WriteError::Refused { object, code })
                    }
                    _ => Err(classify(e, o, "writing").into()),
                }
            }
        }
    }

    /// Deletes the object at `key` if it is still at `etag` (checked by a
    /// `HEAD` just before; the `DELETE` itself is unconditional).
    pub fn delete(&mut self, key: &str, etag: &str) -> Result<(), WriteError> {
        let object = self.object_url(key);
        check(
            &object,
            &Precondition::Matches(etag.to_owned()),
            self.head(key)?,
        )?;
        let client = self.client()?;
        let o = &self.options;
        self.runtime
            .block_on(client.delete_object().bucket(&o.bucket).key(key).send())
            .map_err(|e| classify(e, o, "deleting"))?;
        Ok(())
    }
}

/// Whether what is at the key (`found`) meets `expect`.
fn check(
    object: &str,
    expect: &Precondition,
    found: Option<ObjectVersion>,
) -> Result<(), WriteError> {
    match (expect, found) {
        (Precondition::Absent, None) => Ok(()),
        (Precondition::Absent, Some(v)) => Err(WriteError::Exists {
            object: object.to_owned(),
            etag: v.etag,
        }),
        (Precondition::Matches(want), Some(v)) if *want == v.etag => Ok(()),
        (Precondition::Matches(want), found) => Err(WriteError::Changed {
            object: object.to_owned(),
            expected: want.clone(),
            found: found.map(|v| v.etag),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(etag: &str) -> ObjectVersion {
        ObjectVersion {
            etag: etag.to_owned(),
            last_modified: None,
        }
    }

    #[test]
    fn a_create_needs_no_object_and_a_replace_the_same_etag() {
        let o = "s3://b/k";
        assert!(check(o, &Precondition::Absent, None).is_ok());
        assert!(matches!(
            check(o, &Precondition::Absent, Some(v("e1"))),
            Err(WriteError::Exists { etag, .. }) if etag == "e1"
        ));
        let replace = Precondition::Matches("e1".to_owned());
        assert!(check(o, &replace, Some(v("e1"))).is_ok());
        let changed = check(o, &replace, Some(v("e2"))).expect_err("another version");
        assert_eq!(
            changed.to_string(),
            "s3://b/k changed since it was read: expected ETag e1, found ETag e2"
        );
        let gone = check(o, &replace, None).expect_err("no object");
        assert_eq!(
            gone.to_string(),
            "s3://b/k changed since it was read: expected ETag e1, found no object"
        );
    }
}
