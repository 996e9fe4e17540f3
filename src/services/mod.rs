//! Services on classic engines (`docker service`, `docker node`): the
//! swarm-mode API objects, the mapping of a task to a container, and the
//! planner that turns desired state into actions. Pure domain code: the
//! HTTP endpoints, the store and the reconciler loop use it.

pub mod constraints;
pub mod id;
pub mod labels;
pub mod model;
pub mod plan;
pub mod timestamp;

pub use constraints::{Constraint, ConstraintError};
pub use id::new_id;
pub use labels::{task_container, MappingError, TaskContainer, TaskIdentity};
pub use model::{Node, Service, ServiceSpec, SlotKey, SpecError, Task, TaskState};
pub use plan::{plan, Action, NodeView, Plan, StopReason, TaskRecord};
pub use timestamp::Timestamp;
