//! Creates whose answer was lost.
//!
//! A client can be told that a create failed, with a 500 for an engine
//! connection that broke or a 503 for a primary that died mid-request,
//! although the engine made the container, or makes it a moment later
//! (its create was still in flight). Nobody would know that container's
//! ID. The manager stamps every create with a swarm ID (a label), so such
//! a container can be found and removed: the client's view, "no container
//! was made", becomes true.

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use serde_json::Value;
use tokio::time::Instant;

use super::engine::{Engine, EngineError};
use super::{monitor, SWARM_ID_LABEL};
use crate::observe::Observed;

/// How long a lost create is looked for: an engine that restarts may take
/// minutes to answer again, and a create in flight on a loaded engine
/// seconds to land.
const LOOK_FOR: Duration = Duration::from_secs(300);
/// How often it is looked for.
const EVERY: Duration = Duration::from_secs(2);

/// The ID of the container stamped `swarm_id` on `engine`, if it has one.
pub async fn find_by_swarm_id(engine: &Engine, swarm_id: &str) -> Result<Option<String>, EngineError> {
    find_labelled(engine, SWARM_ID_LABEL, swarm_id).await
}

/// The ID of a container labelled `key=value` on `engine`, asked of the
/// engine itself (its create may not have reached the cache yet).
pub async fn find_labelled(engine: &Engine, key: &str, value: &str) -> Result<Option<String>, EngineError> {
    let filters = serde_json::json!({"label": [format!("{key}={value}")]}).to_string();
    let path = format!(
        "/containers/json?all=1&filters={}",
        percent_encoding::utf8_percent_encode(&filters, percent_encoding::NON_ALPHANUMERIC)
    );
    let listed: Value = engine.get_json(&path).await?;
    Ok(listed.as_array().and_then(|list| list.first()).and_then(|c| c["Id"].as_str()).map(str::to_string))
}

/// Looks for the container a failed create stamped `swarm_id` on the
/// engines `engines` gives (asked again on each look), for [`LOOK_FOR`],
/// and removes it when it shows up.
pub fn undo(swarm_id: String, engines: impl Fn() -> Vec<Arc<Engine>> + Send + 'static) {
    tokio::spawn(async move {
        let until = Instant::now() + LOOK_FOR;
        while Instant::now() < until {
            for engine in engines() {
                let Ok(Some(id)) = find_by_swarm_id(&engine, &swarm_id).await else { continue };
                let path = format!("/containers/{id}?force=1");
                if let Ok((status, _)) = engine.client.call(Method::DELETE, &path, None).await {
                    if status.is_success() || status == http::StatusCode::NOT_FOUND {
                        monitor::forget_container(&engine, &id).await;
                        Observed::LostCreateRemoved { id: &id, node: &engine.name() }.emit();
                        return;
                    }
                }
            }
            tokio::time::sleep(EVERY).await;
        }
    });
}
