//! The status page: server-rendered HTML of a [`View`] (`/` and
//! `/environments/{name}`), inline CSS, no script.
//!
//! Pure: a view, a query and the time in, a page out. Everything shown comes
//! from what the read-only API serves (the environments' statuses, the
//! sources and events bodies), and every value is HTML-escaped: claim names,
//! owners, file names and messages are written by whoever writes claims.
//! The search is server-side (`?q=`, a bounded case-insensitive substring),
//! and a list shows at most [`ROWS`] environments a page, saying how many
//! others match.

use std::borrow::Cow;
use std::fmt::Write;

use serde::Deserialize;

use crate::condition::ConditionType;
use crate::status::{EnvStatus, HistoryEntry, Item, Status};
use crate::view::View;
use crate::view::list::contains_ci;

/// Environments listed on one page; the others are counted and paged.
pub const ROWS: usize = 200;
/// Characters of `q` searched for (the rest is ignored, and said so).
pub const QUERY_MAX: usize = 100;
/// Events on the main page (newest first).
pub const EVENTS: usize = 20;
/// Events on an environment's page.
pub const ENVIRONMENT_EVENTS: usize = 50;
/// Characters of a message shown in a list row (the environment's page shows it whole).
const SHORT: usize = 160;

/// The main page's query: `q` (search), `status` and `type` (exact, as the
/// counts link them) and `page` (1-based); anything unreadable is the default.
#[derive(Debug, Default, Deserialize)]
pub struct Query {
    pub q: Option<String>,
    pub status: Option<String>,
    #[serde(rename = "type")]
    pub env_type: Option<String>,
    pub page: Option<String>,
}

/// Escapes text for HTML (text and quoted attribute values).
#[must_use]
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query value or a path segment (everything but RFC 3986's unreserved).
#[must_use]
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// "in 3h 12m", "expired 5m ago", or "" for no expiry.
#[must_use]
pub fn countdown(expires_at: Option<&str>, now: chrono::DateTime<chrono::Utc>) -> String {
    let Some(at) = expires_at.and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok()) else {
        return String::new();
    };
    let secs = (at.with_timezone(&chrono::Utc) - now).num_seconds();
    let span = |s: i64| {
        let (d, h, m) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60);
        if d > 0 {
            format!("{d}d {h}h")
        } else if h > 0 {
            format!("{h}h {m}m")
        } else {
            format!("{m}m")
        }
    };
    if secs >= 0 {
        format!("in {}", span(secs))
    } else {
        format!("expired {} ago", span(-secs))
    }
}

/// At most `max` characters of `s`, with an ellipsis when cut.
fn short(s: &str, max: usize) -> Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => Cow::Borrowed(s),
        Some((at, _)) => Cow::Owned(format!("{}…", &s[..at])),
    }
}

/// The search as given: trimmed, at most [`QUERY_MAX`] characters, and
/// whether it was cut.
fn search_of(q: Option<&str>) -> (String, bool) {
    let q = q.unwrap_or_default().trim();
    match q.char_indices().nth(QUERY_MAX) {
        None => (q.to_owned(), false),
        Some((at, _)) => (q[..at].to_owned(), true),
    }
}

/// Whether an environment matches the search (lower-case): its name, type,
/// pool, owner, source file, status, or a condition's type or reason.
#[must_use]
pub fn matches(item: &Item, needle: &str) -> bool {
    [
        item.name.as_str(),
        item.env_type.as_str(),
        item.pool.as_str(),
        item.owner.as_str(),
        item.status.as_str(),
        item.source.as_deref().unwrap_or_default(),
    ]
    .into_iter()
    .any(|f| contains_ci(f, needle))
        || item.conditions.iter().any(|c| {
            // `Ready` by its reason only (every environment has one); a
            // problem by its type too (`Drifted`, `Stalled`).
            let problem = c.kind != ConditionType::Ready && c.status;
            (problem || c.kind == ConditionType::Ready) && contains_ci(c.reason.as_str(), needle)
                || problem && contains_ci(c.kind.as_str(), needle)
        })
}

/// What a row is marked with: CSS classes and the words said beside the
/// status (so a marking is never colour alone).
fn marks(item: &Item) -> (Vec<&'static str>, Vec<&'static str>) {
    let mut classes = Vec::new();
    let mut words = Vec::new();
    match item.status {
        Status::Stalled => {
            classes.push("stalled");
            words.push("Stalled");
        }
        Status::Failed | Status::Invalid | Status::Held => classes.push("refused"),
        Status::Reconciling | Status::Pending => classes.push("busy"),
        Status::Ready | Status::Expired => {}
    }
    if item.drifted() {
        classes.push("drifted");
        words.push("Drifted");
    }
    (classes, words)
}

/// A source as `/api/v1/sources` serves it (the fields the page shows).
#[derive(Debug, Deserialize)]
struct Source<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    revision: Option<Cow<'a, str>>,
    #[serde(default)]
    files: u64,
    ready: bool,
    #[serde(borrow, default)]
    last_success: Option<Cow<'a, str>>,
    #[serde(default)]
    errors: u64,
    #[serde(borrow, default)]
    last_error: Option<SourceError<'a>>,
    #[serde(borrow, default)]
    refused_files: Vec<RefusedFile<'a>>,
    #[serde(default)]
    refused_files_total: usize,
}

/// A file refused before it named a valid environment (no row of its own).
#[derive(Debug, Deserialize)]
struct RefusedFile<'a> {
    #[serde(borrow)]
    path: Cow<'a, str>,
    #[serde(borrow)]
    pointer: Cow<'a, str>,
    #[serde(borrow)]
    rule: Cow<'a, str>,
    #[serde(borrow)]
    message: Cow<'a, str>,
}

#[derive(Debug, Deserialize)]
struct SourceError<'a> {
    #[serde(borrow)]
    reason: Cow<'a, str>,
    #[serde(borrow)]
    message: Cow<'a, str>,
}

/// An event as `/api/v1/events` serves it.
#[derive(Debug, Deserialize)]
struct Event<'a> {
    #[serde(borrow)]
    time: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    reason: Cow<'a, str>,
    #[serde(borrow, default)]
    environment: Option<Cow<'a, str>>,
    #[serde(borrow)]
    message: Cow<'a, str>,
}

#[derive(Debug, Deserialize)]
struct Items<T> {
    items: Vec<T>,
}

fn sources(view: &View) -> Vec<Source<'_>> {
    serde_json::from_slice::<Items<Source<'_>>>(&view.sources)
        .map_or_else(|_| Vec::new(), |i| i.items)
}

fn events(view: &View) -> Vec<Event<'_>> {
    serde_json::from_slice::<Items<Event<'_>>>(&view.events)
        .map_or_else(|_| Vec::new(), |i| i.items)
}

const STYLE: &str = concat!(
    "*{box-sizing:border-box}",
    "body{font-family:system-ui,sans-serif;margin:0 auto;padding:1rem;max-width:84rem;color:#1b1f24;line-height:1.4}",
    "h1{font-size:1.3rem;overflow-wrap:anywhere}h2{font-size:1.1rem;margin-top:1.6rem}a{color:#0550ae}",
    ".wrap{overflow-x:auto;max-width:100%}table{border-collapse:collapse;width:100%}",
    "th,td{text-align:left;vertical-align:top;padding:.35rem .5rem;border-bottom:1px solid #ddd}",
    // break-word, not anywhere, in a table: a word is never cut to narrow a
    // column; a table wider than the page scrolls in its .wrap.
    "td{overflow-wrap:break-word}.nw{white-space:nowrap}td.why{min-width:14rem}",
    "code{font-size:.9em;overflow-wrap:break-word}small,.muted{color:#57606a}",
    ".badge{display:inline-block;font-size:.75rem;font-weight:700;padding:0 .3rem;margin:0 .2rem;",
    "border:1px solid currentColor;border-radius:4px;text-transform:uppercase}",
    ".Ready,.yes{color:#116329}.Failed,.Invalid,.Held,.Stalled,.no,.Warning{color:#a40e26}",
    ".Pending,.Expired,.Reconciling{color:#7d4e00}.Drifted{color:#6639ba}",
    "tr.stalled td,tr.refused td{background:#fff5f5}tr.drifted td{background:#faf5ff}",
    "tr.stalled td:first-child,tr.refused td:first-child{box-shadow:inset 4px 0 #a40e26}",
    "tr.drifted td:first-child{box-shadow:inset 4px 0 #6639ba}",
    "form{display:flex;flex-wrap:wrap;gap:.5rem;margin:.75rem 0}",
    "input[type=search]{flex:1 1 12rem;min-width:0;max-width:30rem;padding:.35rem;font:inherit}",
    "button{font:inherit;padding:.35rem .8rem}dl{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:.2rem 1rem}",
    "dt{color:#57606a}dd{margin:0;min-width:0;overflow-wrap:anywhere}dd code,h1 code,li code{overflow-wrap:anywhere}ul.drift{padding-left:1.2rem}",
    "nav.pages a{margin-right:1rem}",
    "@media (max-width:640px){table.cards thead{display:none}",
    "table.cards,table.cards tbody,table.cards tr,table.cards td{display:block;width:auto}",
    "table.cards tr{border:1px solid #ddd;border-radius:6px;margin:.5rem 0;padding:.25rem;overflow:hidden}",
    "table.cards td{border:0;padding:.15rem .5rem;overflow-wrap:anywhere;white-space:normal}td.why{min-width:0}",
    "table.cards code{overflow-wrap:anywhere}",
    "table.cards td::before{content:attr(data-label);display:inline-block;min-width:4.5rem;color:#57606a}",
    "dl{grid-template-columns:minmax(0,1fr)}dd{margin-bottom:.3rem}}",
);

fn head(html: &mut String, title: &str) {
    let _ = write!(
        html,
        concat!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
            "<meta http-equiv=\"refresh\" content=\"30\"><title>{}</title><style>{}</style></head><body>"
        ),
        escape(title),
        STYLE
    );
}

/// The main page: summary, last plan, search, environments (paged), sources, recent events.
#[must_use]
pub fn status_page(view: &View, query: &Query, now: chrono::DateTime<chrono::Utc>) -> String {
    let mut html = String::with_capacity(8192 + view.environments.len().min(ROWS) * 600);
    head(&mut html, "converge status");
    let counts = &view.counts;
    let ready = counts.ready;
    let stalled = counts.status(Status::Stalled);
    let drifted = counts.drifted;
    let invalid = counts.status(Status::Invalid);
    let failed = counts.status(Status::Failed);
    let held = counts.status(Status::Held);
    let _ = write!(
        html,
        "<h1>converge</h1><p>{} environments: {ready} ready",
        view.environments.len()
    );
    // Each count links to the search that lists it.
    for (n, word, class) in [
        (stalled, "stalled", "Stalled"),
        (drifted, "drifted", "Drifted"),
        (invalid, "invalid", "Invalid"),
        (failed, "failed", "Failed"),
        (held, "held", "Held"),
    ] {
        if n > 0 {
            let _ = write!(
                html,
                ", <a class=\"{class}\" href=\"/?q={word}\">{n} {word}</a>"
            );
        }
    }
    let _ = write!(
        html,
        ". Pass {}{}; shown at {}.</p>",
        view.pass,
        if view.ready { "" } else { " (not ready yet)" },
        now.format("%Y-%m-%dT%H:%M:%SZ")
    );
    counts_line(&mut html, view);
    if let Some(plan) = &view.last_plan {
        let _ = write!(
            html,
            "<h2>Last plan</h2><p>{}</p>",
            escape(&crate::plan::summary(plan))
        );
        if let Some(hold) = &plan.hold {
            let _ = write!(
                html,
                "<p class=\"Held\"><span class=\"badge\">Held</span> {}</p>",
                escape(&hold.message)
            );
        }
    }
    environments(&mut html, view, query, now);
    sources_section(&mut html, view);
    html.push_str("<h2 id=\"events\">Recent events</h2>");
    let events = events(view);
    let shown: Vec<&Event<'_>> = events.iter().take(EVENTS).collect();
    events_table(&mut html, &shown, events.len());
    html.push_str("</body></html>\n");
    html
}

/// The environments counted by status and by type, each count a link to
/// the search that lists them.
fn counts_line(html: &mut String, view: &View) {
    let counts = &view.counts;
    if counts.by_status.is_empty() {
        return;
    }
    html.push_str("<p class=\"counts\">By status:");
    for (i, (status, n)) in counts.by_status.iter().enumerate() {
        let _ = write!(
            html,
            "{} <a class=\"{s}\" href=\"/?status={s}\">{s} {n}</a>",
            if i > 0 { "," } else { "" },
            s = status.as_str()
        );
    }
    html.push_str(". By type:");
    for (i, (t, n)) in counts.by_type.iter().enumerate() {
        let _ = write!(
            html,
            "{} <a href=\"/?type={}\">{} {n}</a>",
            if i > 0 { "," } else { "" },
            escape(&encode(t)),
            escape(t)
        );
    }
    html.push_str(".</p>");
}

/// How many environments the search and filters match, and what they are.
fn matched(
    html: &mut String,
    view: &View,
    total: usize,
    status: Option<&str>,
    env_type: Option<&str>,
    q: &str,
) {
    let mut what = Vec::new();
    if let Some(s) = status {
        what.push(format!("status {}", escape(s)));
    }
    if let Some(t) = env_type {
        what.push(format!("type {}", escape(t)));
    }
    if !q.is_empty() {
        what.push(format!("<q>{}</q>", escape(q)));
    }
    let _ = write!(
        html,
        "<p>{} of {} environments match {}.</p>",
        total,
        view.environments.len(),
        what.join(" and ")
    );
}

/// Links to the previous and next page of the same search.
fn pager(
    html: &mut String,
    page: usize,
    pages: usize,
    q: &str,
    status: Option<&str>,
    env_type: Option<&str>,
) {
    if pages <= 1 {
        return;
    }
    html.push_str("<nav class=\"pages\">");
    let link = |p: usize| {
        let mut href = format!("/?page={p}");
        if !q.is_empty() {
            let _ = write!(href, "&q={}", encode(q));
        }
        if let Some(s) = status {
            let _ = write!(href, "&status={}", encode(s));
        }
        if let Some(t) = env_type {
            let _ = write!(href, "&type={}", encode(t));
        }
        escape(&href)
    };
    if page > 1 {
        let _ = write!(html, "<a href=\"{}\">previous page</a>", link(page - 1));
    }
    let _ = write!(html, "<span>page {page} of {pages}</span> ");
    if page < pages {
        let _ = write!(html, "<a href=\"{}\">next page</a>", link(page + 1));
    }
    html.push_str("</nav>");
}

/// A query parameter given and not blank.
fn given(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|v| !v.is_empty())
}

fn environments(html: &mut String, view: &View, query: &Query, now: chrono::DateTime<chrono::Utc>) {
    let (q, cut) = search_of(query.q.as_deref());
    let needle = q.to_lowercase();
    let _ = write!(
        html,
        concat!(
            "<h2 id=\"environments\">Environments</h2>",
            "<form method=\"get\" action=\"/\" role=\"search\"><label for=\"q\" class=\"muted\">Search</label>",
            "<input type=\"search\" id=\"q\" name=\"q\" maxlength=\"{}\" value=\"{}\" ",
            "placeholder=\"name, type, pool, owner, status or reason\">",
            "<button type=\"submit\">Search</button>{}</form>"
        ),
        QUERY_MAX,
        escape(&q),
        if q.is_empty() {
            ""
        } else {
            "<a href=\"/\">clear</a>"
        },
    );
    let (status, env_type) = (
        given(query.status.as_deref()),
        given(query.env_type.as_deref()),
    );
    let exact = |want: Option<&str>, have: &str| want.is_none_or(|w| w.eq_ignore_ascii_case(have));
    let filtered = !needle.is_empty() || status.is_some() || env_type.is_some();
    // Unfiltered, a page is a slice of the name order: nothing else is read.
    let found: Vec<&Item> = if filtered {
        view.items()
            .filter(|i| {
                exact(status, i.status.as_str())
                    && exact(env_type, &i.env_type)
                    && matches(i, &needle)
            })
            .collect()
    } else {
        Vec::new()
    };
    let total = if filtered {
        found.len()
    } else {
        view.environments.len()
    };
    let pages = total.div_ceil(ROWS).max(1);
    let page = query
        .page
        .as_deref()
        .and_then(|p| p.trim().parse::<usize>().ok())
        .unwrap_or(1)
        .clamp(1, pages);
    let first = (page - 1) * ROWS;
    let rows: Vec<&Item> = if filtered {
        found.iter().skip(first).take(ROWS).copied().collect()
    } else {
        view.items().skip(first).take(ROWS).collect()
    };
    if cut {
        let _ = write!(
            html,
            "<p class=\"muted\">The search is cut to its first {QUERY_MAX} characters.</p>"
        );
    }
    if filtered {
        matched(html, view, total, status, env_type, &q);
    }
    if total > rows.len() {
        let _ = write!(
            html,
            "<p>Showing {}–{} of {}; {} more not shown.</p>",
            first + 1,
            first + rows.len(),
            total,
            total - rows.len()
        );
    }
    html.push_str(concat!(
        "<div class=\"wrap\"><table class=\"cards\"><thead><tr><th>name</th><th>type</th><th>pool</th>",
        "<th>owner</th><th>status</th><th>why</th><th>expires</th></tr></thead><tbody>"
    ));
    for item in &rows {
        row(html, item, now);
    }
    html.push_str("</tbody></table></div>");
    if total == 0 {
        html.push_str("<p>No environment matches.</p>");
    }
    pager(html, page, pages, &q, status, env_type);
}

fn row(html: &mut String, item: &Item, now: chrono::DateTime<chrono::Utc>) {
    let (classes, words) = marks(item);
    let _ = write!(
        html,
        concat!(
            "<tr class=\"{}\"><td data-label=\"name\"><a href=\"/environments/{}\"><code>{}</code></a></td>",
            "<td data-label=\"type\">{}</td><td data-label=\"pool\">{}</td><td data-label=\"owner\">{}</td>",
            "<td data-label=\"status\" class=\"nw\">"
        ),
        classes.join(" "),
        encode(&item.name),
        escape(&item.name),
        escape(&item.env_type),
        escape(&item.pool),
        escape(&item.owner),
    );
    status_words(html, item, &words);
    html.push_str("</td><td data-label=\"why\" class=\"why\">");
    reasons(html, item);
    let _ = write!(
        html,
        "</td><td data-label=\"expires\" class=\"nw\">{}</td></tr>",
        if item.expires_at.is_some() {
            escape(&countdown(item.expires_at.as_deref(), now))
        } else {
            "never".to_owned()
        },
    );
}

/// The status word, and the marks (`Stalled`, `Drifted`) as badges: a
/// marked status is itself a badge, a mark the status does not say follows it.
fn status_words(html: &mut String, item: &Item, words: &[&str]) {
    let status = escape(item.status.as_str());
    if words.contains(&item.status.as_str()) {
        let _ = write!(html, "<span class=\"badge {status}\">{status}</span>");
    } else {
        let _ = write!(html, "<span class=\"{status}\">{status}</span>");
    }
    for word in words.iter().filter(|w| **w != item.status.as_str()) {
        let _ = write!(html, " <span class=\"badge {word}\">{word}</span>");
    }
}

/// An environment's reasons: each problem condition (and `Ready` when it is
/// not ready) as reason and short message; a ready one's `Ready` reason alone.
fn reasons(html: &mut String, item: &Item) {
    let mut any = false;
    for c in &item.conditions {
        let problem = c.kind != ConditionType::Ready && c.status;
        let not_ready = c.kind == ConditionType::Ready && !c.status;
        if !(problem || not_ready) {
            continue;
        }
        if any {
            html.push_str("<br>");
        }
        any = true;
        let _ = write!(
            html,
            "<strong>{}</strong>: {}",
            escape(c.reason.as_str()),
            escape(&short(&c.message, SHORT))
        );
    }
    if !any {
        let reason = item.conditions.first().map(|c| c.reason.as_str());
        let _ = write!(
            html,
            "<small>{}</small>",
            escape(reason.unwrap_or_default())
        );
    }
}

fn sources_section(html: &mut String, view: &View) {
    html.push_str(concat!(
        "<h2 id=\"sources\">Sources</h2><div class=\"wrap\"><table class=\"cards\"><thead><tr>",
        "<th>name</th><th>kind</th><th>ready</th><th>revision</th><th>files</th>",
        "<th>last read</th><th>errors</th><th>last error</th></tr></thead><tbody>"
    ));
    for s in sources(view) {
        let _ = write!(
            html,
            concat!(
                "<tr class=\"{}\"><td data-label=\"name\"><code>{}</code></td><td data-label=\"kind\">{}</td>",
                "<td data-label=\"ready\" class=\"nw {}\">{}</td><td data-label=\"revision\"><code>{}</code></td>",
                "<td data-label=\"files\">{}</td><td data-label=\"last read\" class=\"nw\">{}</td>",
                "<td data-label=\"errors\">{}</td><td data-label=\"last error\" class=\"why\">{}</td></tr>"
            ),
            if s.ready { "" } else { "refused" },
            escape(&s.name),
            escape(&s.kind),
            if s.ready { "yes" } else { "no" },
            if s.ready {
                "ready"
            } else {
                "<span class=\"badge\">not ready</span>"
            },
            escape(&short(s.revision.as_deref().unwrap_or("—"), 16)),
            s.files,
            escape(s.last_success.as_deref().unwrap_or("never")),
            s.errors,
            s.last_error.as_ref().map_or_else(String::new, |e| format!(
                "<strong>{}</strong>: {}",
                escape(&e.reason),
                escape(&short(&e.message, SHORT * 2))
            )),
        );
    }
    html.push_str("</tbody></table></div>");
    refused_files_section(html, &sources(view));
}

/// Files refused before they named a valid environment, by source: they
/// have no environment row, so they are listed here by file.
fn refused_files_section(html: &mut String, sources: &[Source<'_>]) {
    let total: usize = sources.iter().map(|s| s.refused_files_total).sum();
    if total == 0 {
        return;
    }
    let _ = write!(
        html,
        concat!(
            "<h2 id=\"refused-files\">Refused files</h2><p class=\"muted\">{} file(s) refused before they named a valid environment.</p>",
            "<div class=\"wrap\"><table class=\"cards\"><thead><tr><th>source</th><th>file</th><th>at</th><th>rule</th><th>problem</th></tr></thead><tbody>"
        ),
        total
    );
    for s in sources {
        for f in &s.refused_files {
            let _ = write!(
                html,
                concat!(
                    "<tr class=\"refused\"><td data-label=\"source\"><code>{}</code></td><td data-label=\"file\"><code>{}</code></td>",
                    "<td data-label=\"at\"><code>{}</code></td><td data-label=\"rule\">{}</td><td data-label=\"problem\" class=\"why\">{}</td></tr>"
                ),
                escape(&s.name),
                escape(&f.path),
                escape(&f.pointer),
                escape(&f.rule),
                escape(&short(&f.message, SHORT * 2)),
            );
        }
        let hidden = s.refused_files_total.saturating_sub(s.refused_files.len());
        if hidden > 0 {
            let _ = write!(
                html,
                "<tr><td colspan=\"5\">{}: {hidden} more not shown</td></tr>",
                escape(&s.name)
            );
        }
    }
    html.push_str("</tbody></table></div>");
}

fn events_table(html: &mut String, events: &[&Event<'_>], total: usize) {
    if events.is_empty() {
        html.push_str("<p>No events yet.</p>");
        return;
    }
    let _ = write!(
        html,
        "<p class=\"muted\">The last {} of {} kept, newest first (<a href=\"/api/v1/events\">all as JSON</a>).</p>",
        events.len(),
        total
    );
    html.push_str(concat!(
        "<div class=\"wrap\"><table class=\"cards\"><thead><tr><th>time</th><th>type</th>",
        "<th>reason</th><th>environment</th><th>message</th></tr></thead><tbody>"
    ));
    for e in events {
        let _ = write!(
            html,
            concat!(
                "<tr><td data-label=\"time\" class=\"nw\">{}</td><td data-label=\"type\" class=\"nw {}\">{}</td>",
                "<td data-label=\"reason\" class=\"nw\">{}</td><td data-label=\"environment\">{}</td>",
                "<td data-label=\"message\" class=\"why\">{}</td></tr>"
            ),
            escape(&e.time),
            if e.kind == "Warning" { "Warning" } else { "" },
            escape(&e.kind),
            escape(&e.reason),
            e.environment
                .as_deref()
                .map_or_else(String::new, |n| format!(
                    "<a href=\"/environments/{}\"><code>{}</code></a>",
                    encode(n),
                    escape(n)
                )),
            escape(&short(&e.message, SHORT * 2)),
        );
    }
    html.push_str("</tbody></table></div>");
}

/// When a condition's state began, as far as the history tells: the oldest
/// of the newest entries that have the environment's status and the
/// condition's reason.
fn since<'a>(
    history: impl IntoIterator<Item = &'a HistoryEntry>,
    status: Status,
    reason: crate::condition::Reason,
) -> Option<&'a str> {
    let mut at = None;
    for h in history {
        if h.status != status || h.reason != reason {
            break;
        }
        at = Some(h.time.as_str());
    }
    at
}

/// One environment's page: facts, conditions with their times, drift
/// findings, versions, last plan, history and its events.
#[must_use]
pub fn environment_page(
    view: &View,
    env: &EnvStatus,
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    let item = &env.item;
    let mut html = String::with_capacity(8192);
    head(&mut html, &format!("{} · converge", item.name));
    let (classes, words) = marks(item);
    let _ = write!(
        html,
        "<p><a href=\"/\">all environments</a></p><h1><code>{}</code> ",
        escape(&item.name),
    );
    status_words(&mut html, item, &words);
    let _ = write!(
        html,
        "</h1><div class=\"{}\"><dl><dt>type</dt><dd>{}</dd><dt>pool</dt><dd>{}</dd><dt>owner</dt><dd>{}</dd>",
        classes.join(" "),
        escape(&item.env_type),
        escape(&item.pool),
        escape(&item.owner)
    );
    let _ = write!(
        html,
        "<dt>source</dt><dd><code>{}</code></dd><dt>revision</dt><dd><code>{}</code></dd>",
        escape(item.source.as_deref().unwrap_or("—")),
        escape(item.revision.as_deref().unwrap_or("—"))
    );
    if let Some(p) = &env.provenance {
        let said = match p {
            crate::source::Provenance::Git {
                commit,
                branch,
                author,
                ..
            } => format!(
                "commit {} on {branch} by {}",
                short(commit, 12),
                author.name
            ),
            crate::source::Provenance::S3 {
                bucket, key, etag, ..
            } => format!("s3://{bucket}/{key} (ETag {etag})"),
        };
        let _ = write!(html, "<dt>from</dt><dd>{}</dd>", escape(&said));
    }
    let _ = write!(
        html,
        "<dt>expires</dt><dd>{}</dd><dt>as of</dt><dd>pass {}; shown at {}</dd></dl></div>",
        item.expires_at.as_deref().map_or_else(
            || "never".to_owned(),
            |at| format!("{} ({})", escape(at), escape(&countdown(Some(at), now)))
        ),
        view.pass,
        now.format("%Y-%m-%dT%H:%M:%SZ")
    );

    conditions(&mut html, view, env);
    drift(&mut html, item);
    versions_and_plan(&mut html, env);
    history(&mut html, env);
    html.push_str("<h2 id=\"events\">Events</h2>");
    let events = events(view);
    let mine: Vec<&Event<'_>> = events
        .iter()
        .filter(|e| e.environment.as_deref() == Some(item.name.as_str()))
        .collect();
    let total = mine.len();
    events_table(&mut html, &mine[..total.min(ENVIRONMENT_EVENTS)], total);
    html.push_str("</body></html>\n");
    html
}

/// An environment's conditions, each with since when (from its history).
fn conditions(html: &mut String, view: &View, env: &EnvStatus) {
    let item = &env.item;
    html.push_str(concat!(
        "<h2 id=\"conditions\">Conditions</h2><div class=\"wrap\"><table class=\"cards\"><thead><tr>",
        "<th>type</th><th>status</th><th>reason</th><th>since</th><th>message</th></tr></thead><tbody>"
    ));
    for c in &item.conditions {
        let marked = match c.kind {
            ConditionType::Stalled if c.status => "stalled",
            ConditionType::Drifted if c.status => "drifted",
            ConditionType::Ready if !c.status => "refused",
            _ => "",
        };
        let at = since(&env.history, item.status, c.reason);
        let _ = write!(
            html,
            concat!(
                "<tr class=\"{}\"><td data-label=\"type\">{}</td><td data-label=\"status\">{}</td>",
                "<td data-label=\"reason\"><strong>{}</strong></td><td data-label=\"since\" class=\"nw\">{}</td>",
                "<td data-label=\"message\" class=\"why\">{}</td></tr>"
            ),
            marked,
            escape(c.kind.as_str()),
            if c.status { "True" } else { "False" },
            escape(c.reason.as_str()),
            at.map_or_else(
                || format!("<small>seen in pass {}</small>", view.pass),
                escape
            ),
            escape(&c.message),
        );
    }
    html.push_str("</tbody></table></div>");
}

/// The drifted objects, one a line (the `Drifted` message names one per `; `).
fn drift(html: &mut String, item: &Item) {
    let drift: Vec<&str> = item
        .conditions
        .iter()
        .filter(|c| c.kind == ConditionType::Drifted && c.status)
        .flat_map(|c| c.message.split("; "))
        .collect();
    html.push_str("<h2 id=\"drift\">Drift</h2>");
    if drift.is_empty() {
        html.push_str("<p>No drift found: the objects are as converge applied them (or the target does not watch them).</p>");
    } else {
        let _ = write!(
            html,
            "<p class=\"Drifted\"><span class=\"badge\">Drifted</span> {} objects changed by someone else since converge applied them:</p><ul class=\"drift\">",
            drift.len()
        );
        for d in drift {
            let _ = write!(html, "<li><code>{}</code></li>", escape(d));
        }
        html.push_str("</ul>");
    }
}

/// The resolved versions and the last plan.
fn versions_and_plan(html: &mut String, env: &EnvStatus) {
    html.push_str("<h2 id=\"versions\">Versions</h2>");
    if env.versions().is_empty() {
        html.push_str("<p>None resolved.</p>");
    } else {
        html.push_str(concat!(
            "<div class=\"wrap\"><table><thead><tr><th>service</th><th>tag</th><th>constraint</th>",
            "<th>dependency of</th><th>manifests</th></tr></thead><tbody>"
        ));
        for (service, r) in env.versions() {
            let manifests = env.manifests.get(service).map_or_else(String::new, |m| {
                format!(
                    "<code>{}</code> <code>{}</code>{}",
                    escape(&m.reference),
                    escape(&m.digest),
                    if m.source.is_empty() {
                        String::new()
                    } else {
                        format!(" from <code>{}</code>", escape(&m.source))
                    }
                )
            });
            let _ = write!(
                html,
                "<tr><td><code>{}</code></td><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td>{manifests}</td></tr>",
                escape(service),
                escape(&r.tag),
                escape(&r.constraint),
                escape(&r.dependency_of.join(", "))
            );
        }
        html.push_str("</tbody></table></div>");
    }

    html.push_str("<h2 id=\"plan\">Last plan</h2>");
    match &env.last_plan {
        None => html.push_str("<p>No change planned since converge started keeping it.</p>"),
        Some(p) => {
            let _ = write!(
                html,
                "<p>{} ({}): {} objects to create, {} to update, {} to delete{}.</p>",
                escape(&format!("{:?}", p.change).to_lowercase()),
                escape(p.reason.as_str()),
                p.creates,
                p.updates,
                p.deletes,
                if p.secrets.is_empty() {
                    String::new()
                } else {
                    format!("; {} secret values change", p.secrets.len())
                }
            );
            if !p.versions.is_empty() || !p.manifests.is_empty() {
                html.push_str("<ul>");
                let lines = p
                    .versions
                    .iter()
                    .map(ToString::to_string)
                    .chain(p.manifests.iter().map(ToString::to_string));
                for v in lines {
                    let _ = write!(html, "<li><code>{}</code></li>", escape(&v));
                }
                html.push_str("</ul>");
            }
        }
    }
}

/// What each pass that changed it said.
fn history(html: &mut String, env: &EnvStatus) {
    html.push_str("<h2 id=\"history\">History</h2>");
    if env.history.is_empty() {
        html.push_str("<p>None yet.</p>");
    } else {
        html.push_str(concat!(
            "<div class=\"wrap\"><table><thead><tr><th>pass</th><th>time</th><th>status</th>",
            "<th>reason</th></tr></thead><tbody>"
        ));
        for h in &env.history {
            let _ = write!(
                html,
                "<tr><td>{}</td><td class=\"nw\">{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
                h.pass,
                escape(&h.time),
                escape(h.status.as_str()),
                escape(h.status.as_str()),
                escape(h.reason.as_str())
            );
        }
        html.push_str("</tbody></table></div>");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;

    fn now() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .expect("time")
            .to_utc()
    }

    /// An environment as the state store would restore it.
    fn env(
        name: &str,
        owner: &str,
        status: &str,
        conditions: &serde_json::Value,
    ) -> Arc<EnvStatus> {
        let detail = serde_json::json!({
            "name": name, "type": "dev", "pool": "team1", "owner": owner,
            "source": format!("local:claims/{name}.yaml"), "revision": null,
            "ready": status == "Ready", "status": status, "expires_at": null,
            "conditions": conditions, "claim": null, "provenance": null,
            "versions": {"user-service": {"tag": "v1.2.3", "constraint": "^1.2"}},
            "last_plan": null, "inventory": [],
            "history": [
                {"pass": 3, "time": "2026-01-01T00:03:00Z", "status": status, "reason": conditions[0]["reason"]},
                {"pass": 2, "time": "2026-01-01T00:02:00Z", "status": status, "reason": conditions[0]["reason"]},
                {"pass": 1, "time": "2026-01-01T00:01:00Z", "status": "Ready", "reason": "Applied"},
            ],
        });
        Arc::new(
            EnvStatus::restored(&serde_json::to_vec(&detail).expect("json")).expect("restored"),
        )
    }

    fn view(envs: Vec<Arc<EnvStatus>>, events: &serde_json::Value) -> View {
        let map: BTreeMap<String, Arc<EnvStatus>> =
            envs.into_iter().map(|e| (e.item.name.clone(), e)).collect();
        let sources = vec![serde_json::json!({
            "name": "local", "kind": "dir", "revision": "abc", "files": 3, "ready": false,
            "last_success": "2026-01-01T00:00:00Z", "errors": 4,
            "last_error": {"reason": "SourceUnreadable", "message": "cannot read <dir>"},
            "next_poll_in_ms": 1000,
        })];
        View::new(Arc::new(map), &sources, None, events, true, 3)
    }

    fn ready() -> serde_json::Value {
        serde_json::json!([{"type": "Ready", "status": "True", "reason": "Applied", "message": "applied"}])
    }

    fn stalled() -> serde_json::Value {
        serde_json::json!([
            {"type": "Ready", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "Stalled: see the Stalled condition"},
            {"type": "Stalled", "status": "True", "reason": "ProgressDeadlineExceeded", "message": "Deployment/user-service not available"},
        ])
    }

    fn drifted() -> serde_json::Value {
        serde_json::json!([
            {"type": "Ready", "status": "True", "reason": "Unchanged", "message": "up to date"},
            {"type": "Drifted", "status": "True", "reason": "Drifted", "message": "Deployment/a edited: spec.replicas by kubectl; ConfigMap/b deleted"},
        ])
    }

    fn hostile() -> serde_json::Value {
        serde_json::json!([
            {"type": "Ready", "status": "False", "reason": "ClaimInvalid", "message": "the environment is left as it is"},
            {"type": "Invalid", "status": "True", "reason": "ClaimInvalid", "message": "bad <script>alert(1)</script> & \"quotes\""},
        ])
    }

    #[test]
    fn countdown_reads_like_a_person_would_say_it() {
        assert_eq!(countdown(Some("2026-01-01T03:12:00Z"), now()), "in 3h 12m");
        assert_eq!(countdown(Some("2026-01-03T01:00:00Z"), now()), "in 2d 1h");
        assert_eq!(
            countdown(Some("2025-12-31T23:55:00Z"), now()),
            "expired 5m ago"
        );
        assert_eq!(countdown(None, now()), "");
    }

    #[test]
    fn html_is_escaped_and_links_are_encoded() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(encode("a b&c/<é>"), "a%20b%26c%2F%3C%C3%A9%3E");
    }

    #[test]
    fn hostile_names_messages_and_owners_are_text_on_both_pages() {
        let bad = env(
            "dev-bad",
            "<img src=x onerror=alert(1)>",
            "Invalid",
            &hostile(),
        );
        let v = view(
            vec![bad.clone()],
            &serde_json::json!([{"id": 1, "time": "t", "pass": 1, "type": "Warning",
                "reason": "<b>r</b>", "environment": "dev-bad", "message": "<script>x</script>"}]),
        );
        let q = Query {
            q: Some("\"><script>alert(2)</script>".into()),
            page: None,
            ..Query::default()
        };
        for html in [
            status_page(&v, &Query::default(), now()),
            status_page(&v, &q, now()),
            environment_page(&v, &bad, now()),
        ] {
            assert!(!html.contains("<script"), "{html}");
            assert!(!html.contains("<img"), "{html}");
            assert!(!html.contains("<b>r"), "{html}");
            assert!(
                html.contains("&lt;img src=x onerror=alert(1)&gt;") || html.contains("0 of 1"),
                "{html}"
            );
        }
        let html = status_page(&v, &q, now());
        assert!(
            html.contains("value=\"&quot;&gt;&lt;script&gt;alert(2)&lt;/script&gt;\""),
            "{html}"
        );
    }

    #[test]
    fn stalled_and_drifted_rows_are_marked_by_class_and_word() {
        let v = view(
            vec![
                env("dev-ok", "a@b.c", "Ready", &ready()),
                env("dev-stuck", "a@b.c", "Stalled", &stalled()),
                env("dev-drift", "a@b.c", "Ready", &drifted()),
            ],
            &serde_json::json!([]),
        );
        let html = status_page(&v, &Query::default(), now());
        let row = |name: &str| {
            let at = html.find(&format!("/environments/{name}\"")).expect("row");
            let start = html[..at].rfind("<tr").expect("tr");
            let end = at + html[at..].find("</tr>").expect("/tr");
            html[start..end].to_owned()
        };
        let stuck = row("dev-stuck");
        assert!(stuck.starts_with("<tr class=\"stalled\""), "{stuck}");
        assert!(
            stuck.contains("<span class=\"badge Stalled\">Stalled</span>"),
            "{stuck}"
        );
        assert!(
            stuck.contains(
                "<strong>ProgressDeadlineExceeded</strong>: Deployment/user-service not available"
            ),
            "{stuck}"
        );
        let drift = row("dev-drift");
        assert!(drift.starts_with("<tr class=\"drifted\""), "{drift}");
        assert!(
            drift.contains("<span class=\"badge Drifted\">Drifted</span>"),
            "{drift}"
        );
        let ok = row("dev-ok");
        assert!(ok.starts_with("<tr class=\"\""), "{ok}");
        assert!(
            html.contains("1 stalled</a>") && html.contains("1 drifted</a>"),
            "{html}"
        );

        let page = environment_page(&v, &v.environments["dev-drift"], now());
        assert!(
            page.contains("<li><code>Deployment/a edited: spec.replicas by kubectl</code></li>"),
            "{page}"
        );
        assert!(
            page.contains("<li><code>ConfigMap/b deleted</code></li>"),
            "{page}"
        );
        let page = environment_page(&v, &v.environments["dev-stuck"], now());
        // Stalled since the oldest of the newest history entries saying so.
        assert!(page.contains("2026-01-01T00:02:00Z</td>"), "{page}");
        assert!(page.contains("<code>v1.2.3</code>"), "{page}");
    }

    #[test]
    fn the_page_counts_by_status_and_type_and_filters_by_them_exactly() {
        let v = view(
            vec![
                env("dev-ok", "ann@x.io", "Ready", &ready()),
                env("dev-stuck", "bob@x.io", "Stalled", &stalled()),
                env("dev-drift", "cy@x.io", "Ready", &drifted()),
            ],
            &serde_json::json!([]),
        );
        let html = status_page(&v, &Query::default(), now());
        assert!(
            html.contains(concat!(
                "By status: <a class=\"Ready\" href=\"/?status=Ready\">Ready 2</a>, ",
                "<a class=\"Stalled\" href=\"/?status=Stalled\">Stalled 1</a>. ",
                "By type: <a href=\"/?type=dev\">dev 3</a>."
            )),
            "{html}"
        );
        let stalled = status_page(
            &v,
            &Query {
                status: Some("stalled".into()),
                ..Query::default()
            },
            now(),
        );
        assert!(
            stalled.contains("1 of 3 environments match status stalled."),
            "{stalled}"
        );
        assert!(stalled.contains("dev-stuck") && !stalled.contains("/environments/dev-ok"));
    }

    #[test]
    fn the_search_matches_name_type_pool_owner_and_reason_ignoring_case() {
        let v = view(
            vec![
                env("dev-ok", "ann@x.io", "Ready", &ready()),
                env("dev-stuck", "bob@x.io", "Stalled", &stalled()),
                env("dev-drift", "cy@x.io", "Ready", &drifted()),
            ],
            &serde_json::json!([]),
        );
        let names = |q: &str| -> Vec<String> {
            v.items()
                .filter(|i| matches(i, &q.to_lowercase()))
                .map(|i| i.name.clone())
                .collect()
        };
        assert_eq!(names("STUCK"), ["dev-stuck"]);
        assert_eq!(names("ANN@"), ["dev-ok"]);
        assert_eq!(names("progressdeadline"), ["dev-stuck"]);
        assert_eq!(names("drifted"), ["dev-drift"]);
        assert_eq!(
            names("ready"),
            ["dev-drift", "dev-ok"],
            "the status, not the Ready type"
        );
        assert_eq!(names("TEAM1").len(), 3);
        assert_eq!(names("Dev").len(), 3);
        assert!(names("nothing").is_empty());
        let long = "x".repeat(QUERY_MAX + 50);
        let html = status_page(
            &v,
            &Query {
                q: Some(long),
                page: None,
                ..Query::default()
            },
            now(),
        );
        assert!(html.contains("cut to its first 100 characters"), "{html}");
        assert!(
            html.contains(&format!("value=\"{}\"", "x".repeat(QUERY_MAX))),
            "{html}"
        );
    }

    #[test]
    fn a_long_list_is_paged_and_says_how_many_are_not_shown() {
        let envs: Vec<Arc<EnvStatus>> = (0..ROWS + 50)
            .map(|i| env(&format!("dev-{i:04}"), "a@b.c", "Ready", &ready()))
            .collect();
        let v = view(envs, &serde_json::json!([]));
        let first = status_page(&v, &Query::default(), now());
        assert_eq!(
            first.matches("<tr class=").count() - 1,
            ROWS,
            "rows plus the source's"
        );
        assert!(
            first.contains("Showing 1–200 of 250; 50 more not shown."),
            "{first}"
        );
        assert!(
            first.contains("<a href=\"/?page=2\">next page</a>"),
            "{first}"
        );
        let second = status_page(
            &v,
            &Query {
                q: Some("dev".into()),
                page: Some("2".into()),
                ..Query::default()
            },
            now(),
        );
        assert!(
            second.contains("Showing 201–250 of 250; 200 more not shown."),
            "{second}"
        );
        assert!(
            second.contains("<a href=\"/?page=1&amp;q=dev\">previous page</a>"),
            "{second}"
        );
        // Past the end or unreadable: the nearest page.
        let last = status_page(
            &v,
            &Query {
                q: None,
                page: Some("99".into()),
                ..Query::default()
            },
            now(),
        );
        assert!(last.contains("page 2 of 2"), "{last}");
        let bad = status_page(
            &v,
            &Query {
                q: None,
                page: Some("-1".into()),
                ..Query::default()
            },
            now(),
        );
        assert!(bad.contains("page 1 of 2"), "{bad}");
    }

    #[test]
    fn sources_show_health_and_events_newest_first() {
        let v = view(
            vec![env("dev-ok", "a@b.c", "Ready", &ready())],
            &serde_json::json!(
                (0..30)
                    .rev()
                    .map(
                        |i| serde_json::json!({"id": i, "time": format!("t{i:02}"), "pass": i,
                "type": "Normal", "reason": "Applied", "environment": "dev-ok", "message": "m"})
                    )
                    .collect::<Vec<_>>()
            ),
        );
        let html = status_page(&v, &Query::default(), now());
        assert!(
            html.contains("<span class=\"badge\">not ready</span>"),
            "{html}"
        );
        assert!(
            html.contains("<strong>SourceUnreadable</strong>: cannot read &lt;dir&gt;"),
            "{html}"
        );
        assert!(html.contains("The last 20 of 30 kept"), "{html}");
        assert!(
            html.find("t29").expect("newest") < html.find("t28").expect("next"),
            "{html}"
        );
        assert!(!html.contains(">t09<"), "{html}");
    }
}
