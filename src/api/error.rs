//! API errors, and the one place they become HTTP answers.

use http::{Response, StatusCode};
use swarm_proxy::{ProxyBody, ProxyError};
use swarm_scheduler::{ExprError, ScheduleError};
use thiserror::Error;

use super::reply::json_error;
use crate::cluster::engine::{Engine, EngineError, Unreachable};
use crate::cluster::volumes::VolumePlacementError;
use crate::cluster::{CreateError, NameInUse};
use crate::services::{ConstraintError, SpecError};
use crate::state::StateError;

/// Everything a request can fail with. [`ApiError::status`] is the single
/// mapping from error to HTTP status, and the `From` impls below the single
/// mapping from the domain's errors.
#[derive(Debug, Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// No engine can take the request (none healthy, none fits).
    #[error("{0}")]
    NoNode(String),
    /// An engine could not be reached or failed; names the node.
    #[error(transparent)]
    Engine(#[from] Unreachable),
    /// The container's engine is flagged Unhealthy: answered at once rather
    /// than trying to connect. `container` is the name the client gave.
    #[error("Container {container} running on unhealthy node {node}")]
    UnhealthyNode { container: String, node: String },
    /// An engine's own refusal, answered with the engine's status.
    #[error("{message}")]
    Refused { status: StatusCode, message: String },
    /// A replica cannot reach a primary.
    #[error("{0}")]
    NoPrimary(String),
    #[error("{0}")]
    Internal(String),
    /// The engine stopped answering while the request waited for it, and
    /// was flagged Unhealthy meanwhile; `error` is its last refresh error.
    #[error("{node} stopped answering and was flagged unhealthy ({error})")]
    StoppedAnswering { node: String, error: String },
    /// A request body over the limit the manager reads.
    #[error("request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Refused { status, .. } => *status,
            ApiError::NoPrimary(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NoNode(_)
            | ApiError::Engine(_)
            | ApiError::UnhealthyNode { .. }
            | ApiError::StoppedAnswering { .. }
            | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn no_such_container(name: &str) -> ApiError {
        ApiError::NotFound(format!("No such container: {name}"))
    }

    pub fn engine(engine: &Engine, source: ProxyError) -> ApiError {
        ApiError::Engine(Unreachable::new(engine, source))
    }

    /// The Docker-style answer: `{"message": "..."}` with the mapped status.
    pub fn into_response(self) -> Response<ProxyBody> {
        json_error(self.status(), &self.to_string())
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        match e {
            EngineError::Status { status, message, .. }
                if [StatusCode::NOT_FOUND, StatusCode::CONFLICT, StatusCode::BAD_REQUEST].contains(&status) =>
            {
                ApiError::Refused { status, message }
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<NameInUse> for ApiError {
    fn from(e: NameInUse) -> ApiError {
        ApiError::Conflict(e.to_string())
    }
}

impl From<ExprError> for ApiError {
    fn from(e: ExprError) -> ApiError {
        ApiError::BadRequest(e.to_string())
    }
}

impl From<ScheduleError> for ApiError {
    fn from(e: ScheduleError) -> ApiError {
        ApiError::NoNode(e.to_string())
    }
}

impl From<CreateError> for ApiError {
    fn from(e: CreateError) -> ApiError {
        match e {
            CreateError::NotAnObject
            | CreateError::HexRepositoryName(_)
            | CreateError::Expression(_)
            | CreateError::ReschedulePolicy(_) => ApiError::BadRequest(e.to_string()),
            // Not a 404: the Docker CLI answers any 404 to a create by
            // pulling the image and trying again, which hides the message.
            CreateError::MissingReference(message) => ApiError::BadRequest(message),
            CreateError::NameInUse(e) => e.into(),
            CreateError::Unschedulable(e) => e.into(),
            CreateError::Unreachable(e) => ApiError::Engine(e),
            CreateError::Refused { status, message } => ApiError::Refused { status, message },
            CreateError::Encode(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<VolumePlacementError> for ApiError {
    fn from(e: VolumePlacementError) -> ApiError {
        match e {
            VolumePlacementError::NotAnObject | VolumePlacementError::Expression(_) => {
                ApiError::BadRequest(e.to_string())
            }
            VolumePlacementError::Unschedulable(e) => e.into(),
        }
    }
}

/// A service spec this cluster cannot run: the client's to fix.
impl From<SpecError> for ApiError {
    fn from(e: SpecError) -> ApiError {
        ApiError::BadRequest(e.to_string())
    }
}

impl From<ConstraintError> for ApiError {
    fn from(e: ConstraintError) -> ApiError {
        ApiError::BadRequest(e.to_string())
    }
}

impl From<StateError> for ApiError {
    fn from(e: StateError) -> ApiError {
        match e {
            StateError::OutOfSequence => ApiError::Conflict(e.to_string()),
            // swarm mode's wording, which scripts match on.
            StateError::NameTaken(_) => ApiError::Conflict(format!("rpc error: code = AlreadyExists desc = {e}")),
            StateError::Store(_) => {
                ApiError::Refused { status: StatusCode::SERVICE_UNAVAILABLE, message: e.to_string() }
            }
            StateError::File { .. } | StateError::Encode(_) | StateError::Corrupt { .. } => {
                ApiError::Internal(e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_errors_to_status() {
        assert_eq!(ApiError::no_such_container("x").status(), StatusCode::NOT_FOUND);
        assert_eq!(ApiError::Conflict("c".into()).status(), StatusCode::CONFLICT);
        assert_eq!(ApiError::BadRequest("b".into()).status(), StatusCode::BAD_REQUEST);
        assert_eq!(ApiError::NoPrimary("p".into()).status(), StatusCode::SERVICE_UNAVAILABLE);
        let refused = ApiError::Refused { status: StatusCode::NOT_FOUND, message: "No such image: x".into() };
        assert_eq!(refused.status(), StatusCode::NOT_FOUND);
        let down = ApiError::Engine(Unreachable {
            node: "node-02".into(),
            addr: "10.0.0.2:2375".into(),
            source: ProxyError::Connect {
                addr: "10.0.0.2:2375".into(),
                reason: "Connection refused".into(),
                refused: true,
            },
        });
        assert_eq!(down.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let unhealthy = ApiError::UnhealthyNode { container: "web".into(), node: "node-02".into() };
        assert_eq!(unhealthy.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(unhealthy.to_string(), "Container web running on unhealthy node node-02");
        assert!(down.to_string().starts_with("node-02 (10.0.0.2:2375): "), "{down}");
    }

    #[test]
    fn maps_create_errors() {
        let conflict: ApiError = CreateError::NameInUse(NameInUse { name: "web".into(), holder: "abc".into() }).into();
        assert_eq!(conflict.status(), StatusCode::CONFLICT);
        assert!(conflict
            .to_string()
            .starts_with("Conflict. The container name \"/web\" is already in use by container \"abc\"."));
        let refused: ApiError =
            CreateError::Refused { status: StatusCode::BAD_REQUEST, message: "invalid mount".into() }.into();
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
        assert_eq!(ApiError::from(CreateError::NotAnObject).status(), StatusCode::BAD_REQUEST);
        let plugin: ApiError = CreateError::MissingReference("plugin \"x\" not found".into()).into();
        assert_eq!((plugin.status(), plugin.to_string().as_str()), (StatusCode::BAD_REQUEST, "plugin \"x\" not found"));
        let hex = ApiError::from(CreateError::HexRepositoryName("ab".into()));
        assert_eq!(hex.status(), StatusCode::BAD_REQUEST);
        assert_eq!(hex.to_string(), "invalid repository name (ab), cannot specify 64-byte hexadecimal strings");
    }
}
