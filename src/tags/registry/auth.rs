//! Authorization: the credentials read for a scan ([`Secret`]), the header
//! a request goes out with, and the answer to a `401`'s challenge (`Basic`,
//! or a bearer token fetched from a realm judged by [`realm_allowed`] before
//! anything is sent to it, kept per scope until it expires).

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::request::read_body;
use super::wire::{Challenge, parse_token, realm_allowed};
use super::{Error, Registry};

/// Authorization read from the credential files for one scan.
#[derive(Clone)]
pub(super) enum Secret {
    None,
    Basic(String),
    Bearer(String),
}

impl Registry {
    pub(super) fn secret(&self) -> Secret {
        self.secret
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(super) fn authorization(&self, scope: &str) -> Option<String> {
        let tokens = self
            .tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((token, until)) = tokens.get(scope)
            && *until > Instant::now()
        {
            return Some(format!("Bearer {token}"));
        }
        drop(tokens);
        match self.secret() {
            Secret::Bearer(t) => Some(format!("Bearer {t}")),
            Secret::Basic(b) if self.basic.load(Ordering::Relaxed) => Some(format!("Basic {b}")),
            Secret::Basic(_) | Secret::None => None,
        }
    }

    /// Answers a `401`'s challenge; true when the request should be sent
    /// again (once per request: the caller asks at most once).
    pub(super) fn answer_challenge(
        &self,
        challenge: &Challenge,
        scope: &str,
        repository: &str,
        sent_basic: bool,
    ) -> Result<bool, Error> {
        let (realm, service, wanted_scope) = match challenge {
            Challenge::Basic => {
                // Sent again with the credentials unless they were already
                // sent (concurrent listings each see the challenge once).
                let has = matches!(self.secret(), Secret::Basic(_));
                self.basic.store(true, Ordering::Relaxed);
                return Ok(has && !sent_basic);
            }
            Challenge::Other => return Ok(false),
            Challenge::Bearer {
                realm,
                service,
                scope: wanted,
            } => (realm, service, wanted.as_deref().unwrap_or(scope)),
        };
        // The realm is judged before anything is sent to it, credentials
        // or not: a realm we would not trust with them is not asked at all.
        realm_allowed(realm, self.origin.as_ref(), self.options.plain_http)
            .map_err(|m| self.refused(repository, m))?;
        self.spend(repository)?;
        let mut request = self.agent.get(realm.as_str());
        if let Some(service) = service {
            request = request.query("service", service);
        }
        request = request.query("scope", wanted_scope);
        match self.secret() {
            Secret::Basic(b) => request = request.header("Authorization", &format!("Basic {b}")),
            Secret::Bearer(t) => request = request.header("Authorization", &format!("Bearer {t}")),
            Secret::None => {}
        }
        let mut response = match request.call() {
            Ok(r) => r,
            Err(e) => {
                self.count("token", "error");
                return Err(self.transport(&e));
            }
        };
        let status = response.status().as_u16();
        self.count("token", &status.to_string());
        if status != 200 {
            return Err(Error::AuthFailed {
                registry: self.options.host.clone(),
                repository: repository.to_owned(),
                status,
            });
        }
        let bad = |message: String| Error::BadResponse {
            registry: self.options.host.clone(),
            repository: repository.to_owned(),
            message: format!("token endpoint: {message}"),
        };
        let body = read_body(&mut response).map_err(bad)?;
        let token = parse_token(&body).map_err(bad)?;
        // `lifetime` is at most an hour; a clock that cannot hold an hour
        // more is an answer we cannot keep, not a panic.
        let until = Instant::now()
            .checked_add(token.lifetime)
            .ok_or_else(|| bad("a token lifetime past the clock's range".to_owned()))?;
        self.tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(scope.to_owned(), (token.token, until));
        Ok(true)
    }
}

/// Standard base64 with padding (for the basic auth header).
pub(super) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
