//! A repository's tag list: every `Link: <…>; rel="next"` page, within the
//! registry's origin, at most `max_tags` tags; a page that fails fails the
//! listing (nothing partial is returned).

use super::request::{header, read_body};
use super::wire::{error_code, next_link, parse_tags_page};
use super::{Error, Listing, Registry};

impl Registry {
    /// Lists every tag of `repository` (at most `max_tags`), every page.
    ///
    /// # Errors
    ///
    /// Any page that fails fails the listing: nothing partial is returned.
    pub fn list(&self, repository: &str) -> Result<Listing, Error> {
        let mut url = format!(
            "{}/v2/{repository}/tags/list?n={}",
            self.base,
            self.options.page_size.min(self.options.max_tags).max(1)
        );
        let scope = format!("repository:{repository}:pull");
        let mut tags = Vec::new();
        let mut page = 0;
        loop {
            page += 1;
            let interrupted = |error: Error| {
                if page == 1 {
                    error
                } else {
                    Error::ListingInterrupted {
                        registry: self.options.host.clone(),
                        repository: repository.to_owned(),
                        page,
                        error: Box::new(error),
                    }
                }
            };
            let (mut response, status) = self
                .get(&url, &scope, repository, None)
                .map_err(interrupted)?;
            let bad = |message: String| Error::BadResponse {
                registry: self.options.host.clone(),
                repository: repository.to_owned(),
                message,
            };
            match status {
                200 => {}
                401 | 403 => {
                    return Err(interrupted(Error::AuthFailed {
                        registry: self.options.host.clone(),
                        repository: repository.to_owned(),
                        status,
                    }));
                }
                404 => {
                    return Err(interrupted(Error::RepositoryMissing {
                        registry: self.options.host.clone(),
                        repository: repository.to_owned(),
                    }));
                }
                _ => {
                    let code = error_code(&read_body(&mut response).unwrap_or_default());
                    let error = if status >= 500 {
                        Error::ServerError {
                            registry: self.options.host.clone(),
                            repository: repository.to_owned(),
                            status,
                            code,
                        }
                    } else {
                        bad(format!("HTTP {status}{code}"))
                    };
                    return Err(interrupted(error));
                }
            }
            let next = next_link(header(&response, "link"), &self.base);
            let body = read_body(&mut response).map_err(|m| interrupted(bad(m)))?;
            let page_tags = parse_tags_page(&body).map_err(|m| interrupted(bad(m)))?;
            tags.extend(page_tags);
            if tags.len() >= self.options.max_tags {
                let truncated = tags.len() > self.options.max_tags || next.is_some();
                tags.truncate(self.options.max_tags);
                return Ok(Listing { tags, truncated });
            }
            match next {
                Some(Ok(n)) => url = n,
                Some(Err(m)) => return Err(interrupted(bad(m))),
                None => {
                    return Ok(Listing {
                        tags,
                        truncated: false,
                    });
                }
            }
        }
    }
}
