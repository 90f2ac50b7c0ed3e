//! Service version constraints: parsing tags and constraints, matching tags
//! against constraints, and picking the highest matching tag from a list.
//!
//! A [`Version`] is 2 to 4 dot-separated decimal parts with an optional
//! leading `v`, an optional SemVer-style pre-release (`-rc.1`) and optional
//! build metadata (`+build.5`, ignored for ordering and equality). Parts are
//! compared numerically; missing trailing parts count as 0, so `1.2`, `1.2.0`,
//! `v1.2.0.0` and `1.2.0+build` are all *equal* ([`PartialEq`], [`Hash`] and
//! [`Ord`] all use the same ordering key: padded parts plus pre-release). The
//! original text is kept only for [`Display`](fmt::Display). Leading zeros
//! are accepted and read numerically (`01.2` == `1.2`, `rc.01` == `rc.1`);
//! numbers that do not fit in a `u64` are rejected.
//!
//! A [`Constraint`] is an exact tag, a caret constraint (`^1.2.0`: at least
//! that version with the same first part, also for major 0), a comma-separated
//! range (`>=1.2.0, <2.0.0`), a trailing-wildcard pattern (`1.2.x`, `1.*`) or
//! `*`. Non-exact constraints never match a pre-release unless the constraint
//! itself names a pre-release with the same numeric core (npm/SemVer rule).
//! [`Constraint::pick`] skips tags that are not versions and breaks ties
//! between equal versions deterministically. The module is pure and std-only,
//! and never panics on any input.

use std::cmp::Ordering;
use std::error::Error;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

/// Smallest number of numeric parts a version may have.
const MIN_PARTS: usize = 2;
/// Largest number of numeric parts a version may have.
const MAX_PARTS: usize = 4;

/// Error returned when a version or constraint does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionError {
    /// The text that failed to parse (the whole constraint, as given).
    pub input: String,
    /// What is wrong with it, in lower case.
    pub reason: String,
}

impl VersionError {
    fn new(input: &str, reason: String) -> Self {
        Self {
            input: input.to_owned(),
            reason,
        }
    }
}

impl fmt::Display for VersionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid version constraint {:?}: {}",
            self.input, self.reason
        )
    }
}

impl Error for VersionError {}

/// One dot-separated pre-release identifier. The derived order puts numeric
/// identifiers before alphanumeric ones, as the semantic versioning spec requires.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Ident {
    Numeric(u64),
    Alpha(String),
}

/// A parsed version: 2–4 numeric parts, optional pre-release.
///
/// Equality, hashing and ordering use the padded numeric parts and the
/// pre-release identifiers only; the `v` prefix, the number of parts written
/// and build metadata are ignored, so `Version::parse("v1.2.3") ==
/// Version::parse("1.2.3.0")`. [`Display`](fmt::Display) prints the original
/// text.
#[derive(Debug, Clone)]
pub struct Version {
    /// Numeric parts, padded with zeros to four.
    parts: [u64; MAX_PARTS],
    /// Number of parts actually written (2 to 4).
    len: usize,
    /// Pre-release identifiers; empty for a release.
    pre: Vec<Ident>,
    /// The text as given.
    text: String,
}

impl Version {
    /// Parses a version tag such as `v1.2.3`, `1.2`, `1.2.3.4` or
    /// `2.0.0-rc.1+build.7`. Surrounding whitespace is not allowed.
    ///
    /// # Errors
    ///
    /// Returns a [`VersionError`] when `s` is not a version.
    pub fn parse(s: &str) -> Result<Self, VersionError> {
        parse_version(s).map_err(|reason| VersionError::new(s, reason))
    }

    /// True when the version has a pre-release suffix (`1.0.0-rc.1`).
    #[must_use]
    pub fn is_prerelease(&self) -> bool {
        !self.pre.is_empty()
    }

    /// The numeric parts as written (2 to 4 of them).
    #[must_use]
    pub fn parts(&self) -> &[u64] {
        &self.parts[..self.len]
    }

    /// The original text of the version.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when both versions have the same padded numeric parts,
    /// regardless of pre-release.
    fn same_core(&self, other: &Self) -> bool {
        self.parts == other.parts
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.parts == other.parts && self.pre == other.pre
    }
}

impl Eq for Version {}

impl Hash for Version {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts.hash(state);
        self.pre.hash(state);
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.parts.cmp(&other.parts).then_with(|| {
            match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                // A release sorts after any of its pre-releases.
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => self.pre.cmp(&other.pre),
            }
        })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Comparison operator of a range [`Comparator`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Eq,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
}

impl Op {
    /// The operator as written in a constraint.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
        }
    }

    fn holds(self, ord: Ordering) -> bool {
        match self {
            Op::Eq => ord == Ordering::Equal,
            Op::Gt => ord == Ordering::Greater,
            Op::Ge => ord != Ordering::Less,
            Op::Lt => ord == Ordering::Less,
            Op::Le => ord != Ordering::Greater,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One comparison of a range constraint, such as `>=1.2.0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparator {
    /// How the candidate is compared with `version`.
    pub op: Op,
    /// The version on the right-hand side.
    pub version: Version,
}

impl Comparator {
    /// True when `v <op> self.version` holds (ignoring pre-release rules).
    #[must_use]
    pub fn holds(&self, v: &Version) -> bool {
        self.op.holds(v.cmp(&self.version))
    }
}

impl fmt::Display for Comparator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.op, self.version)
    }
}

/// A parsed version constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Constraint {
    /// Exactly this version (`v1.2.3`); `v` prefix, build metadata and
    /// trailing zero parts are ignored when matching.
    Exact(Version),
    /// `^1.2.0`: at least this version, with the same first part. The rule is
    /// the same for major 0: `^0.3.1` means `>=0.3.1, <1.0.0`.
    Caret(Version),
    /// Comma-separated comparators that must all hold.
    Range(Vec<Comparator>),
    /// `1.2.x`: the `fixed` leading parts must match; `parts` is the total
    /// number of parts written (2 to 4) and only affects display, so `1.x`
    /// also matches `1.2.3.4`.
    Pattern {
        /// The fixed leading parts.
        fixed: Vec<u64>,
        /// Total number of parts written, wildcards included.
        parts: usize,
    },
    /// `*`: any release.
    Any,
}

impl Constraint {
    /// Parses a constraint: `v1.2.3`, `^1.2.0`, `>=1.2.0, <2.0.0`, `1.2.x`
    /// or `*`. Surrounding whitespace is ignored.
    ///
    /// # Errors
    ///
    /// Returns a [`VersionError`] whose `input` is `s` and whose `reason`
    /// says what is wrong.
    pub fn parse(s: &str) -> Result<Self, VersionError> {
        parse_constraint(s.trim()).map_err(|reason| VersionError::new(s, reason))
    }

    /// True when the constraint names one exact version (the tag can be used
    /// as written without a tag list). Only [`Constraint::Exact`] qualifies;
    /// `=1.2.3` is a range and may match `v1.2.3` as well.
    #[must_use]
    pub fn is_exact(&self) -> bool {
        matches!(self, Constraint::Exact(_))
    }

    /// True when `v` satisfies the constraint, including the pre-release
    /// rules described in the module documentation.
    #[must_use]
    pub fn matches(&self, v: &Version) -> bool {
        match self {
            Constraint::Exact(want) => v == want,
            Constraint::Caret(base) => {
                v >= base
                    && v.parts[0] == base.parts[0]
                    && (!v.is_prerelease() || (base.is_prerelease() && v.same_core(base)))
            }
            Constraint::Range(comparators) => {
                comparators.iter().all(|c| c.holds(v))
                    && (!v.is_prerelease()
                        || comparators
                            .iter()
                            .any(|c| c.version.is_prerelease() && v.same_core(&c.version)))
            }
            Constraint::Pattern { fixed, .. } => {
                !v.is_prerelease() && v.parts.iter().zip(fixed).all(|(a, b)| a == b)
            }
            Constraint::Any => !v.is_prerelease(),
        }
    }

    /// The highest tag in `tags` that parses and matches; returns the tag
    /// string as given in the list. Tags that are not versions are skipped.
    /// Among tags of equal version (`v1.2.3`, `1.2.3`) the lexicographically
    /// greatest string wins, whatever the order of the list.
    #[must_use]
    pub fn pick<'a, I: IntoIterator<Item = &'a str>>(&self, tags: I) -> Option<&'a str> {
        let mut best: Option<(Version, &'a str)> = None;
        for tag in tags {
            let Ok(v) = Version::parse(tag) else {
                continue;
            };
            if !self.matches(&v) {
                continue;
            }
            let better = match &best {
                None => true,
                Some((bv, btag)) => v.cmp(bv).then_with(|| tag.cmp(btag)) == Ordering::Greater,
            };
            if better {
                best = Some((v, tag));
            }
        }
        best.map(|(_, tag)| tag)
    }
}

/// Prints the constraint in a normalized form that parses back to an equal
/// constraint: versions keep their original text, comparators are joined by
/// `", "`, and pattern wildcards are printed as `x`.
impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Constraint::Exact(v) => write!(f, "{v}"),
            Constraint::Caret(v) => write!(f, "^{v}"),
            Constraint::Range(comparators) => {
                for (i, c) in comparators.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{c}")?;
                }
                Ok(())
            }
            Constraint::Pattern { fixed, parts } => {
                for i in 0..*parts {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    match fixed.get(i) {
                        Some(n) => write!(f, "{n}")?,
                        None => f.write_str("x")?,
                    }
                }
                Ok(())
            }
            Constraint::Any => f.write_str("*"),
        }
    }
}

impl FromStr for Constraint {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// True for the wildcard spellings of a pattern part.
fn is_wildcard(part: &str) -> bool {
    matches!(part, "x" | "X" | "*")
}

/// Parses one decimal part, accepting leading zeros.
fn parse_number(part: &str) -> Result<u64, String> {
    if part.is_empty() {
        return Err("empty version part".to_owned());
    }
    if !part.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid version number {part:?}"));
    }
    part.parse::<u64>()
        .map_err(|_| format!("version number {part} is too large"))
}

/// Checks the number of parts of a version or pattern.
fn check_part_count(n: usize) -> Result<(), String> {
    if n < MIN_PARTS {
        Err(format!(
            "too few version parts ({n}, need {MIN_PARTS} to {MAX_PARTS})"
        ))
    } else if n > MAX_PARTS {
        Err(format!("too many version parts ({n}, at most {MAX_PARTS})"))
    } else {
        Ok(())
    }
}

/// Validates dot-separated `[0-9A-Za-z-]+` identifiers; `what` names them.
fn check_identifiers<'s>(s: &'s str, what: &str) -> Result<Vec<&'s str>, String> {
    if s.is_empty() {
        return Err(format!("empty {what}"));
    }
    s.split('.')
        .map(|id| {
            if id.is_empty() {
                Err(format!("empty identifier in {what} {s:?}"))
            } else if let Some(c) = id
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
            {
                Err(format!("invalid character {c:?} in {what} {s:?}"))
            } else {
                Ok(id)
            }
        })
        .collect()
}

/// Splits off the optional `v` prefix and `+build` suffix and the optional
/// `-pre` suffix: returns (core, pre-release).
fn split_version(s: &str) -> Result<(&str, Option<&str>), String> {
    let rest = s.strip_prefix('v').unwrap_or(s);
    if rest.is_empty() {
        return Err(if s.is_empty() {
            "empty version".to_owned()
        } else {
            "missing version number after \"v\"".to_owned()
        });
    }
    let rest = match rest.split_once('+') {
        Some((head, build)) => {
            check_identifiers(build, "build metadata")?;
            head
        }
        None => rest,
    };
    Ok(match rest.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (rest, None),
    })
}

fn parse_version(s: &str) -> Result<Version, String> {
    let (core, pre) = split_version(s)?;
    let mut parts = [0u64; MAX_PARTS];
    let mut len = 0;
    for part in core.split('.') {
        let n = parse_number(part)?;
        if let Some(slot) = parts.get_mut(len) {
            *slot = n;
        }
        len += 1;
    }
    check_part_count(len)?;
    let pre = match pre {
        None => Vec::new(),
        Some(pre) => check_identifiers(pre, "pre-release")?
            .into_iter()
            .map(|id| {
                if id.bytes().all(|b| b.is_ascii_digit()) {
                    id.parse::<u64>()
                        .map(Ident::Numeric)
                        .map_err(|_| format!("pre-release number {id} is too large"))
                } else {
                    Ok(Ident::Alpha(id.to_owned()))
                }
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(Version {
        parts,
        len,
        pre,
        text: s.to_owned(),
    })
}

/// The leading run of operator-like characters of `s` (ASCII punctuation
/// other than `.` and `*`).
fn operator_prefix(s: &str) -> &str {
    let end = s
        .find(|c: char| !c.is_ascii_punctuation() || c == '.' || c == '*')
        .unwrap_or(s.len());
    &s[..end]
}

fn parse_comparator(s: &str) -> Result<Comparator, String> {
    if s.is_empty() {
        return Err("empty comparator (dangling or doubled comma?)".to_owned());
    }
    let op_text = operator_prefix(s);
    let op = match op_text {
        ">=" => Op::Ge,
        ">" => Op::Gt,
        "<=" => Op::Le,
        "<" => Op::Lt,
        "=" => Op::Eq,
        "" => {
            return Err(format!(
                "missing comparison operator (>=, >, <=, <, =) before {s:?}"
            ));
        }
        other => return Err(format!("unsupported operator {other:?}")),
    };
    let rest = s[op_text.len()..].trim_start();
    if rest.is_empty() {
        return Err(format!("missing version after {op_text:?}"));
    }
    let version = parse_version(rest)?;
    Ok(Comparator { op, version })
}

fn parse_pattern(s: &str) -> Result<Constraint, String> {
    let (core, pre) = split_version(s)?;
    if pre.is_some() || s.contains('+') {
        return Err("a wildcard pattern cannot have a pre-release or build metadata".to_owned());
    }
    let mut fixed = Vec::new();
    let mut parts = 0;
    let mut seen_wildcard = false;
    for part in core.split('.') {
        parts += 1;
        if is_wildcard(part) {
            seen_wildcard = true;
        } else {
            let n = parse_number(part)?;
            if seen_wildcard {
                return Err("wildcards may only appear at the end of a pattern".to_owned());
            }
            fixed.push(n);
        }
    }
    check_part_count(parts)?;
    Ok(Constraint::Pattern { fixed, parts })
}

/// True when `s` (a version-like text) has a wildcard among its core parts.
fn looks_like_pattern(s: &str) -> bool {
    let rest = s.strip_prefix('v').unwrap_or(s);
    let core = rest.split(['-', '+']).next().unwrap_or(rest);
    core.split('.').any(is_wildcard)
}

/// Parses an already trimmed constraint.
fn parse_constraint(s: &str) -> Result<Constraint, String> {
    if s.is_empty() {
        return Err("empty constraint".to_owned());
    }
    if s == "*" {
        return Ok(Constraint::Any);
    }
    if let Some(rest) = s.strip_prefix('^') {
        let rest = rest.trim_start();
        if rest.is_empty() {
            return Err("missing version after \"^\"".to_owned());
        }
        if rest.contains(',') {
            return Err("a caret constraint cannot be combined with other comparators".to_owned());
        }
        return parse_version(rest).map(Constraint::Caret);
    }
    if s.contains(',') || s.starts_with(['>', '<', '=']) {
        return s
            .split(',')
            .map(|c| parse_comparator(c.trim()))
            .collect::<Result<_, _>>()
            .map(Constraint::Range);
    }
    let op = operator_prefix(s);
    if !op.is_empty() {
        return Err(format!("unsupported operator {op:?}"));
    }
    if looks_like_pattern(s) {
        return parse_pattern(s);
    }
    parse_version(s).map(Constraint::Exact)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    fn c(s: &str) -> Constraint {
        Constraint::parse(s).unwrap()
    }

    #[test]
    fn constraints_match_the_expected_tags() {
        let table: &[(&str, &str, bool)] = &[
            // exact
            ("v1.2.3", "v1.2.3", true),
            ("v1.2.3", "1.2.3", true),
            ("1.2.3", "v1.2.3", true),
            ("1.2.3", "1.2.3+build.7", true),
            ("1.2", "1.2.0", true),
            ("1.2.3", "1.2.4", false),
            ("v2.0.0-rc.1", "2.0.0-rc.1", true),
            ("v2.0.0-rc.1", "2.0.0-rc.2", false),
            ("v2.0.0-rc.1", "2.0.0", false),
            ("2.0.0", "2.0.0-rc.1", false),
            ("01.2.3", "1.2.3", true),
            // caret
            ("^1.2.0", "1.2.0", true),
            ("^1.2.0", "1.9.9", true),
            ("^1.2.0", "1.1.9", false),
            ("^1.2.0", "2.0.0", false),
            ("^1.2.0", "v1.5", true),
            ("^0.3.1", "0.3.1", true),
            ("^0.3.1", "0.9.0", true),
            ("^0.3.1", "1.0.0", false),
            ("^0.3.1", "0.3.0", false),
            ("^1.0.0.0", "1.2.3.4", true),
            ("^1.0.0.0", "2.0.0.0", false),
            ("^1.0.0", "1.1.0-rc.1", false),
            ("^1.0.0-beta", "1.0.0-beta.2", true),
            ("^1.0.0-beta", "1.0.0", true),
            ("^1.0.0-beta", "1.0.0-alpha", false),
            ("^1.0.0-beta", "1.1.0-beta", false),
            ("^ 1.0", "1.4", true),
            // range
            (">=1.2.0, <2.0.0", "1.2.0", true),
            (">=1.2.0, <2.0.0", "1.9.9.9", true),
            (">=1.2.0, <2.0.0", "2.0.0", false),
            (">=1.2.0, <2.0.0", "1.1.9", false),
            (" >= 1.2.0 ,< 2.0.0 ", "1.5.0", true),
            (">1.2.0", "1.2.0", false),
            (">1.2.0", "1.2.0.1", true),
            ("<=1.2", "1.2.0.0", true),
            ("<=1.2", "1.2.0.1", false),
            ("=1.2.3", "v1.2.3", true),
            ("=1.2.3", "1.2.4", false),
            (">=1.0.0, <2.0.0", "1.5.0-rc.1", false),
            (">=1.0.0-rc.1, <2.0.0", "1.0.0-rc.2", true),
            (">=1.0.0-rc.1, <2.0.0", "1.0.0-rc.1", true),
            (">=1.0.0-rc.1, <2.0.0", "1.0.0-beta", false),
            (">=1.0.0-rc.1, <2.0.0", "1.0.1", true),
            (">=1.0.0-rc.1, <2.0.0", "1.0.1-rc.1", false),
            (">=1.0.0-rc.1, <2.0.0", "1.0.0", true),
            (">=v1.0, <v1.1", "1.0.5", true),
            // pattern
            ("1.x.x.x", "1.9.9.9", true),
            ("1.x.x.x", "2.0.0.0", false),
            ("1.2.x", "1.2.7", true),
            ("1.2.x", "1.3.0", false),
            ("1.2.X", "1.2.0", true),
            ("1.2.*", "v1.2.99", true),
            ("1.x", "1.2.3.4", true),
            ("1.x", "0.9", false),
            ("1.2.x", "1.2.1-rc.1", false),
            ("v1.x", "1.4.0", true),
            ("1.2.3.x", "1.2.3", true),
            // any
            ("*", "0.0", true),
            ("*", "99.99.99.99", true),
            ("*", "2.0.0-rc.1", false),
        ];
        for &(constraint, tag, want) in table {
            let got = c(constraint).matches(&v(tag));
            assert_eq!(got, want, "{constraint:?} matches {tag:?}");
        }
    }

    #[test]
    fn pick_returns_the_highest_matching_tag_as_written() {
        let table: &[(&str, &[&str], Option<&str>)] = &[
            ("*", &["1.0.0", "1.9.0", "1.10.0"], Some("1.10.0")),
            ("*", &["1.9.0", "2.0.0-rc.1"], Some("1.9.0")),
            ("*", &["latest", "main", "sha-abc", "0.1"], Some("0.1")),
            ("*", &["latest", "main"], None),
            ("*", &[], None),
            (
                "^1.2.0",
                &["1.1.0", "1.2.5", "1.8.0", "2.0.0"],
                Some("1.8.0"),
            ),
            ("^1.0.0", &["1.0.0", "1.1.0-rc.1"], Some("1.0.0")),
            (
                "^1.0.0.0",
                &["1.0.0.1", "1.2.3.4", "2.0.0.0"],
                Some("1.2.3.4"),
            ),
            ("^0.3.1", &["0.3.0", "0.4.2", "1.0.0"], Some("0.4.2")),
            ("^2.0.0", &["1.0.0", "3.0.0"], None),
            (
                ">=1.2.0, <2.0.0",
                &["1.1.0", "v1.3.0", "1.4.0", "2.0.0"],
                Some("1.4.0"),
            ),
            (
                ">=1.0.0-rc.1, <2.0.0",
                &["1.0.0-rc.1", "1.0.0-rc.2"],
                Some("1.0.0-rc.2"),
            ),
            (
                ">=1.0.0-rc.1, <2.0.0",
                &["1.0.0-rc.2", "1.0.0"],
                Some("1.0.0"),
            ),
            (
                ">=1.0.0-rc.1, <2.0.0",
                &["1.0.0-rc.2", "1.0.1-rc.1"],
                Some("1.0.0-rc.2"),
            ),
            ("1.x.x.x", &["1.9.9.9", "2.0.0.0", "1.0"], Some("1.9.9.9")),
            ("1.2.x", &["1.2.1", "1.2.10", "1.3.0"], Some("1.2.10")),
            ("v1.2.3", &["1.2.3", "1.2.4"], Some("1.2.3")),
            ("1.2.3", &["v1.2.3", "latest"], Some("v1.2.3")),
            ("1.2.3", &["1.2.3", "v1.2.3"], Some("v1.2.3")),
            ("1.2.3", &["v1.2.3", "1.2.3"], Some("v1.2.3")),
            ("*", &["v1.2.3", "1.2.3", "1.2.3+b"], Some("v1.2.3")),
            ("*", &["v1.2", "v1.10"], Some("v1.10")),
            ("*", &["1.0.0-rc.1"], None),
            ("2.0.0-rc.1", &["2.0.0-rc.1", "2.0.0"], Some("2.0.0-rc.1")),
        ];
        for &(constraint, tags, want) in table {
            let got = c(constraint).pick(tags.iter().copied());
            assert_eq!(got, want, "{constraint:?} picks from {tags:?}");
        }
    }

    #[test]
    fn bad_constraints_are_rejected_with_a_clear_reason() {
        let table: &[(&str, &str)] = &[
            ("", "empty constraint"),
            ("   ", "empty constraint"),
            ("^", "missing version after \"^\""),
            ("1..2", "empty version part"),
            (">=a", "invalid version number \"a\""),
            ("1.2.3.4.5", "too many version parts"),
            ("1", "too few version parts"),
            (">=1.0.0,", "empty comparator"),
            (">=1.0.0,,<2", "empty comparator"),
            ("~1.2", "unsupported operator \"~\""),
            ("!=1.2", "unsupported operator \"!=\""),
            ("=>1.2", "unsupported operator \"=>\""),
            (">=1.0, ~1.2", "unsupported operator \"~\""),
            ("1.0, <2.0", "missing comparison operator"),
            (">=", "missing version after \">=\""),
            ("1.x.3", "wildcards may only appear at the end"),
            ("1.x-rc.1", "cannot have a pre-release"),
            ("x", "too few version parts"),
            ("1.x.x.x.x", "too many version parts"),
            ("v", "missing version number after \"v\""),
            ("1.2.3-", "empty pre-release"),
            ("1.2.3-rc..1", "empty identifier in pre-release"),
            ("1.2.3-rc_1", "invalid character '_' in pre-release"),
            ("1.2.3+", "empty build metadata"),
            ("99999999999999999999.0", "too large"),
            ("1.0.0-99999999999999999999", "too large"),
            ("latest", "invalid version number \"latest\""),
            ("^1.x", "invalid version number \"x\""),
            ("^1.0, <2.0", "caret constraint cannot be combined"),
            (">=1.0 <2.0", "invalid version number \"0 <2\""),
        ];
        for &(input, want) in table {
            let err = Constraint::parse(input).unwrap_err();
            assert!(
                err.reason.contains(want),
                "{input:?}: reason {:?} lacks {want:?}",
                err.reason
            );
            assert_eq!(err.input, input);
        }
    }

    #[test]
    fn versions_order_numerically_with_prereleases_first() {
        use Ordering::{Equal, Greater, Less};
        let table: &[(&str, &str, Ordering)] = &[
            ("1.2", "1.2.0", Equal),
            ("1.2.0", "1.2.0.0", Equal),
            ("v1.2.3", "1.2.3", Equal),
            ("1.2.3+build", "1.2.3", Equal),
            ("01.02", "1.2", Equal),
            ("1.10.0", "1.9.0", Greater),
            ("1.2.3.4", "1.2.3", Greater),
            ("1.2.3", "1.2.3.1", Less),
            ("2.0", "1.99.99.99", Greater),
            ("1.0.0-rc.1", "1.0.0", Less),
            ("1.0.0-rc.1", "1.0.0-rc.2", Less),
            ("1.0.0-rc.2", "1.0.0-rc.10", Less),
            ("1.0.0-alpha", "1.0.0-alpha.1", Less),
            ("1.0.0-alpha.1", "1.0.0-alpha.beta", Less),
            ("1.0.0-alpha.beta", "1.0.0-beta", Less),
            ("1.0.0-beta.11", "1.0.0-rc.1", Less),
            ("1.0.0-1", "1.0.0-alpha", Less),
            ("1.0.0-rc.01", "1.0.0-rc.1", Equal),
            ("1.0.0-RC", "1.0.0-rc", Less),
            ("0.9.9", "1.0.0-rc.1", Less),
        ];
        for &(a, b, want) in table {
            assert_eq!(v(a).cmp(&v(b)), want, "{a:?} vs {b:?}");
            assert_eq!(v(b).cmp(&v(a)), want.reverse(), "{b:?} vs {a:?}");
            assert_eq!(v(a) == v(b), want == Equal, "{a:?} == {b:?}");
        }
    }

    #[test]
    fn equal_versions_hash_alike() {
        use std::collections::HashSet;
        let set: HashSet<Version> = ["v1.2.3", "1.2.3", "1.2.3.0+b"]
            .into_iter()
            .map(v)
            .collect();
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn version_keeps_its_original_text_and_parts() {
        let ver = v("v1.2-rc.1+b5");
        assert_eq!(ver.to_string(), "v1.2-rc.1+b5");
        assert_eq!(ver.as_str(), "v1.2-rc.1+b5");
        assert_eq!(ver.parts(), &[1, 2]);
        assert!(ver.is_prerelease());
        assert!(!v("1.2.3.4").is_prerelease());
        assert_eq!("1.2.3".parse::<Version>(), Ok(v("1.2.3")));
    }

    #[test]
    fn tags_with_spaces_are_not_versions() {
        assert!(Version::parse(" 1.2.3").is_err());
        assert!(Version::parse("1.2.3 ").is_err());
    }

    #[test]
    fn parse_builds_the_expected_variants() {
        assert_eq!(c("v1.2.3"), Constraint::Exact(v("1.2.3")));
        assert_eq!(c("^2.1.0"), Constraint::Caret(v("2.1.0")));
        assert_eq!(c(" * "), Constraint::Any);
        assert_eq!(
            c(">=1.2.0, <2.0.0"),
            Constraint::Range(vec![
                Comparator {
                    op: Op::Ge,
                    version: v("1.2.0"),
                },
                Comparator {
                    op: Op::Lt,
                    version: v("2.0.0"),
                },
            ])
        );
        assert_eq!(
            c("1.2.*"),
            Constraint::Pattern {
                fixed: vec![1, 2],
                parts: 3,
            }
        );
        assert_eq!(
            c("x.x"),
            Constraint::Pattern {
                fixed: vec![],
                parts: 2,
            }
        );
    }

    #[test]
    fn only_exact_constraints_are_exact() {
        assert!(c("v1.2.3").is_exact());
        assert!(c("2.0.0-rc.1").is_exact());
        for s in ["=1.2.3", "^1.2.3", "1.2.x", "*", ">=1.0"] {
            assert!(!c(s).is_exact(), "{s:?}");
        }
    }

    #[test]
    fn display_round_trips_through_parse() {
        let table: &[(&str, &str)] = &[
            ("v1.2.3", "v1.2.3"),
            ("^ 1.0.0.0", "^1.0.0.0"),
            (" >=1.2.0 ,<2.0.0", ">=1.2.0, <2.0.0"),
            ("1.2.*", "1.2.x"),
            ("1.X", "1.x"),
            ("*", "*"),
            ("2.0.0-rc.1+b", "2.0.0-rc.1+b"),
        ];
        for &(input, shown) in table {
            let parsed = c(input);
            assert_eq!(parsed.to_string(), shown, "{input:?}");
            assert_eq!(c(shown), parsed, "{input:?}");
            assert_eq!(shown.parse::<Constraint>(), Ok(parsed));
        }
    }

    #[test]
    fn error_display_names_the_input() {
        let err = Constraint::parse("~1.2").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid version constraint \"~1.2\": unsupported operator \"~\""
        );
        let dyn_err: &dyn Error = &err;
        assert!(dyn_err.source().is_none());
    }

    #[test]
    fn caret_keeps_the_major() {
        let caret = c("^1.4.0");
        assert!(caret.matches(&v("1.99.0")));
        assert!(!caret.matches(&v("2.0.0")));
        assert!(!caret.matches(&v("0.99.0")));
    }
}
