//! The plan comment on a pull request. Pure.
//!
//! One comment per pull request, source and status context, found again by
//! the hidden marker on its first line (`<!-- converge:plan source=…
//! context=… part=1 -->`) and edited on each new head. Its content is the
//! verdict (every problem of the changed claims) and the Markdown plan
//! (`converge plan --format markdown`, not cut short); a plan over the
//! forge's size limit is split over several comments (`part=2`, …), at
//! most [`MAX_PARTS`]. The plan shows secret values only by keyed
//! fingerprint, so no comment holds one.

use std::fmt::Write as _;

use super::verdict::{State, Verdict};

/// The most comments one plan is split over; past them the last one says
/// where to read the rest.
pub const MAX_PARTS: usize = 10;

/// What identifies converge's comment on a pull request: the source whose
/// plan it holds and the status context of the installation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker<'a> {
    pub source: &'a str,
    pub context: &'a str,
}

/// Room kept in each part for its marker and part line.
const OVERHEAD: usize = 512;

impl Marker<'_> {
    /// The hidden first line of part `part` (1-based).
    #[must_use]
    pub fn line(&self, part: usize) -> String {
        format!(
            "<!-- converge:plan source={} context={} part={part} -->",
            escape(self.source),
            escape(self.context)
        )
    }

    /// The part of the plan `body` holds, when it is one of this marker's
    /// comments (its first line is the marker).
    #[must_use]
    pub fn part_of(&self, body: &str) -> Option<usize> {
        let first = body.lines().next()?.trim_end();
        let rest = first.strip_prefix(&format!(
            "<!-- converge:plan source={} context={} part=",
            escape(self.source),
            escape(self.context)
        ))?;
        let part: usize = rest.strip_suffix(" -->")?.parse().ok()?;
        (1..=MAX_PARTS).contains(&part).then_some(part)
    }
}

/// A marker value with nothing that could end the HTML comment or the
/// field: any character outside `[A-Za-z0-9._/:@-]` as `%XX`.
fn escape(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"._/:@".contains(&b) {
            out.push(char::from(b));
        } else if b == b'-' {
            // `--` may not appear in an HTML comment.
            out.push_str(if out.ends_with('-') { "%2D" } else { "-" });
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// What a plan comment says beside the plan.
#[derive(Debug, Clone, Copy)]
pub struct Heading<'a> {
    /// The head commit the plan is for.
    pub head: &'a str,
    /// The commit it is compared with (the merge base).
    pub base: &'a str,
    pub verdict: &'a Verdict,
}

/// The comment bodies for a plan: part 1 first, each at most `limit`
/// bytes, each starting with its marker line.
#[must_use]
pub fn bodies(
    marker: Marker<'_>,
    heading: Heading<'_>,
    plan_markdown: &str,
    limit: usize,
) -> Vec<String> {
    let mut text = String::new();
    let short = |c: &str| c.get(..12).unwrap_or(c).to_owned();
    let _ = writeln!(
        text,
        "**converge plan** for `{}` (against `{}`), status `{}/plan`: **{}**\n",
        short(heading.head),
        short(heading.base),
        marker.context.replace('`', "'"),
        heading.verdict.state.as_str(),
    );
    if heading.verdict.state == State::Failure {
        let _ = writeln!(text, "Problems with what this pull request changes:\n");
        for f in &heading.verdict.findings {
            let _ = writeln!(text, "- {}: `{}`", f.kind(), one_line(&f.what));
        }
        text.push('\n');
    }
    text.push_str(plan_markdown);
    let room = limit.saturating_sub(OVERHEAD).max(1024);
    let chunks = split(&text, room);
    let total = chunks.len().min(MAX_PARTS);
    let mut out = Vec::with_capacity(total);
    for (i, chunk) in chunks.iter().take(MAX_PARTS).enumerate() {
        let part = i + 1;
        let mut body = marker.line(part);
        body.push('\n');
        if total > 1 {
            let _ = writeln!(body, "_Part {part} of {total}._\n");
        }
        body.push_str(chunk);
        if part == MAX_PARTS && chunks.len() > MAX_PARTS {
            let _ = writeln!(
                body,
                "\n…and more: the plan is longer than {MAX_PARTS} comments; run `converge plan --repo … --base {} --head {}` for all of it.",
                short(heading.base),
                short(heading.head)
            );
        }
        out.push(body);
    }
    out
}

/// The text as one line fit for a code span.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '`' => '\'',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

/// `text` in chunks of at most `room` bytes, cut after a line where one
/// fits, else on a character boundary.
fn split(text: &str, room: usize) -> Vec<&str> {
    let mut chunks = Vec::new();
    let mut rest = text;
    while rest.len() > room {
        let mut cut = room;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let at = rest[..cut].rfind('\n').map_or(cut, |i| i + 1);
        let at = if at == 0 { cut } else { at };
        chunks.push(&rest[..at]);
        rest = &rest[at..];
    }
    if !rest.is_empty() || chunks.is_empty() {
        chunks.push(rest);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pull_request::verdict::Finding;

    fn marker() -> Marker<'static> {
        Marker {
            source: "platform-claims",
            context: "converge/prod-eu",
        }
    }

    fn success() -> Verdict {
        super::super::verdict::verdict(
            &crate::plan::Plan::default(),
            &crate::pipeline::Evaluation::default(),
            &std::collections::BTreeSet::new(),
            &std::collections::BTreeMap::new(),
        )
    }

    #[test]
    fn the_marker_finds_its_own_comments_only() {
        let m = marker();
        assert_eq!(
            m.line(1),
            "<!-- converge:plan source=platform-claims context=converge/prod-eu part=1 -->"
        );
        assert_eq!(m.part_of(&format!("{}\nbody", m.line(3))), Some(3));
        let other = Marker {
            source: "platform-claims",
            context: "converge/stage",
        };
        assert_eq!(other.part_of(&format!("{}\nbody", m.line(1))), None);
        // Not on the first line, or a part out of range: not ours.
        assert_eq!(m.part_of(&format!("quoted:\n{}", m.line(1))), None);
        assert_eq!(
            m.part_of(
                "<!-- converge:plan source=platform-claims context=converge/prod-eu part=99 -->"
            ),
            None
        );
    }

    #[test]
    fn marker_values_cannot_end_the_html_comment() {
        let m = Marker {
            source: "a b",
            context: "x-->y--z",
        };
        let line = m.line(1);
        assert_eq!(line.matches("-->").count(), 1, "{line}");
        assert!(!line[4..line.len() - 3].contains("--"), "{line}");
        assert_eq!(m.part_of(&line), Some(1));
    }

    #[test]
    fn a_short_plan_is_one_comment_with_the_verdict_and_the_plan() {
        let v = success();
        let heading = Heading {
            head: "0123456789abcdef0123",
            base: "fedcba9876543210fedc",
            verdict: &v,
        };
        let bodies = bodies(marker(), heading, "### converge plan\n", 65_536);
        assert_eq!(bodies.len(), 1);
        assert!(bodies[0].starts_with(&marker().line(1)));
        assert!(bodies[0].contains("`0123456789ab` (against `fedcba987654`)"));
        assert!(bodies[0].contains("**success**"));
        assert!(bodies[0].ends_with("### converge plan\n"));
    }

    #[test]
    fn a_failure_lists_every_problem() {
        let v = Verdict {
            findings: vec![
                Finding {
                    reason: crate::condition::Reason::PolicyDenied,
                    what: "a.yaml: /: denied `x` (policy)".to_owned(),
                },
                Finding {
                    reason: crate::condition::Reason::ClaimInvalid,
                    what: "b.yaml: /user: bad\nline (type)".to_owned(),
                },
            ],
            ..success()
        };
        let v = Verdict {
            state: State::Failure,
            ..v
        };
        let heading = Heading {
            head: "h",
            base: "b",
            verdict: &v,
        };
        let body = &bodies(marker(), heading, "plan", 65_536)[0];
        assert!(
            body.contains("- policy denial: `a.yaml: /: denied 'x' (policy)`"),
            "{body}"
        );
        assert!(
            body.contains("- invalid claim: `b.yaml: /user: bad line (type)`"),
            "{body}"
        );
    }

    #[test]
    fn a_long_plan_is_split_under_the_limit_at_line_ends() {
        let v = success();
        let heading = Heading {
            head: "h",
            base: "b",
            verdict: &v,
        };
        let mut plan = String::new();
        for i in 0..3000 {
            let _ = writeln!(plan, "| + | `dev-{i:05}` | Claimed |");
        }
        let limit = 20_000;
        let parts = bodies(marker(), heading, &plan, limit);
        assert!(parts.len() > 3, "{}", parts.len());
        let mut rows = 0;
        for (i, body) in parts.iter().enumerate() {
            assert!(
                body.len() <= limit,
                "part {} is {} bytes",
                i + 1,
                body.len()
            );
            assert_eq!(marker().part_of(body), Some(i + 1));
            assert!(body.contains(&format!("_Part {} of {}._", i + 1, parts.len())));
            rows += body.lines().filter(|l| l.starts_with("| + |")).count();
        }
        assert_eq!(rows, 3000, "every row in exactly one part, none cut");
    }

    #[test]
    fn a_huge_plan_stops_at_the_most_parts_and_says_so() {
        let v = success();
        let heading = Heading {
            head: "h",
            base: "b",
            verdict: &v,
        };
        let plan = "é".repeat(200_000);
        let parts = bodies(marker(), heading, &plan, 4096);
        assert_eq!(parts.len(), MAX_PARTS);
        assert!(parts.iter().all(|p| p.len() <= 4096));
        assert!(parts[MAX_PARTS - 1].contains("longer than 10 comments"));
    }
}
