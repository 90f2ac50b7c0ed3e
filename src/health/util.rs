//! Readers of a live object's JSON: its `status.conditions` and its fields
//! by JSON pointer (kstatus's `util.go`).

use serde_json::Value;

/// One entry of `status.conditions`.
#[derive(Debug, Clone, Copy)]
pub(super) struct StatusCondition<'a> {
    pub(super) type_: &'a str,
    pub(super) status: &'a str,
    pub(super) reason: &'a str,
    pub(super) message: &'a str,
}

impl StatusCondition<'_> {
    pub(super) fn is_true(&self) -> bool {
        self.status == "True"
    }

    /// `reason: message`, or whichever of them is there.
    pub(super) fn describe(&self) -> String {
        match (self.reason.is_empty(), self.message.is_empty()) {
            (false, false) => format!("{}: {}", self.reason, self.message),
            (false, true) => self.reason.to_owned(),
            (true, false) => self.message.to_owned(),
            (true, true) => format!("{} is {}", self.type_, self.status),
        }
    }
}

/// The well-formed entries of `status.conditions` (entries without a type are
/// skipped).
pub(super) fn conditions(object: &Value) -> impl Iterator<Item = StatusCondition<'_>> {
    object
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let text = |key: &str| c.get(key).and_then(Value::as_str).unwrap_or_default();
            let type_ = text("type");
            (!type_.is_empty()).then(|| StatusCondition {
                type_,
                status: text("status"),
                reason: text("reason"),
                message: text("message"),
            })
        })
}

pub(super) fn condition<'a>(object: &'a Value, type_: &str) -> Option<StatusCondition<'a>> {
    conditions(object).find(|c| c.type_ == type_)
}

pub(super) fn int(object: &Value, pointer: &str) -> Option<i64> {
    object.pointer(pointer).and_then(Value::as_i64)
}

pub(super) fn int_or(object: &Value, pointer: &str, default: i64) -> i64 {
    int(object, pointer).unwrap_or(default)
}

pub(super) fn text<'a>(object: &'a Value, pointer: &str) -> Option<&'a str> {
    object.pointer(pointer).and_then(Value::as_str)
}
