//! The version constraint parser and matcher: the first line is a
//! constraint, the other lines are tags. Parsing never panics; a printed
//! constraint parses back to itself; versions are totally ordered; `pick`
//! returns the greatest matching tag, whatever the order of the list.
use std::cmp::Ordering;

use converge::claim::version::{Constraint, Version};

/// One input: panics when a property does not hold.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.lines();
    let Some(first) = lines.next() else {
        return;
    };
    let tags: Vec<&str> = lines.take(64).collect();
    let versions: Vec<Version> = tags.iter().filter_map(|t| Version::parse(t).ok()).collect();

    // A version prints as written and parses back equal.
    for v in &versions {
        let again = Version::parse(&v.to_string()).expect("a printed version parses");
        assert_eq!(&again, v);
        assert_eq!(again.cmp(v), Ordering::Equal);
    }
    // Ordering laws: antisymmetry, consistency with equality, transitivity.
    for a in &versions {
        for b in &versions {
            assert_eq!(a.cmp(b), b.cmp(a).reverse(), "{a} vs {b}");
            assert_eq!(a == b, a.cmp(b) == Ordering::Equal, "{a} vs {b}");
            for c in versions.iter().take(8) {
                if a <= b && b <= c {
                    assert!(a <= c, "{a} <= {b} <= {c}");
                }
            }
        }
    }

    let Ok(constraint) = Constraint::parse(first) else {
        // The version parser sees the same text too.
        let _ = Version::parse(first);
        return;
    };
    let printed = constraint.to_string();
    let again = Constraint::parse(&printed)
        .unwrap_or_else(|e| panic!("{first:?} printed as {printed:?} does not parse: {e}"));
    assert_eq!(again, constraint, "{first:?} printed as {printed:?}");
    for v in &versions {
        assert_eq!(again.matches(v), constraint.matches(v));
        if constraint.is_exact() {
            // An exact constraint matches exactly its own version.
            let Constraint::Exact(want) = &constraint else {
                unreachable!()
            };
            assert_eq!(constraint.matches(v), v == want);
        }
    }

    // `pick`: a matching tag, no matching tag greater, order-independent.
    let picked = constraint.pick(tags.iter().copied());
    let mut reversed = tags.clone();
    reversed.reverse();
    assert_eq!(constraint.pick(reversed.iter().copied()), picked);
    match picked {
        Some(tag) => {
            let best = Version::parse(tag).expect("a picked tag parses");
            assert!(constraint.matches(&best));
            assert!(
                versions
                    .iter()
                    .all(|v| !constraint.matches(v) || *v <= best)
            );
        }
        None => assert!(versions.iter().all(|v| !constraint.matches(v))),
    }
}
