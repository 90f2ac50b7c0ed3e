//! `/api/v1/environments` paged and filtered through the real binary
//! (issue 26.5): a few hundred environments read page by page with the
//! `continue` token, a token that stays valid while the list changes,
//! filters combined, bad tokens and limits refused in words, and
//! `converge status` and the status page over the same list.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::support::daemon::Daemon;
use crate::support::{Project, claim, stdout};

const N: usize = 300;

fn name(i: usize) -> String {
    format!("dev-team1-{i:03}")
}

/// Claim `i`: every third one owned by ops, odd ones at v1.2.4, every fifth
/// one expiring (in March 2099 when `i` is below 150, in 2100 otherwise).
fn claim_of(i: usize) -> String {
    let mut c = claim(&name(i), "dev");
    if i.is_multiple_of(3) {
        c = c.replace("john.doe@company.com", "ops@company.com");
    }
    if !i.is_multiple_of(2) {
        c = c.replace("v1.2.3", "v1.2.4");
    }
    if i.is_multiple_of(5) {
        let at = if i < 150 {
            "2099-03-01T00:00:00Z"
        } else {
            "2100-03-01T00:00:00Z"
        };
        c = c.replace(
            "expiration_date: null",
            &format!("expiration_date: \"{at}\""),
        );
    }
    c
}

fn names_of(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["name"].as_str().expect("name").to_owned())
        .collect()
}

fn started() -> (Project, Daemon) {
    let p = Project::new("state_dir: .converge\n");
    for i in 0..N {
        p.write(&format!("claims/{}.yaml", name(i)), claim_of(i));
    }
    let d = Daemon::start(p.dir.path());
    d.wait_for("ready", |d| d.get("/ready").0 == 200);
    (p, d)
}

/// The names `filters` select, read page after page.
fn selected(d: &Daemon, filters: &str) -> BTreeSet<String> {
    d.items(filters)
        .iter()
        .map(|i| i["name"].as_str().expect("name").to_owned())
        .collect()
}

fn expected(pick: impl Fn(usize) -> bool) -> BTreeSet<String> {
    (0..N).filter(|i| pick(*i)).map(name).collect()
}

#[test]
fn a_few_hundred_environments_are_read_page_by_page_in_name_order_and_filters_combine() {
    let (p, d) = started();
    // Without a limit: the default page (500) holds all 300, no token.
    let all = d.json("/api/v1/environments");
    assert_eq!(names_of(&all).len(), N);
    assert!(
        all.get("continue").is_none(),
        "one page: {}",
        all["continue"]
    );

    // 70 a page: 5 pages, names in order, each once, the last without a token.
    let mut seen = Vec::new();
    let mut path = "/api/v1/environments?limit=70".to_owned();
    let mut pages = 0;
    loop {
        let page = d.json(&path);
        pages += 1;
        let names = names_of(&page);
        assert!(names.len() <= 70);
        seen.extend(names);
        match page["continue"].as_str() {
            Some(token) => {
                assert!(!token.contains("dev-team1"), "opaque: {token}");
                path = format!("/api/v1/environments?limit=70&continue={token}");
            }
            None => break,
        }
    }
    assert_eq!(pages, 5);
    let want: Vec<String> = (0..N).map(name).collect();
    assert_eq!(seen, want, "every environment once, in name order");

    // Filters combine, across pages.
    assert_eq!(
        selected(&d, "owner=OPS@company.com&version=v1.2.4&limit=7"),
        expected(|i| i.is_multiple_of(3) && !i.is_multiple_of(2))
    );
    assert_eq!(
        selected(
            &d,
            "service=user-service&version=v1.2.3&expiring_before=2099-06-01T00:00:00Z&limit=4"
        ),
        expected(|i| i.is_multiple_of(2) && i.is_multiple_of(5) && i < 150)
    );
    assert_eq!(
        selected(&d, "expiring_before=2100-06-01T02:00:00%2B02:00"),
        expected(|i| i.is_multiple_of(5))
    );
    assert_eq!(
        selected(&d, "q=TEAM1-02&type=dev&status=Ready&pool=team1&limit=3"),
        expected(|i| (20..30).contains(&i))
    );
    assert_eq!(selected(&d, "service=no-such-service"), BTreeSet::new());
    assert_eq!(selected(&d, "version=v9.9.9"), BTreeSet::new());
    let five = d.json("/api/v1/environments?type=dev&status=ready&limit=5");
    assert_eq!(names_of(&five), (0..5).map(name).collect::<Vec<_>>());
    assert!(five["continue"].is_string());

    // `converge status` reads the whole list, and so does `--json`.
    let addr = format!("http://{}", d.addr);
    let out = p.run(&["status", "--url", &addr]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let table = stdout(&out);
    assert_eq!(
        table
            .lines()
            .filter(|l| l.starts_with("dev-team1-"))
            .count(),
        N
    );
    let out = p.run(&["status", "--url", &addr, "--format", "json"]);
    let json: Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(names_of(&json).len(), N);

    // The status page counts them by status and type, each a link.
    let (status, html) = d.get("/");
    assert_eq!(status, 200);
    assert!(
        html.contains("By status: <a class=\"Ready\" href=\"/?status=Ready\">Ready 300</a>"),
        "{html}"
    );
    assert!(
        html.contains("By type: <a href=\"/?type=dev\">dev 300</a>"),
        "{html}"
    );
    let (_, filtered) = d.get("/?type=DEV&status=Ready&q=team1-1");
    assert!(
        filtered.contains(
            "100 of 300 environments match status Ready and type DEV and <q>team1-1</q>."
        ),
        "{filtered}"
    );
}

#[test]
fn a_continue_token_stays_valid_while_the_list_changes() {
    let (p, d) = started();
    let first = d.json("/api/v1/environments?limit=100");
    let first_names = names_of(&first);
    assert_eq!(
        first_names.last().map(String::as_str),
        Some("dev-team1-099")
    );
    let token = first["continue"].as_str().expect("more").to_owned();

    // Between the pages: one added before the token's place, one after it,
    // and one removed after it; the daemon passes and swaps its view.
    p.write("claims/dev-team1-000a.yaml", claim("dev-team1-000a", "dev"));
    p.write("claims/dev-team1-150a.yaml", claim("dev-team1-150a", "dev"));
    p.remove("claims/dev-team1-200.yaml");
    d.wait_for("the change served", |d| {
        let names = d.names();
        names.contains(&"dev-team1-150a".to_owned())
            && names.contains(&"dev-team1-000a".to_owned())
            && !names.contains(&"dev-team1-200".to_owned())
    });

    let mut rest = Vec::new();
    let mut path = format!("/api/v1/environments?limit=100&continue={token}");
    loop {
        let page = d.json(&path);
        rest.extend(names_of(&page));
        match page["continue"].as_str() {
            Some(t) => path = format!("/api/v1/environments?limit=100&continue={t}"),
            None => break,
        }
    }
    // The rest starts right after the first page's last name: nothing of
    // the first page again, the later addition in its place, the removed
    // one gone.
    assert_eq!(rest.first().map(String::as_str), Some("dev-team1-100"));
    assert!(rest.iter().all(|n| !first_names.contains(n)));
    assert!(rest.contains(&"dev-team1-150a".to_owned()));
    assert!(!rest.contains(&"dev-team1-000a".to_owned()));
    assert!(!rest.contains(&"dev-team1-200".to_owned()));
    assert_eq!(rest.len(), 200);
    let sorted = {
        let mut s = rest.clone();
        s.sort();
        s
    };
    assert_eq!(rest, sorted);
}

#[test]
fn bad_tokens_limits_and_times_are_400s_in_words() {
    let p = Project::new("");
    p.write("claims/a.yaml", claim("dev-a", "dev"));
    let d = Daemon::start(p.dir.path());
    d.wait_for("ready", |d| d.get("/ready").0 == 200);
    for (query, words) in [
        (
            "continue=%21%21",
            "continue: \"!!\" is not a token this API gave (an unknown format)",
        ),
        (
            "continue=n4",
            "continue: \"n4\" is not a token this API gave (not a position in the list)",
        ),
        (
            "limit=0",
            "limit: \"0\" is not a whole number from 1 to 5000",
        ),
        (
            "limit=-3",
            "limit: \"-3\" is not a whole number from 1 to 5000",
        ),
        (
            "limit=many",
            "limit: \"many\" is not a whole number from 1 to 5000",
        ),
        (
            "expiring_before=soon",
            "expiring_before: \"soon\" is not an RFC 3339 time",
        ),
    ] {
        let (status, body) = d.get(&format!("/api/v1/environments?{query}"));
        assert_eq!(status, 400, "{query}: {body}");
        let v: Value = serde_json::from_str(&body).expect("a JSON error");
        let error = v["error"].as_str().expect("error");
        assert!(error.starts_with(words), "{query}: {error}");
    }
    // A limit past the maximum is served as the maximum.
    let (status, body) = d.get("/api/v1/environments?limit=99999999999999999999999");
    assert_eq!(status, 200, "{body}");
}
