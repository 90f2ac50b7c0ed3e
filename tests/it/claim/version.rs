//! Laws of version ordering and constraint matching, as properties over
//! generated versions (proptest), through the public API only: what any
//! resolution semantics must keep.

use std::cmp::Ordering;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use converge::claim::version::{Constraint, Version};
use proptest::prelude::*;

/// Numeric parts (2 to 4, small numbers so that equal versions happen).
fn parts() -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(0u64..6, 2..=4)
}

fn pre() -> impl Strategy<Value = Option<String>> {
    prop::option::weighted(
        0.3,
        prop::sample::select(vec![
            "alpha", "alpha.1", "beta", "beta.2", "rc.1", "rc.10", "1", "0.a",
        ])
        .prop_map(str::to_owned),
    )
}

/// A version tag: optional `v`, parts, optional pre-release and build.
fn tag() -> impl Strategy<Value = String> {
    (
        any::<bool>(),
        parts(),
        pre(),
        prop::option::weighted(0.2, "[a-z0-9]{1,4}"),
    )
        .prop_map(|(v, parts, pre, build)| {
            let mut s = if v { "v".to_owned() } else { String::new() };
            s.push_str(
                &parts
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join("."),
            );
            if let Some(p) = pre {
                s.push('-');
                s.push_str(&p);
            }
            if let Some(b) = build {
                s.push('+');
                s.push_str(&b);
            }
            s
        })
}

fn version() -> impl Strategy<Value = Version> {
    tag().prop_map(|t| Version::parse(&t).expect("a generated tag parses"))
}

fn release() -> impl Strategy<Value = Version> {
    version().prop_filter("a release", |v| !v.is_prerelease())
}

fn hash(v: &Version) -> u64 {
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

fn padded(v: &Version) -> [u64; 4] {
    let mut p = [0; 4];
    for (slot, n) in p.iter_mut().zip(v.parts()) {
        *slot = *n;
    }
    p
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn version_order_is_total_and_agrees_with_equality_and_hashing(
        a in version(), b in version(), c in version()
    ) {
        prop_assert_eq!(a.cmp(&b), b.cmp(&a).reverse());
        prop_assert_eq!(a == b, a.cmp(&b) == Ordering::Equal);
        prop_assert_eq!(a.partial_cmp(&b), Some(a.cmp(&b)));
        if a == b {
            prop_assert_eq!(hash(&a), hash(&b));
        }
        if a <= b && b <= c {
            prop_assert!(a <= c);
        }
    }

    #[test]
    fn releases_are_ordered_by_their_padded_parts(a in release(), b in release()) {
        prop_assert_eq!(a.cmp(&b), padded(&a).cmp(&padded(&b)));
    }

    #[test]
    fn a_pre_release_comes_before_its_release(parts in parts(), p in pre()) {
        let Some(p) = p else { return Ok(()) };
        let core = parts.iter().map(u64::to_string).collect::<Vec<_>>().join(".");
        let release = Version::parse(&core).expect("a release parses");
        let pre = Version::parse(&format!("{core}-{p}")).expect("a pre-release parses");
        prop_assert!(pre < release);
        prop_assert!(pre.is_prerelease() && !release.is_prerelease());
    }

    #[test]
    fn spelling_does_not_change_a_version(parts in parts(), p in pre()) {
        let core = parts.iter().map(u64::to_string).collect::<Vec<_>>().join(".");
        let suffix = p.map(|p| format!("-{p}")).unwrap_or_default();
        let plain = Version::parse(&format!("{core}{suffix}")).expect("parses");
        for other in [
            format!("v{core}{suffix}"),
            format!("{core}{suffix}+build.7"),
        ] {
            prop_assert_eq!(&Version::parse(&other).expect("parses"), &plain);
        }
        if parts.len() < 4 {
            let longer = Version::parse(&format!("{core}.0{suffix}")).expect("parses");
            prop_assert_eq!(&longer, &plain);
        }
    }

    #[test]
    fn a_printed_version_or_constraint_parses_back_to_itself(v in version(), w in version()) {
        prop_assert_eq!(&Version::parse(&v.to_string()).expect("parses"), &v);
        for text in [
            v.to_string(),
            format!("^{v}"),
            format!(">={v}, <{w}"),
            format!("{}.x", v.parts()[0]),
            "*".to_owned(),
        ] {
            let c = Constraint::parse(&text).expect("parses");
            prop_assert_eq!(&Constraint::parse(&c.to_string()).expect("parses back"), &c);
        }
    }

    #[test]
    fn an_exact_constraint_matches_exactly_its_version(v in version(), w in version()) {
        let c = Constraint::parse(&v.to_string()).expect("parses");
        prop_assert!(c.is_exact());
        prop_assert_eq!(c.matches(&w), w == v);
    }

    #[test]
    fn a_range_matches_the_releases_between_its_bounds(
        low in release(), high in release(), w in release()
    ) {
        let c = Constraint::parse(&format!(">={low}, <{high}")).expect("parses");
        prop_assert_eq!(c.matches(&w), low <= w && w < high);
        let up = Constraint::parse(&format!(">{low}")).expect("parses");
        prop_assert_eq!(up.matches(&w), w > low);
        let down = Constraint::parse(&format!("<={high}")).expect("parses");
        prop_assert_eq!(down.matches(&w), w <= high);
    }

    #[test]
    fn a_caret_matches_what_is_newer_with_the_same_first_part(base in version(), w in release()) {
        let c = Constraint::parse(&format!("^{base}")).expect("parses");
        prop_assert_eq!(c.matches(&w), w >= base && w.parts()[0] == base.parts()[0]);
    }

    #[test]
    fn wildcards_match_releases_by_their_leading_parts(v in release(), w in version()) {
        let any = Constraint::parse("*").expect("parses");
        prop_assert_eq!(any.matches(&w), !w.is_prerelease());
        let major = Constraint::parse(&format!("{}.x", v.parts()[0])).expect("parses");
        prop_assert_eq!(major.matches(&w), !w.is_prerelease() && padded(&w)[0] == v.parts()[0]);
        let minor = Constraint::parse(&format!("{}.{}.x", v.parts()[0], v.parts()[1])).expect("parses");
        prop_assert_eq!(
            minor.matches(&w),
            !w.is_prerelease() && padded(&w)[..2] == padded(&v)[..2]
        );
    }

    #[test]
    fn only_a_constraint_naming_a_pre_release_matches_one(
        base in release(), w in version()
    ) {
        // A release-only constraint never matches a pre-release.
        for text in [format!("^{base}"), format!(">={base}"), "*".to_owned()] {
            let c = Constraint::parse(&text).expect("parses");
            if w.is_prerelease() {
                prop_assert!(!c.matches(&w), "{} matches {}", text, w);
            }
        }
    }

    #[test]
    fn pick_is_the_greatest_matching_tag_whatever_the_order(
        tags in prop::collection::vec(tag(), 0..12),
        base in release(),
        seed in any::<u64>(),
    ) {
        let c = Constraint::parse(&format!("^{base}")).expect("parses");
        let picked = c.pick(tags.iter().map(String::as_str));
        let mut shuffled = tags.clone();
        let mut rng = seed;
        for i in (1..shuffled.len()).rev() {
            rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let j = usize::try_from(rng >> 33).unwrap_or(0) % (i + 1);
            shuffled.swap(i, j);
        }
        prop_assert_eq!(c.pick(shuffled.iter().map(String::as_str)), picked);
        let matching: Vec<Version> = tags
            .iter()
            .map(|t| Version::parse(t).expect("parses"))
            .filter(|v| c.matches(v))
            .collect();
        match picked {
            None => prop_assert!(matching.is_empty()),
            Some(tag) => {
                let best = Version::parse(tag).expect("parses");
                prop_assert!(c.matches(&best));
                prop_assert!(matching.iter().all(|v| *v <= best));
            }
        }
    }
}
