//! The git source's pure parts: classification, sanitizing, trailers, globs.

use super::*;

fn gix_error(kind: std::io::ErrorKind, text: &str) -> gix::Error {
    gix::Error::from_error(std::io::Error::new(kind, text.to_owned()))
}

#[test]
fn transport_failures_are_classified_by_type_not_text() {
    use std::io::ErrorKind as K;
    let refused = gix::Error::from_error(std::io::Error::new(
        K::PermissionDenied,
        gix::protocol::transport::client::AuthenticationRequired::default(),
    ));
    assert_eq!(Failure::of(&refused), Failure::AuthFailed, "401");
    let ssh = gix_error(
        K::PermissionDenied,
        "git@host: Permission denied (publickey).",
    );
    assert_eq!(Failure::of(&ssh), Failure::AuthFailed, "ssh");
    let nested = gix::Error::from_error(gix::protocol::transport::client::Error::Io(
        std::io::Error::from(K::TimedOut),
    ));
    assert_eq!(
        Failure::of(&nested),
        Failure::Timeout,
        "a nested I/O timeout"
    );
    let refused = gix_error(K::ConnectionRefused, "connection refused");
    assert_eq!(Failure::of(&refused), Failure::Unreachable);
    // Text that only looks like an auth failure or a missing repository is neither.
    let author = gix_error(
        K::Other,
        "the author of 401 commits was not found: credential timeout",
    );
    assert_eq!(Failure::of(&author), Failure::Unreachable);
}

#[test]
fn errors_about_a_url_with_credentials_never_show_them() {
    let url = "https://ci:s3cret-token@git.example.com/envs.git?key=abcd1234";
    let error = gix_error(
        std::io::ErrorKind::Other,
        &format!("cannot fetch {url}: ci:s3cret-token@ and s3cret-token and key=abcd1234"),
    );
    let cause = Cause::new(error, url);
    let text = cause.to_string();
    assert!(
        !text.contains("s3cret-token") && !text.contains("abcd1234"),
        "{text}"
    );
    assert!(text.contains("https://git.example.com/envs.git"), "{text}");
    assert!(
        std::error::Error::source(&cause).is_none(),
        "the unsanitized error is not kept"
    );
    let clean = Cause::new(
        gix_error(std::io::ErrorKind::Other, "refused"),
        "https://git.example.com/envs.git",
    );
    assert!(
        std::error::Error::source(&clean).is_some(),
        "with nothing to hide, the error is kept as the source"
    );
}

#[test]
fn trailers_come_from_the_last_paragraph() {
    let t = trailers(
        "Add prod env\n\nLong text: here\n\nReviewed-by: A <a@x>\nApproved-by: B <b@x>\nApproved-by: C <c@x>\n",
    );
    assert_eq!(t["Approved-by"], ["B <b@x>", "C <c@x>"]);
    assert_eq!(t["Reviewed-by"], ["A <a@x>"]);
    assert!(trailers("Subject only: not a trailer\n").is_empty());
    assert!(trailers("Subject\n\nplain body\n").is_empty());
}

#[test]
fn globs_select_claim_files() {
    let set = glob_set(&["environments/**/*.yaml".to_owned()]).expect("globs");
    assert!(set.is_match("environments/team1/dev.yaml"));
    assert!(!set.is_match("other/dev.yaml"));
}
