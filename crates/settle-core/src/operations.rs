//! Long-running operations: a request accepted with `202 Accepted` and run
//! later by a worker. The operation is a row, so it survives a restart; this
//! module holds only its lifecycle.

/// Where an operation is in its life. `pending` → `running` → `succeeded`
/// or `failed`; a `running` operation whose worker died goes back to work
/// when its lease expires, so it never stays `running` forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OperationStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl OperationStatus {
    pub fn parse(text: &str) -> Option<OperationStatus> {
        match text {
            "pending" => Some(OperationStatus::Pending),
            "running" => Some(OperationStatus::Running),
            "succeeded" => Some(OperationStatus::Succeeded),
            "failed" => Some(OperationStatus::Failed),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OperationStatus::Pending => "pending",
            OperationStatus::Running => "running",
            OperationStatus::Succeeded => "succeeded",
            OperationStatus::Failed => "failed",
        }
    }

    /// Whether the operation has its final answer.
    pub fn is_finished(self) -> bool {
        matches!(self, OperationStatus::Succeeded | OperationStatus::Failed)
    }

    /// The status an operation ends in, from the HTTP status the request
    /// would have answered synchronously: a 2xx succeeded, anything else failed.
    pub fn from_http_status(status: u16) -> OperationStatus {
        if (200..300).contains(&status) { OperationStatus::Succeeded } else { OperationStatus::Failed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_only_final_ones_are_finished() {
        for s in [OperationStatus::Pending, OperationStatus::Running, OperationStatus::Succeeded, OperationStatus::Failed] {
            assert_eq!(OperationStatus::parse(s.as_str()), Some(s));
        }
        assert!(OperationStatus::parse("done").is_none());
        assert!(!OperationStatus::Running.is_finished());
        assert!(OperationStatus::Failed.is_finished());
        assert_eq!(OperationStatus::from_http_status(201), OperationStatus::Succeeded);
        assert_eq!(OperationStatus::from_http_status(422), OperationStatus::Failed);
    }
}
