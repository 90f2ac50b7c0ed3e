//! Sharding: which replica owns an environment.
//!
//! Rendezvous (highest random weight) hashing: every live member gets a
//! weight for an environment name, a hash of both; the heaviest owns it.
//! Every replica that sees the same members computes the same owner with no
//! coordination, the shares are even in expectation, and a member joining
//! or leaving moves only the environments it wins or held (about 1/N).
//! The hash is SHA-256, so it is the same across builds and platforms
//! (replicas of different versions agree during a rolling upgrade).

use sha2::{Digest as _, Sha256};

/// The live members as one replica sees them at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members {
    me: String,
    /// Sorted, without repeats; `me` only while this replica is an active
    /// member (its Lease renewed, and seen by the others).
    live: Vec<String>,
    /// Bumped whenever `live` changes.
    generation: u64,
}

impl Members {
    #[must_use]
    pub fn new(me: &str, mut live: Vec<String>, generation: u64) -> Members {
        live.sort();
        live.dedup();
        Members {
            me: me.to_owned(),
            live,
            generation,
        }
    }

    /// The member that owns `environment`; `None` with no live member.
    #[must_use]
    pub fn owner(&self, environment: &str) -> Option<&str> {
        self.live
            .iter()
            .map(|m| (weight(m, environment), m))
            .max()
            .map(|(_, m)| m.as_str())
    }

    /// Whether this replica owns `environment`.
    #[must_use]
    pub fn owns(&self, environment: &str) -> bool {
        self.owner(environment) == Some(self.me.as_str())
    }

    #[must_use]
    pub fn me(&self) -> &str {
        &self.me
    }

    #[must_use]
    pub fn live(&self) -> &[String] {
        &self.live
    }

    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// A member's weight for an environment.
fn weight(member: &str, environment: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(member.as_bytes());
    h.update([0]);
    h.update(environment.as_bytes());
    let d = h.finalize();
    let mut first = [0_u8; 8];
    first.copy_from_slice(&d[..8]);
    u64::from_be_bytes(first)
}

/// Whether `s` may be part of a Lease's name (a DNS subdomain): lower-case
/// letters, digits, `-` and `.`; empty is allowed (a default is used).
#[must_use]
pub fn valid_name_part(s: &str) -> bool {
    s.len() <= 200
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("env-{i}")).collect()
    }

    fn members(me: &str, live: &[&str]) -> Members {
        Members::new(me, live.iter().map(|s| (*s).to_owned()).collect(), 1)
    }

    #[test]
    fn every_environment_has_exactly_one_owner_whoever_computes_it() {
        let live = ["a", "b", "c"];
        for env in names(500) {
            let owners: Vec<bool> = live.iter().map(|m| members(m, &live).owns(&env)).collect();
            assert_eq!(owners.iter().filter(|o| **o).count(), 1, "{env}");
        }
    }

    #[test]
    fn three_members_share_3000_environments_within_10_percent_of_even() {
        let m = members("a", &["a", "b", "c"]);
        for who in ["a", "b", "c"] {
            let share = names(3000)
                .iter()
                .filter(|e| m.owner(e) == Some(who))
                .count();
            assert!((900..=1100).contains(&share), "{who}: {share}");
        }
    }

    #[test]
    fn a_member_leaving_moves_only_its_own_environments() {
        let before = members("a", &["a", "b", "c"]);
        let after = members("a", &["a", "b"]);
        for env in names(3000) {
            if before.owner(&env) != Some("c") {
                assert_eq!(before.owner(&env), after.owner(&env), "{env}");
            }
        }
    }

    #[test]
    fn a_member_joining_takes_about_a_third_and_moves_nothing_else() {
        let before = members("a", &["a", "b"]);
        let after = members("a", &["a", "b", "c"]);
        let all = names(3000);
        let moved: Vec<&String> = all
            .iter()
            .filter(|e| before.owner(e) != after.owner(e))
            .collect();
        assert!(moved.iter().all(|e| after.owner(e) == Some("c")));
        let fraction = moved.len() as f64 / all.len() as f64;
        assert!((0.8 / 3.0..=1.2 / 3.0).contains(&fraction), "{fraction}");
    }

    #[test]
    fn nobody_owns_anything_without_live_members_and_a_standby_owns_nothing() {
        assert_eq!(members("a", &[]).owner("x"), None);
        let m = members("a", &["b", "c"]);
        assert!(names(100).iter().all(|e| !m.owns(e)));
    }

    #[test]
    fn lease_name_parts_are_checked() {
        assert!(valid_name_part("converge-shard-"));
        assert!(valid_name_part(""));
        assert!(!valid_name_part("Pod_1"));
    }
}
