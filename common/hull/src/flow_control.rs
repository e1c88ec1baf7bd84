//! The flow-control answer a connector gives to a Hull notification.

use serde::{Deserialize, Serialize};

/// What Hull should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowControlType {
    /// Deliver the next notification.
    Next,
    /// Deliver this notification again.
    Retry,
}

/// `{"type": "next"|"retry", "size": n, "in": ms, "in_time": ms}`; absent fields are omitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowControl {
    /// `next` or `retry`.
    #[serde(rename = "type")]
    pub type_: FlowControlType,
    /// Number of messages in the next notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u32>,
    /// Delay before the next notification, in milliseconds.
    #[serde(rename = "in", default, skip_serializing_if = "Option::is_none")]
    pub in_ms: Option<u64>,
    /// Time window (ms) the platform may wait to fill `size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_time: Option<u64>,
}

impl FlowControl {
    /// `{"type":"next","size":size,"in":in_ms}`.
    pub fn next(size: u32, in_ms: u64) -> Self {
        FlowControl {
            type_: FlowControlType::Next,
            size: Some(size),
            in_ms: Some(in_ms),
            in_time: None,
        }
    }

    /// `{"type":"retry","size":size,"in":in_ms}`.
    pub fn retry(size: u32, in_ms: u64) -> Self {
        FlowControl {
            type_: FlowControlType::Retry,
            size: Some(size),
            in_ms: Some(in_ms),
            in_time: None,
        }
    }

    /// Sets `in_time`.
    pub fn with_in_time(mut self, in_time: u64) -> Self {
        self.in_time = Some(in_time);
        self
    }
}

/// The `error` object of a notification response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationError {
    /// Readable message.
    pub message: String,
    /// Error kind, e.g. `NotificationValidationError`.
    pub name: String,
    /// Machine code, e.g. `INVALID_SIGNATURE`.
    pub code: String,
}

/// The JSON body answered to a notification: `{"flow_control":{…}}` plus an optional `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationResponse {
    /// What Hull should do next.
    pub flow_control: FlowControl,
    /// Why the notification failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<NotificationError>,
}

impl NotificationResponse {
    /// A response without error.
    pub fn new(flow_control: FlowControl) -> Self {
        NotificationResponse {
            flow_control,
            error: None,
        }
    }

    /// A response carrying an error.
    pub fn with_error(
        flow_control: FlowControl,
        message: impl Into<String>,
        name: impl Into<String>,
        code: impl Into<String>,
    ) -> Self {
        NotificationResponse {
            flow_control,
            error: Some(NotificationError {
                message: message.into(),
                name: name.into(),
                code: code.into(),
            }),
        }
    }

    /// The answer to a notification that failed verification (Hull retries it):
    /// `{"flow_control":{"type":"retry","size":10,"in":1000,"in_time":10},"error":{…}}`.
    pub fn verification_failed(error: &super::notification::VerifyError) -> Self {
        Self::with_error(
            FlowControl::retry(10, 1000).with_in_time(10),
            error.message(),
            "NotificationValidationError",
            error.code(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flow_control_json_shapes() {
        let ok = NotificationResponse::new(FlowControl::next(50, 1));
        assert_eq!(
            serde_json::to_value(&ok).expect("json"),
            json!({"flow_control": {"type": "next", "size": 50, "in": 1}})
        );
        let retry = NotificationResponse::with_error(
            FlowControl::retry(10, 1000).with_in_time(10),
            "Invalid signature",
            "NotificationValidationError",
            "INVALID_SIGNATURE",
        );
        assert_eq!(
            serde_json::to_value(&retry).expect("json"),
            json!({
                "flow_control": {"type": "retry", "size": 10, "in": 1000, "in_time": 10},
                "error": {"message": "Invalid signature", "name": "NotificationValidationError", "code": "INVALID_SIGNATURE"}
            })
        );
        let bare = FlowControl {
            type_: FlowControlType::Next,
            size: None,
            in_ms: None,
            in_time: None,
        };
        assert_eq!(
            serde_json::to_value(bare).expect("json"),
            json!({"type": "next"})
        );
        let parsed: FlowControl =
            serde_json::from_value(json!({"type": "retry", "in": 5})).expect("parse");
        assert_eq!(parsed.in_ms, Some(5));
    }
}
