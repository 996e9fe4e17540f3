//! Creates whose answer was lost.
//!
//! A client can be told that a create failed, with a 500 for an engine
//! connection that broke or a 503 for a primary that died mid-request,
//! although the engine made the container, or makes it a moment later
//! (its create was still in flight). Nobody would know that container's
//! ID. The manager stamps every create with a swarm ID (a label), so such
//! a container can be found and removed: the client's view, "no container
//! was made", becomes true.
//!
//! Such a create is put on record in the desired state ([`undo`]); the
//! primary's [`sweep`] looks for it there until the record expires, so a
//! primary that dies (they are the usual cause) hands the search on.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Method;
use serde_json::Value;

use super::engine::{Engine, EngineError};
use super::{monitor, Cluster, SWARM_ID_LABEL};
use crate::observe::Observed;
use crate::state::LostCreate;

/// How long a lost create is looked for: an engine that restarts may take
/// minutes to answer again, and a create in flight on a loaded engine
/// seconds to land.
const LOOK_FOR: Duration = Duration::from_secs(300);
/// How often the primary looks for the lost creates on record.
const EVERY: Duration = Duration::from_secs(2);

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Puts the create stamped `swarm_id` on record as lost: its container is
/// looked for on the engines at `engines` (any engine when empty) for
/// [`LOOK_FOR`], and removed if it shows up.
pub async fn undo(cluster: &Cluster, swarm_id: &str, engines: Vec<String>) {
    let record = LostCreate { engines, until: unix_now() + LOOK_FOR.as_secs() };
    if let Err(e) = cluster.state.record_lost_create(swarm_id, record).await {
        Observed::LostCreateNotRecorded { swarm_id, error: &e.to_string() }.emit();
    }
}

/// Every [`EVERY`] while `is_primary` says so: reads the lost creates on
/// record, removes the containers that showed up, and takes off the record
/// those removed or looked for long enough.
pub async fn sweep(cluster: Arc<Cluster>, is_primary: impl Fn() -> bool) {
    loop {
        tokio::time::sleep(EVERY).await;
        if !is_primary() {
            continue;
        }
        // A store that fails now is read again at the next round.
        let Ok(records) = cluster.state.lost_creates().await else { continue };
        for (swarm_id, record) in records {
            let done = record.until < unix_now() || remove_if_made(&cluster, &swarm_id, &record.engines).await;
            if done {
                // Should this fail, the next round does it again.
                let _ = cluster.state.forget_lost_create(&swarm_id).await;
            }
        }
    }
}

/// Looks for the container stamped `swarm_id` on the healthy engines among
/// `addrs` (all of them when empty); true once it was found and removed.
async fn remove_if_made(cluster: &Cluster, swarm_id: &str, addrs: &[String]) -> bool {
    let engines = cluster.healthy_engines().into_iter().filter(|e| addrs.is_empty() || addrs.contains(&e.addr));
    for engine in engines {
        let Ok(Some(id)) = find_by_swarm_id(&engine, swarm_id).await else { continue };
        let path = format!("/containers/{id}?force=1");
        if let Ok((status, _)) = engine.client.call(Method::DELETE, &path, None).await {
            if status.is_success() || status == http::StatusCode::NOT_FOUND {
                monitor::forget_container(&engine, &id).await;
                Observed::LostCreateRemoved { id: &id, node: &engine.name() }.emit();
                return true;
            }
        }
    }
    false
}

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
