//! One request to the registry: the auth flow, `429`
//! waits and redirects within the registry's origin ([`Registry::get`]); the
//! manifests and blobs artifacts are pulled with, under a size cap.

use std::io::Read;

use super::wire::{error_code, parse_challenge, redirect_target, retry_after};
use super::{Error, MAX_RATE_LIMITED, MAX_REDIRECTS, Registry};

/// Bodies above this are refused (a page of 1,000 tags is ~30 KiB).
const MAX_BODY: u64 = 8 * 1024 * 1024;
/// The manifest types an artifact may come as.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

impl Registry {
    /// One GET with the auth flow, `429` waits and redirects within the
    /// registry's origin.
    pub(super) fn get(
        &self,
        url: &str,
        scope: &str,
        repository: &str,
        accept: Option<&str>,
    ) -> Result<(ureq::http::Response<ureq::Body>, u16), Error> {
        let mut url = url.to_owned();
        let mut challenged = false;
        let mut limited = 0;
        let mut redirects = 0;
        loop {
            if let Some(e) = self
                .down
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_ref()
            {
                return Err(e.again());
            }
            self.spend(repository)?;
            let mut request = self.agent.get(url.as_str());
            if let Some(accept) = accept {
                request = request.header("Accept", accept);
            }
            let auth = self.authorization(scope);
            let sent_basic = auth.as_deref().is_some_and(|a| a.starts_with("Basic "));
            if let Some(auth) = &auth {
                request = request.header("Authorization", auth);
            }
            let response = match request.call() {
                Ok(r) => r,
                Err(e) => {
                    self.count("tags", "error");
                    let error = self.transport(&e);
                    *self
                        .down
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error.again());
                    return Err(error);
                }
            };
            let status = response.status().as_u16();
            self.count("tags", &status.to_string());
            if status == 401 && !challenged {
                challenged = true;
                let challenge =
                    parse_challenge(header(&response, "www-authenticate").unwrap_or(""));
                if self.answer_challenge(&challenge, scope, repository, sent_basic)? {
                    continue;
                }
            }
            if status == 429 && limited < MAX_RATE_LIMITED {
                limited += 1;
                std::thread::sleep(retry_after(
                    header(&response, "retry-after"),
                    self.options.timeout,
                ));
                continue;
            }
            if status == 429 {
                return Err(Error::RateLimited {
                    registry: self.options.host.clone(),
                    repository: repository.to_owned(),
                });
            }
            if is_redirect(status) {
                redirects += 1;
                if redirects > MAX_REDIRECTS {
                    return Err(
                        self.refused(repository, format!("more than {MAX_REDIRECTS} redirects"))
                    );
                }
                url = redirect_target(header(&response, "location"), &self.base)
                    .map_err(|m| self.refused(repository, m))?;
                continue;
            }
            return Ok((response, status));
        }
    }

    /// The manifest `reference` (a tag or a digest) of `repository`, at most
    /// `max` bytes, with the auth flow of [`Registry::list`].
    ///
    /// # Errors
    ///
    /// As for a listing; a body over `max` is `BadResponse`.
    pub fn manifest(&self, repository: &str, reference: &str, max: u64) -> Result<Vec<u8>, Error> {
        let url = format!("{}/v2/{repository}/manifests/{reference}", self.base);
        self.fetch(&url, repository, Some(MANIFEST_TYPES), max)
    }

    /// The blob `digest` of `repository`, at most `max` bytes. The caller
    /// checks the digest.
    ///
    /// # Errors
    ///
    /// As for a listing; a body over `max` is `BadResponse`.
    pub fn blob(&self, repository: &str, digest: &str, max: u64) -> Result<Vec<u8>, Error> {
        let url = format!("{}/v2/{repository}/blobs/{digest}", self.base);
        self.fetch(&url, repository, None, max)
    }

    pub(super) fn fetch(
        &self,
        url: &str,
        repository: &str,
        accept: Option<&str>,
        max: u64,
    ) -> Result<Vec<u8>, Error> {
        let scope = format!("repository:{repository}:pull");
        let (mut response, status) = self.get(url, &scope, repository, accept)?;
        match status {
            200 => {}
            401 | 403 => {
                return Err(Error::AuthFailed {
                    registry: self.options.host.clone(),
                    repository: repository.to_owned(),
                    status,
                });
            }
            404 => {
                return Err(Error::RepositoryMissing {
                    registry: self.options.host.clone(),
                    repository: repository.to_owned(),
                });
            }
            _ => {
                let code = error_code(&read_body(&mut response).unwrap_or_default());
                return Err(Error::ServerError {
                    registry: self.options.host.clone(),
                    repository: repository.to_owned(),
                    status,
                    code,
                });
            }
        }
        let mut body = Vec::new();
        response
            .body_mut()
            .with_config()
            .limit(max + 1)
            .reader()
            .take(max + 1)
            .read_to_end(&mut body)
            .map_err(|e| self.transport(&ureq::Error::Io(e)))?;
        if body.len() as u64 > max {
            return Err(Error::BadResponse {
                registry: self.options.host.clone(),
                repository: repository.to_owned(),
                message: format!("body over {max} bytes"),
            });
        }
        Ok(body)
    }
}

/// A header's value as text (`None` when absent or not visible ASCII).
pub(super) fn header<'r>(
    response: &'r ureq::http::Response<ureq::Body>,
    name: &str,
) -> Option<&'r str> {
    response.headers().get(name)?.to_str().ok()
}

pub(super) fn read_body(
    response: &mut ureq::http::Response<ureq::Body>,
) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    response
        .body_mut()
        .as_reader()
        .take(MAX_BODY)
        .read_to_end(&mut body)
        .map_err(|e| e.to_string())?;
    Ok(body)
}

fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}
