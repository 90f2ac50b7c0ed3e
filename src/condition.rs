//! Conditions and their stable reasons: the vocabulary every stage shares.
//!
//! A leaf module (it imports nothing of the crate). Stages attach
//! [`Condition`]s to environments; the API, the state store, events and
//! metric labels show [`Reason`]s by their stable names ([`Reason::as_str`]),
//! which are part of the product's interface and never change spelling.

use serde::{Deserialize, Serialize};

/// Declares a closed enum of stable names, with `as_str`, `FromStr`, `Display`
/// and serde as those names.
macro_rules! names {
    ($(#[$meta:meta])* $ty:ident { $($(#[$vmeta:meta])* $variant:ident = $name:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $ty {
            $($(#[$vmeta])* $variant,)*
        }

        impl $ty {
            /// Every value, in declaration order.
            pub const ALL: &[$ty] = &[$($ty::$variant,)*];

            /// The stable name.
            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)*
                }
            }
        }

        impl std::str::FromStr for $ty {
            type Err = $crate::condition::UnknownName;
            fn from_str(s: &str) -> Result<$ty, $crate::condition::UnknownName> {
                match s {
                    $($name => Ok($ty::$variant),)*
                    _ => Err($crate::condition::UnknownName(s.to_owned())),
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

pub(crate) use names;

/// A name that is not one of the closed set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown name {0:?}")]
pub struct UnknownName(pub String);

names! {
    /// Why an environment is in the state it is in, or why a plan step exists.
    Reason {
        // Ready
        Applied = "Applied",
        Unchanged = "Unchanged",
        Planned = "Planned",
        // Planned changes
        Claimed = "Claimed",
        ClaimChanged = "ClaimChanged",
        /// The claim is as it was; a constraint resolved to another tag (a
        /// new tag was published, or a dependency came along).
        TagsChanged = "TagsChanged",
        /// The claim is as it was; objects someone else changed or deleted
        /// are applied again (`drift: correct`).
        DriftCorrected = "DriftCorrected",
        Unclaimed = "Unclaimed",
        Expired = "Expired",
        // Left as they are
        ClaimInvalid = "ClaimInvalid",
        PolicyDenied = "PolicyDenied",
        DuplicateEnvironment = "DuplicateEnvironment",
        /// The environment belongs to another source (the one that created
        /// it): a claim from this one is refused and changes nothing.
        NameTaken = "NameTaken",
        /// Creating it would exceed a limit per pool or per user, or the
        /// claim names more services than `limits.services_per_claim`.
        LimitExceeded = "LimitExceeded",
        VersionUnresolved = "VersionUnresolved",
        /// The tag a constraint last resolved to is gone from the tag list:
        /// the environment keeps it (never a silent downgrade).
        ResolvedTagMissing = "ResolvedTagMissing",
        /// The tag source (registry, git tags) cannot be read now: the
        /// environment keeps its last resolved versions.
        TagsStale = "TagsStale",
        /// No key is configured, or none of the configured identities is a
        /// recipient of the claim's SOPS data key.
        SecretsUnavailable = "SecretsUnavailable",
        /// The claim's SOPS MAC or a ciphertext does not check: it changed
        /// after it was encrypted.
        SecretsTampered = "SecretsTampered",
        /// The claim uses a SOPS feature converge does not implement (PGP,
        /// cloud KMS, Vault, key groups with a Shamir threshold).
        SecretsUnsupported = "SecretsUnsupported",
        RenderFailed = "RenderFailed",
        /// A service's own manifests cannot be fetched now (registry or git
        /// server unreachable): the environment is kept as it is.
        ManifestsUnavailable = "ManifestsUnavailable",
        /// A source refused a newer version of the claim and serves an earlier one.
        NewerVersionRefused = "NewerVersionRefused",
        /// A git source requires verified commits for this type, and the newest change is not.
        SignatureRequired = "SignatureRequired",
        /// The source's forge says the claim's commit was not approved as the
        /// policies require (a direct push, no approval at the merged head by
        /// someone other than the author): the environment stays as it is.
        Unreviewed = "Unreviewed",
        /// The claim needs a review and the source's forge cannot be asked
        /// now (down, rate limiting, refusing the token): the environment
        /// stays as it is until it answers.
        ReviewUnavailable = "ReviewUnavailable",
        /// The claim's source cannot be read now (or not yet since start).
        SourceUnavailable = "SourceUnavailable",
        /// The claim comes from a source that cannot be read now: what is
        /// applied may be out of date.
        SourceStale = "SourceStale",
        MassDeletionHeld = "MassDeletionHeld",
        // Health (the target's observation of applied objects)
        /// Some object is not current yet, within the health timeout.
        Progressing = "Progressing",
        /// Some object was not current within the health timeout.
        ProgressDeadlineExceeded = "ProgressDeadlineExceeded",
        /// Some object failed (the message names it and why).
        Unhealthy = "Unhealthy",
        /// Objects differ from what converge applied (`drift: report`).
        Drifted = "Drifted",
        // Apply failures (the target's reasons)
        TargetIo = "TargetIo",
        TargetUnavailable = "TargetUnavailable",
        InventoryCorrupt = "InventoryCorrupt",
        ForeignObject = "ForeignObject",
        Conflict = "Conflict",
        Forbidden = "Forbidden",
        Invalid = "Invalid",
        /// The target refuses a change to a field that cannot change.
        ImmutableField = "ImmutableField",
        /// This replica does not lead (leader election): another applies.
        NotLeader = "NotLeader",
        /// Another replica owns the environment (shards).
        NotOwner = "NotOwner",
    }
}

names! {
    /// The type of a condition.
    ConditionType {
        Ready = "Ready",
        Invalid = "Invalid",
        Denied = "Denied",
        Conflict = "Conflict",
        Refused = "Refused",
        Expired = "Expired",
        SignatureRequired = "SignatureRequired",
        SecretsUnavailable = "SecretsUnavailable",
        VersionUnresolved = "VersionUnresolved",
        ResolvedTagMissing = "ResolvedTagMissing",
        TagsStale = "TagsStale",
        RenderFailed = "RenderFailed",
        ManifestsUnavailable = "ManifestsUnavailable",
        Reconciling = "Reconciling",
        Stalled = "Stalled",
        Drifted = "Drifted",
        SourceStale = "SourceStale",
    }
}

/// A Kubernetes-style condition, as stages attach it, the API serves it and
/// the state store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: ConditionType,
    #[serde(with = "true_false")]
    pub status: bool,
    pub reason: Reason,
    pub message: String,
}

impl Condition {
    /// A problem condition: `kind` is true, for `reason`.
    #[must_use]
    pub fn problem(kind: ConditionType, reason: Reason, message: impl Into<String>) -> Condition {
        Condition {
            kind,
            status: true,
            reason,
            message: message.into(),
        }
    }

    /// The `Ready` condition.
    #[must_use]
    pub fn ready(ready: bool, reason: Reason, message: impl Into<String>) -> Condition {
        Condition {
            kind: ConditionType::Ready,
            status: ready,
            reason,
            message: message.into(),
        }
    }
}

/// Kubernetes writes condition statuses as the strings `True` and `False`.
mod true_false {
    use serde::{Deserialize, Deserializer, Serializer};

    #[allow(
        clippy::trivially_copy_pass_by_ref,
        reason = "serde's `with` passes a reference"
    )]
    pub fn serialize<S: Serializer>(b: &bool, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if *b { "True" } else { "False" })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        match <std::borrow::Cow<'de, str>>::deserialize(d)?.as_ref() {
            "True" => Ok(true),
            "False" => Ok(false),
            other => Err(serde::de::Error::custom(format!(
                "condition status {other:?} is neither True nor False"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip_by_their_stable_names() {
        for r in Reason::ALL {
            assert_eq!(r.as_str().parse::<Reason>(), Ok(*r));
            let json = serde_json::to_string(r).unwrap();
            assert_eq!(serde_json::from_str::<Reason>(&json).unwrap(), *r);
        }
        assert!("NoSuchReason".parse::<Reason>().is_err());
    }

    #[test]
    fn conditions_serialize_like_kubernetes() {
        let c = Condition::ready(false, Reason::Planned, "planned: create");
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "Ready", "status": "False", "reason": "Planned", "message": "planned: create"})
        );
        assert_eq!(serde_json::from_value::<Condition>(json).unwrap(), c);
    }
}
