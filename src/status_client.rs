//! `converge status`: reads the API and prints a table, JSON, or one
//! environment's conditions, versions and history.

use std::fmt::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::status::{Detail, Item};

#[derive(Debug, Clone)]
pub struct Options {
    pub url: String,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub json: bool,
    pub environment: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{url}: {message}")]
    Http { url: String, message: String },
    #[error("{url}: unexpected response: {message}")]
    Decode { url: String, message: String },
}

fn get(options: &Options, path: &str) -> Result<String, Error> {
    let (status, body, url) = fetch(options, path)?;
    if !(200..300).contains(&status) {
        return Err(refusal(&url, status, body));
    }
    Ok(body)
}

/// The error an unsuccessful answer means: the API's `error` text, else the body.
fn refusal(url: &str, status: u16, body: String) -> Error {
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or(body);
    Error::Http {
        url: url.to_owned(),
        message: match ureq::http::StatusCode::from_u16(status) {
            Ok(code) => format!("{code}: {message}"),
            Err(_) => format!("{status}: {message}"),
        },
    }
}

/// One environment's detail (`/api/v1/environments/{name}`) as JSON;
/// `None` when the API does not know it (404). For `converge claim --wait`.
pub fn environment(options: &Options, name: &str) -> Result<Option<serde_json::Value>, Error> {
    let path = format!("/api/v1/environments/{name}");
    let (status, body, url) = fetch(options, &path)?;
    if status == 404 {
        return Ok(None);
    }
    if !(200..300).contains(&status) {
        return Err(refusal(&url, status, body));
    }
    serde_json::from_str(&body)
        .map(Some)
        .map_err(|e| Error::Decode {
            url,
            message: e.to_string(),
        })
}

/// `/api/v1/sources` as JSON. For `converge claim --wait`.
pub fn sources(options: &Options) -> Result<serde_json::Value, Error> {
    get_json(options, "/api/v1/sources")
}

/// `/api/v1/events` (newest first) as JSON. For `converge claim --wait`.
pub fn events(options: &Options) -> Result<serde_json::Value, Error> {
    get_json(options, "/api/v1/events")
}

fn get_json(options: &Options, path: &str) -> Result<serde_json::Value, Error> {
    let body = get(options, path)?;
    serde_json::from_str(&body).map_err(|e| Error::Decode {
        url: format!("{}{path}", options.url),
        message: e.to_string(),
    })
}

/// A `GET` of `path`: the status, the body and the URL asked.
fn fetch(options: &Options, path: &str) -> Result<(u16, String, String), Error> {
    // `127.0.0.1:8090` means `http://127.0.0.1:8090`.
    let base = options.url.trim_end_matches('/');
    let url = if base.contains("://") {
        format!("{base}{path}")
    } else {
        format!("http://{base}{path}")
    };
    let http = |message: String| Error::Http {
        url: url.clone(),
        message,
    };
    let mut config = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false);
    if let Some(ca) = &options.ca_file {
        let pem = std::fs::read(ca).map_err(|source| Error::Read {
            path: ca.display().to_string(),
            source,
        })?;
        config = config.tls_config(trusting(&pem));
    }
    let agent: ureq::Agent = config.build().into();
    let mut request = agent.get(&url);
    if let Some(file) = &options.token_file {
        let token = std::fs::read_to_string(file).map_err(|source| Error::Read {
            path: file.display().to_string(),
            source,
        })?;
        request = request.header("Authorization", &format!("Bearer {}", token.trim()));
    }
    let mut response = request.call().map_err(|e| {
        // TLS to a server that answers in plain HTTP.
        let plain = rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType);
        let tls = match &e {
            ureq::Error::Rustls(t) => Some(t),
            ureq::Error::Io(io) => io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()),
            _ => None,
        };
        if tls == Some(&plain) {
            http(format!(
                "the server does not speak TLS there; try {}",
                url.replacen("https://", "http://", 1)
            ))
        } else if let ureq::Error::Io(io) = &e {
            http(format!(
                "cannot reach the API: {io} (is `converge run` listening there? --url chooses the address)"
            ))
        } else {
            http(crate::diagnostic::chain(&e))
        }
    })?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|e| http(e.to_string()))?;
    Ok((status, body, url))
}

#[derive(serde::Deserialize)]
struct List {
    #[serde(default)]
    shard: Option<serde_json::Value>,
    items: Vec<serde_json::Value>,
    #[serde(default, rename = "continue")]
    continue_token: Option<String>,
}

#[derive(serde::Deserialize)]
struct Sources {
    items: Vec<SourceRefusals>,
}

/// The part of `/api/v1/sources` the table shows: files refused before they
/// named an environment, which have no row of their own.
#[derive(serde::Deserialize)]
struct SourceRefusals {
    name: String,
    #[serde(default)]
    refused_files: Vec<RefusedFile>,
    #[serde(default)]
    refused_files_total: usize,
}

#[derive(serde::Deserialize)]
struct RefusedFile {
    path: String,
    pointer: String,
    rule: String,
    message: String,
    #[serde(default)]
    problems: usize,
}

/// What `converge status` prints.
pub fn status(options: &Options) -> Result<String, Error> {
    let decode = |path: &str, e: serde_json::Error| Error::Decode {
        url: format!("{}{path}", options.url),
        message: e.to_string(),
    };
    if let Some(name) = &options.environment {
        let path = format!("/api/v1/environments/{name}");
        let body = get(options, &path)?;
        if options.json {
            return Ok(body + "\n");
        }
        let detail: Detail = serde_json::from_str(&body).map_err(|e| decode(&path, e))?;
        return Ok(describe(&detail));
    }
    let (shard, items) = every_page(options)?;
    if options.json {
        let mut doc = serde_json::Map::new();
        if let Some(shard) = shard {
            doc.insert("shard".to_owned(), shard);
        }
        doc.insert("items".to_owned(), serde_json::Value::Array(items));
        return Ok(serde_json::Value::Object(doc).to_string() + "\n");
    }
    let path = "/api/v1/environments";
    let items: Vec<Item> = items
        .into_iter()
        .map(serde_json::from_value)
        .collect::<Result<_, _>>()
        .map_err(|e| decode(path, e))?;
    let mut out = table(&items);
    let path = "/api/v1/sources";
    let body = get(options, path)?;
    let sources: Sources = serde_json::from_str(&body).map_err(|e| decode(path, e))?;
    out.push_str(&refused_files(&sources.items));
    Ok(out)
}

/// Every environment, page after page (following `continue`), and the
/// shard the first page names.
fn every_page(
    options: &Options,
) -> Result<(Option<serde_json::Value>, Vec<serde_json::Value>), Error> {
    let mut items = Vec::new();
    let mut shard = None;
    let mut after: Option<String> = None;
    loop {
        let mut path = format!(
            "/api/v1/environments?limit={}",
            crate::view::list::MAX_LIMIT
        );
        if let Some(token) = &after {
            path.push_str("&continue=");
            path.push_str(&crate::page::encode(token));
        }
        let body = get(options, &path)?;
        let page: List = serde_json::from_str(&body).map_err(|e| Error::Decode {
            url: format!("{}{path}", options.url),
            message: e.to_string(),
        })?;
        if shard.is_none() {
            shard = page.shard;
        }
        items.extend(page.items);
        match page.continue_token {
            // A token that does not move on would loop for ever.
            Some(t) if after.as_ref() != Some(&t) => after = Some(t),
            _ => return Ok((shard, items)),
        }
    }
}

/// Files refused before they named a valid environment, by source and file.
fn refused_files(sources: &[SourceRefusals]) -> String {
    let mut out = String::new();
    for s in sources.iter().filter(|s| s.refused_files_total > 0) {
        let _ = writeln!(
            out,
            "\nsource {}: {} file(s) refused before naming a valid environment:",
            s.name, s.refused_files_total
        );
        for f in &s.refused_files {
            let at = if f.pointer.is_empty() {
                String::new()
            } else {
                format!(" at {}", f.pointer)
            };
            let more = match f.problems {
                0 | 1 => String::new(),
                n => format!(" (+{} more; `converge validate` lists them)", n - 1),
            };
            let _ = writeln!(out, "  {}{at}: {} ({}){more}", f.path, f.message, f.rule);
        }
        let hidden = s.refused_files_total.saturating_sub(s.refused_files.len());
        if hidden > 0 {
            let _ = writeln!(out, "  … and {hidden} more");
        }
    }
    out
}

fn table(items: &[Item]) -> String {
    let rows: Vec<[String; 7]> = items
        .iter()
        .map(|i| {
            let reason = i
                .conditions
                .first()
                .map(|c| c.reason.as_str())
                .unwrap_or_default();
            [
                i.name.clone(),
                i.env_type.clone(),
                i.pool.clone(),
                i.owner.clone(),
                format!("{} ({reason})", i.status),
                match i.drifted_objects() {
                    0 => "-".to_owned(),
                    1 => "1 object".to_owned(),
                    n => format!("{n} objects"),
                },
                i.expires_at.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let header = [
        "NAME", "TYPE", "POOL", "OWNER", "STATUS", "DRIFT", "EXPIRES",
    ]
    .map(str::to_owned);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

fn describe(d: &Detail) -> String {
    let i = &d.item;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Name:     {}\nType:     {}\nPool:     {}\nOwner:    {}\nStatus:   {}",
        i.name, i.env_type, i.pool, i.owner, i.status
    );
    let _ = writeln!(
        out,
        "Source:   {}\nRevision: {}\nExpires:  {}",
        i.source.as_deref().unwrap_or("-"),
        i.revision.as_deref().unwrap_or("-"),
        i.expires_at.as_deref().unwrap_or("-")
    );
    let _ = writeln!(out, "Conditions:");
    for c in &i.conditions {
        let _ = writeln!(
            out,
            "  {} {} ({}): {}",
            c.kind, c.status, c.reason, c.message
        );
    }
    let _ = writeln!(out, "Versions:");
    for (service, v) in &d.versions {
        let _ = write!(out, "  {service} {} ({})", v.tag, v.constraint);
        if let Some(m) = d.manifests.get(service) {
            let _ = write!(out, " manifests {} {}", m.reference, m.digest);
            if !m.source.is_empty() {
                let _ = write!(out, " from {}", m.source);
            }
            if !m.revision.is_empty() {
                let _ = write!(out, " at {}", m.revision);
            }
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "History:");
    for h in &d.history {
        let _ = writeln!(
            out,
            "  pass {} at {}: {} ({})",
            h.pass, h.time, h.status, h.reason
        );
    }
    out
}

/// TLS that trusts exactly the certificates in `pem` (a CA file), for the
/// HTTP clients on ureq: `converge status` and the registry tag source.
pub(crate) fn trusting(pem: &[u8]) -> ureq::tls::TlsConfig {
    let certs: Vec<_> = ureq::tls::parse_pem(pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(certs)))
        .build()
}
