//! The tasks that keep one engine's state current: validation, the refresh
//! loop with failure counting, and the events stream.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::{stream, StreamExt};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use rand::Rng;
use serde_json::{Map, Value};

use super::container::{names_of, Container, Details};
use super::engine::{images_from, Engine, EngineError, EngineInfo, NetworkRecord, VolumeRecord};
use super::events::{docker_timestamp, EventCursor, NodeTag};
use super::{EngineSignal, MonitorContext};
use crate::observe::Observed;

/// Inspects run at most this many at a time during a refresh.
const INSPECT_CONCURRENCY: usize = 4;
/// Engines fully refreshed at once (see `MonitorContext::full_refreshes`).
pub const FULL_REFRESHES_AT_ONCE: usize = 32;
/// How long the changes engine events announce gather before they are
/// refreshed together: a container's events come in bursts (`kill`, `die`,
/// `disconnect`, `stop`), and one list serves every container of a batch.
const CHANGES_WINDOW: Duration = Duration::from_millis(20);
/// Containers named in one filtered list call (the IDs go in the URL).
const CHANGES_PER_LIST: usize = 50;
/// First wait before reopening a lost events stream; doubles up to the refresh interval.
const EVENTS_RETRY_START: Duration = Duration::from_millis(100);

/// Timing knobs of engine monitoring, from `swarm manage` flags.
#[derive(Debug, Clone, Copy)]
pub struct MonitorConfig {
    pub refresh_min: Duration,
    pub refresh_max: Duration,
    /// Failed refreshes in a row, spaced by the refresh interval, before a
    /// healthy engine is flagged unhealthy; ≥ 1.
    pub failure_retry: u32,
}

impl MonitorConfig {
    fn random_interval(&self) -> Duration {
        if self.refresh_max <= self.refresh_min {
            return self.refresh_min;
        }
        rand::thread_rng().gen_range(self.refresh_min..=self.refresh_max)
    }

    /// The wait before the next scheduled refresh of an engine with
    /// `failures` counted failures in a row: a random refresh interval,
    /// times one more than the failures (at most `failure_retry`), as the
    /// original backed off from failing engines.
    fn wait_after(&self, failures: u32) -> Duration {
        self.random_interval().saturating_mul(failures.min(self.failure_retry).saturating_add(1))
    }
}

/// Runs an engine for as long as discovery lists it: validates it, then
/// refreshes it and follows its events. Cancelled by aborting the task.
pub async fn run(engine: Arc<Engine>, context: Arc<MonitorContext>) {
    let info = validate(&engine, &context).await;
    let tag = NodeTag::new(&info, &engine.addr, &engine.ip);
    if let Err(e) = refresh_all_bounded(&engine, &info, &context).await {
        note_failure(&engine, &context, &tag, &e);
    }
    Observed::EngineRegistered { name: &info.name, addr: &engine.addr }.emit();
    context.events.publish(tag.swarm_event("engine_connect"));
    context.signal(EngineSignal::Back(engine.clone()));
    context.create_cluster_networks(&engine).await;

    let events = tokio::spawn(follow_events(engine.clone(), context.clone(), tag.clone()));
    let _abort_events = AbortOnDrop(events);
    let _abort_changes = AbortOnDrop(tokio::spawn(refresh_changes(engine.clone())));
    // The next scheduled refresh. A wake (the events stream broke or
    // reopened, an engine came back) refreshes sooner, but leaves the
    // schedule alone when it fails on an engine already failing: only
    // refreshes spaced by the refresh interval count toward
    // `--engine-failure-retry`, so a dockerd restart shorter than the
    // retries is never flagged.
    let schedule = tokio::time::sleep(context.config.wait_after(engine.failures()));
    tokio::pin!(schedule);
    loop {
        tokio::select! {
            _ = &mut schedule => {}
            _ = engine.wake.notified() => {}
        }
        let scheduled = schedule.is_elapsed();
        let result = match engine.fetch_info().await {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                engine.set_info(fresh.clone());
                refresh_all_bounded(&engine, &fresh, &context).await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => note_success(&engine, &context, &tag),
            Err(e) if scheduled || engine.failures() == 0 => note_failure(&engine, &context, &tag, &e),
            Err(e) => {
                note_early_failure(&engine, &tag, &e);
                continue;
            }
        }
        schedule.set(tokio::time::sleep(context.config.wait_after(engine.failures())));
    }
}

/// Aborts a task when dropped, so an engine's helper tasks end with it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Retries validation until the address proves to be a Docker engine.
async fn validate(engine: &Engine, context: &MonitorContext) -> Arc<EngineInfo> {
    let mut wait = Duration::from_millis(500);
    let mut last_error = String::new();
    loop {
        match engine.fetch_info().await {
            Ok(info) => {
                let info = Arc::new(info);
                engine.validated(info.clone());
                return info;
            }
            Err(e) => {
                let error = e.to_string();
                if error != last_error {
                    Observed::EngineValidationFailed { addr: &engine.addr, error: &error }.emit();
                }
                engine.validation_failed(error.clone());
                last_error = error;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = engine.wake.notified() => {}
        }
        wait = (wait * 2).min(context.config.refresh_max.max(Duration::from_secs(1)));
    }
}

fn note_success(engine: &Arc<Engine>, context: &MonitorContext, tag: &NodeTag) {
    if let Some(retries) = engine.refresh_succeeded() {
        Observed::EngineRevived { name: &tag.name, id: &tag.id, retries }.record(&context.metrics);
        context.events.publish(tag.swarm_event("engine_reconnect"));
        context.signal(EngineSignal::Back(engine.clone()));
        engine.wake.notify_one();
    }
}

/// A refresh that counts toward the retry count failed.
fn note_failure(engine: &Arc<Engine>, context: &MonitorContext, tag: &NodeTag, error: &EngineError) {
    let error = error.to_string();
    Observed::EngineRefreshFailed { name: &tag.name, error: &error }.emit();
    if let Some(failures) = engine.refresh_failed(error, context.config.failure_retry) {
        Observed::EngineUnhealthy { name: &tag.name, id: &tag.id, failures }.record(&context.metrics);
        context.events.publish(tag.swarm_event("engine_disconnect"));
        context.signal(EngineSignal::Lost(engine.clone()));
    }
}

/// A refresh failed sooner than the refresh interval after a counted
/// failure: the engine's last contact failed, but its health is unchanged.
fn note_early_failure(engine: &Engine, tag: &NodeTag, error: &EngineError) {
    let error = error.to_string();
    Observed::EngineRefreshUncounted { name: &tag.name, error: &error }.emit();
    engine.contact_failed(error);
}

/// [`refresh_all`] once one of the [`FULL_REFRESHES_AT_ONCE`] turns is free.
async fn refresh_all_bounded(engine: &Engine, info: &EngineInfo, context: &MonitorContext) -> Result<(), EngineError> {
    // The semaphore is never closed; were it, refreshing unbounded is still right.
    let _turn = context.full_refreshes.acquire().await.ok();
    refresh_all(engine, info).await
}

/// Refreshes containers, images, networks and volumes.
pub async fn refresh_all(engine: &Engine, info: &EngineInfo) -> Result<(), EngineError> {
    let (containers, images, networks, volumes) = tokio::join!(
        refresh_containers(engine, info),
        fetch(engine, Kind::Images),
        fetch(engine, Kind::Networks),
        fetch(engine, Kind::Volumes),
    );
    containers?;
    for fetched in [images?, networks?, volumes?] {
        fetched.store(engine);
    }
    engine.touch();
    Ok(())
}

/// The engine objects the manager caches besides containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Images,
    Networks,
    Volumes,
}

impl Kind {
    /// The kind an engine event of `Type` `event_type` is about.
    fn of_event(event_type: &str) -> Option<Kind> {
        match event_type {
            "image" => Some(Kind::Images),
            "network" => Some(Kind::Networks),
            "volume" => Some(Kind::Volumes),
            _ => None,
        }
    }

    fn path(self) -> &'static str {
        match self {
            Kind::Images => "/images/json",
            Kind::Networks => "/networks",
            Kind::Volumes => "/volumes",
        }
    }
}

/// One kind's list, decoded.
enum Fetched {
    Images(Vec<swarm_scheduler::ImageSnapshot>),
    Networks(Vec<NetworkRecord>),
    Volumes(Vec<VolumeRecord>),
}

impl Fetched {
    fn store(self, engine: &Engine) {
        match self {
            Fetched::Images(images) => engine.set_images(images),
            Fetched::Networks(networks) => engine.set_networks(networks),
            Fetched::Volumes(volumes) => engine.set_volumes(volumes),
        }
    }
}

async fn fetch(engine: &Engine, kind: Kind) -> Result<Fetched, EngineError> {
    let body = engine.get_bytes(kind.path()).await?;
    let decoded = match kind {
        Kind::Images => images_from(&body).map(Fetched::Images),
        Kind::Networks => NetworkRecord::list_from(&body).map(Fetched::Networks),
        Kind::Volumes => VolumeRecord::list_from(&body).map(Fetched::Volumes),
    };
    decoded.map_err(|e| engine.decode_error(kind.path(), e))
}

/// Refreshes only images, networks or volumes.
pub async fn refresh_kind(engine: &Engine, kind: Kind) -> Result<(), EngineError> {
    fetch(engine, kind).await?.store(engine);
    Ok(())
}

fn into_array(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items,
        _ => Vec::new(),
    }
}

/// Re-lists all containers; inspects only the new ones and those whose
/// state or names changed, and keeps the others' inspect.
pub async fn refresh_containers(engine: &Engine, info: &EngineInfo) -> Result<(), EngineError> {
    let cache = engine.lock_containers().await;
    let listed = into_array(engine.get_json("/containers/json?all=1").await?);
    let known: HashMap<String, Arc<Container>> = engine.containers().into_iter().map(|c| (c.id.clone(), c)).collect();
    let mut to_inspect = Vec::new();
    let mut fresh = HashMap::with_capacity(listed.len());
    for entry in listed {
        let Value::Object(summary) = entry else {
            continue;
        };
        let Some(id) = summary.get("Id").and_then(Value::as_str).map(str::to_string) else {
            continue;
        };
        match known.get(&id) {
            Some(old) if unchanged(old, &summary) => {
                if let Some(c) = Container::from_summary(summary, old.details.clone(), &info.name, &engine.ip) {
                    fresh.insert(id, Arc::new(c));
                }
            }
            _ => to_inspect.push((id, summary)),
        }
    }
    let inspected: Vec<_> = stream::iter(to_inspect)
        .map(|(id, summary)| async move {
            let inspect = engine.get_json(&format!("/containers/{id}/json")).await;
            (id, summary, inspect)
        })
        .buffer_unordered(INSPECT_CONCURRENCY)
        .collect()
        .await;
    for (id, summary, inspect) in inspected {
        let details = match inspect {
            Ok(inspect) => Arc::new(Details::from_inspect(&inspect, info.cpus)),
            // Removed between list and inspect: it is gone.
            Err(EngineError::Status { status: StatusCode::NOT_FOUND, .. }) => continue,
            // Any other failure (an engine restarting or overloaded) says
            // nothing about the container: it stays listed, and as it is
            // not inspected, the next refresh inspects it again.
            Err(_) => match known.get(&id) {
                Some(old) => {
                    fresh.insert(id, old.clone());
                    continue;
                }
                None => Arc::new(Details::default()),
            },
        };
        if let Some(c) = Container::from_summary(summary, details, &info.name, &engine.ip) {
            fresh.insert(id, Arc::new(c));
        }
    }
    cache.replace_all(fresh);
    Ok(())
}

fn unchanged(old: &Container, summary: &Map<String, Value>) -> bool {
    old.details.inspected
        && summary.get("State").and_then(Value::as_str) == Some(old.state.as_str())
        && names_of(summary) == old.names
}

/// Refreshes one container after an event about it (or drops it if gone).
pub async fn refresh_container(engine: &Engine, id: &str) -> Result<Option<Arc<Container>>, EngineError> {
    let cache = engine.lock_containers().await;
    let Some(info) = engine.info() else {
        return Ok(None);
    };
    let filter = format!(
        "/containers/json?all=1&filters={}",
        percent_encoding::utf8_percent_encode(&format!("{{\"id\":[\"{id}\"]}}"), percent_encoding::NON_ALPHANUMERIC)
    );
    let listed = into_array(engine.get_json(&filter).await?);
    let summary = listed.into_iter().find_map(|v| match v {
        Value::Object(m) if m.get("Id").and_then(Value::as_str) == Some(id) => Some(m),
        _ => None,
    });
    let Some(summary) = summary else {
        cache.remove(id, "not listed by the engine");
        return Ok(None);
    };
    let inspect = engine.get_json(&format!("/containers/{id}/json")).await?;
    let container =
        Container::from_summary(summary, Arc::new(Details::from_inspect(&inspect, info.cpus)), &info.name, &engine.ip)
            .map(Arc::new);
    if let Some(c) = &container {
        cache.upsert(c.clone());
    }
    Ok(container)
}

/// Follows the engine's `/events` stream: publishes every event tagged with
/// the node, and refreshes what each event changed. Reopens the stream with
/// backoff when it ends, from where it stood (`since`, so the engine replays
/// what happened meanwhile, a restart included, and repeats are dropped), and
/// asks for a full refresh each time.
async fn follow_events(engine: Arc<Engine>, context: Arc<MonitorContext>, tag: NodeTag) {
    let mut retry = EVENTS_RETRY_START;
    let mut cursor = EventCursor::default();
    loop {
        let opened = std::time::Instant::now();
        let (was_open, error) = match stream_events(&engine, &context, &tag, &mut cursor).await {
            Ok(()) => (true, "stream closed by the engine".to_string()),
            Err((was_open, e)) => (was_open, e.to_string()),
        };
        if opened.elapsed() > Duration::from_secs(5) {
            retry = EVENTS_RETRY_START;
        }
        Observed::EngineEventsLost { name: &tag.name, error: &error, retry_in: retry }.record(&context.metrics);
        if was_open {
            // A stream that breaks is the fastest sign of a dead engine.
            engine.wake.notify_one();
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(context.config.refresh_min.max(EVENTS_RETRY_START));
    }
}

/// Reads the events stream until it ends. The error says whether the stream
/// had been opened before it failed.
async fn stream_events(
    engine: &Arc<Engine>,
    context: &MonitorContext,
    tag: &NodeTag,
    cursor: &mut EventCursor,
) -> Result<(), (bool, EngineError)> {
    let since = cursor.resume_since().map(docker_timestamp);
    let path = match &since {
        Some(since) => format!("/events?since={since}"),
        None => "/events".to_string(),
    };
    let decode_error =
        |reason: String| EngineError::Decode { addr: engine.addr.clone(), path: "/events".into(), reason };
    let req = Request::builder()
        .method(Method::GET)
        .uri(&path)
        .body(swarm_proxy::empty())
        .map_err(|e| (false, decode_error(e.to_string())))?;
    let resp = engine.client.send(req).await.map_err(|e| (false, e.into()))?;
    if !resp.status().is_success() {
        return Err((
            false,
            EngineError::Status {
                addr: engine.addr.clone(),
                path: "/events".into(),
                status: resp.status(),
                message: String::new(),
            },
        ));
    }
    if let Some(since) = &since {
        Observed::EngineEventsResumed { name: &tag.name, since }.emit();
    }
    if let Some(now) = engine_clock(resp.headers()) {
        cursor.opened(now);
    }
    // Catch up on whatever happened while the stream was down.
    engine.wake.notify_one();
    let mut body = resp.into_body();
    let mut buffer = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| (true, decode_error(e.to_string())))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buffer.extend_from_slice(&data);
        while let Some(newline) = buffer.iter().position(|b| *b == b'\n') {
            let line = buffer.split_to(newline + 1);
            if let Ok(event) = serde_json::from_slice::<Value>(&line[..newline]) {
                if cursor.admit(&event) {
                    react(engine, &event);
                    context.events.publish(tag.tag(event));
                }
            }
        }
    }
    Ok(())
}

/// The engine's clock in nanoseconds, from the `Date` header of its answer
/// (whole seconds: a stream resumed from it may replay up to a second from
/// before it first opened, which is better than losing what followed).
fn engine_clock(headers: &http::HeaderMap) -> Option<i64> {
    let date = httpdate::parse_http_date(headers.get(http::header::DATE)?.to_str().ok()?).ok()?;
    let since_epoch = date.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(since_epoch.as_nanos()).ok()
}

/// What an engine event asks of the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reaction {
    /// The container is gone.
    Forget(String),
    /// The container changed.
    Refresh(String),
    /// Images, networks or volumes changed, and with them a container
    /// (connected to or disconnected from a network, say) when named.
    RefreshKind(Kind, Option<String>),
}

/// Updates the cache after an engine event, without blocking the stream.
fn react(engine: &Arc<Engine>, event: &Value) {
    let Some(reaction) = reaction(event) else {
        return;
    };
    match reaction {
        Reaction::Refresh(id) => engine.mark_changed(id),
        Reaction::Forget(id) => {
            let engine = engine.clone();
            tokio::spawn(async move { forget_container(&engine, &id).await });
        }
        Reaction::RefreshKind(kind, container) => {
            if let Some(id) = container {
                engine.mark_changed(id);
            }
            let engine = engine.clone();
            // A failed refresh here is caught by the next full refresh.
            tokio::spawn(async move {
                let _ = refresh_kind(&engine, kind).await;
            });
        }
    }
}

/// Refreshes the containers engine events marked changed, a batch at a
/// time, for as long as the engine is monitored.
async fn refresh_changes(engine: Arc<Engine>) {
    loop {
        engine.changes_marked().await;
        tokio::time::sleep(CHANGES_WINDOW).await;
        let changed = engine.take_changed();
        for batch in changed.chunks(CHANGES_PER_LIST) {
            // A failed refresh is caught by the next full refresh.
            let _ = refresh_batch(&engine, batch).await;
        }
    }
}

/// Refreshes `ids` with one filtered list and an inspect of each listed
/// one; those the engine does not list are gone.
async fn refresh_batch(engine: &Engine, ids: &[String]) -> Result<(), EngineError> {
    let cache = engine.lock_containers().await;
    let Some(info) = engine.info() else {
        return Ok(());
    };
    let filter = serde_json::json!({ "id": ids }).to_string();
    let path = format!(
        "/containers/json?all=1&filters={}",
        percent_encoding::utf8_percent_encode(&filter, percent_encoding::NON_ALPHANUMERIC)
    );
    let listed: HashMap<String, Map<String, Value>> = into_array(engine.get_json(&path).await?)
        .into_iter()
        .filter_map(|v| match v {
            Value::Object(m) => Some((m.get("Id")?.as_str()?.to_string(), m)),
            _ => None,
        })
        .filter(|(id, _)| ids.contains(id))
        .collect();
    let inspected: Vec<_> = stream::iter(listed)
        .map(|(id, summary)| async move {
            let inspect = engine.get_json(&format!("/containers/{id}/json")).await;
            (id, summary, inspect)
        })
        .buffer_unordered(INSPECT_CONCURRENCY)
        .collect()
        .await;
    let mut kept = Vec::with_capacity(inspected.len());
    for (id, summary, inspect) in inspected {
        let details = match inspect {
            Ok(inspect) => Arc::new(Details::from_inspect(&inspect, info.cpus)),
            Err(EngineError::Status { status: StatusCode::NOT_FOUND, .. }) => continue,
            // Kept as it was; the next full refresh inspects it again.
            Err(_) => {
                kept.push(id);
                continue;
            }
        };
        if let Some(c) = Container::from_summary(summary, details, &info.name, &engine.ip) {
            kept.push(id);
            cache.upsert(Arc::new(c));
        }
    }
    for id in ids.iter().filter(|id| !kept.contains(id)) {
        cache.remove(id, "not listed by the engine after an event");
    }
    Ok(())
}

/// What `event`, as an engine sent it, asks of the cache; `None` when
/// nothing the manager caches changed.
fn reaction(event: &Value) -> Option<Reaction> {
    let kind = event["Type"].as_str().unwrap_or("container");
    let action = event["Action"].as_str().or(event["status"].as_str()).unwrap_or("");
    let actor = event["Actor"]["ID"].as_str().or(event["id"].as_str()).unwrap_or("");
    match kind {
        "container" => {
            if action == "destroy" {
                return Some(Reaction::Forget(actor.to_string()));
            }
            const CHANGES: [&str; 12] = [
                "create",
                "start",
                "restart",
                "die",
                "kill",
                "stop",
                "pause",
                "unpause",
                "rename",
                "update",
                "oom",
                "health_status",
            ];
            let changed = CHANGES.iter().any(|a| action == *a || action.starts_with("health_status"));
            changed.then(|| Reaction::Refresh(actor.to_string()))
        }
        _ => {
            let container = event["Actor"]["Attributes"]["container"].as_str().map(str::to_string);
            match (kind, action) {
                // A container joined or left a network, or a volume was
                // mounted: the lists are the same, the container changed.
                ("network", "connect" | "disconnect") | ("volume", "mount" | "unmount") => {
                    container.map(Reaction::Refresh)
                }
                _ => Kind::of_event(kind).map(|kind| Reaction::RefreshKind(kind, container)),
            }
        }
    }
}

/// Drops a container the engine no longer has (removed through the
/// manager, destroyed, or rescheduled away), in order with refreshes.
pub async fn forget_container(engine: &Engine, id: &str) {
    engine.lock_containers().await.remove(id, "removed or destroyed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_engines_are_refreshed_less_often() {
        let second = Duration::from_secs(1);
        let config = MonitorConfig { refresh_min: second, refresh_max: second, failure_retry: 3 };
        assert_eq!(config.wait_after(0), second);
        assert_eq!(config.wait_after(1), 2 * second);
        assert_eq!(config.wait_after(3), 4 * second);
        assert_eq!(config.wait_after(u32::MAX), 4 * second, "at most failure_retry + 1 intervals");
        let spread = MonitorConfig { refresh_min: second, refresh_max: 2 * second, failure_retry: 3 };
        for _ in 0..20 {
            assert!((2 * second..=4 * second).contains(&spread.wait_after(1)));
        }
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use crate::proptest_json::engine_json;
    use proptest::prelude::*;
    use serde_json::json;

    proptest! {
        /// Any event gives a reaction or none.
        #[test]
        fn any_event_has_a_reaction_or_none(event in engine_json()) {
            let _ = reaction(&event);
        }
    }

    #[test]
    fn events_say_what_to_refresh() {
        let container = |action: &str| json!({"Type": "container", "Action": action, "Actor": {"ID": "c1"}});
        assert_eq!(reaction(&container("destroy")), Some(Reaction::Forget("c1".into())));
        assert_eq!(reaction(&container("start")), Some(Reaction::Refresh("c1".into())));
        assert_eq!(reaction(&container("health_status: healthy")), Some(Reaction::Refresh("c1".into())));
        assert_eq!(reaction(&container("exec_start: sh")), None);
        // Old engines: `status` and `id`, no `Type`.
        assert_eq!(reaction(&json!({"status": "die", "id": "c2"})), Some(Reaction::Refresh("c2".into())));
        let connect = json!({"Type": "network", "Action": "connect", "Actor": {"Attributes": {"container": "c3"}}});
        assert_eq!(reaction(&connect), Some(Reaction::Refresh("c3".into())));
        let created = json!({"Type": "network", "Action": "create", "Actor": {"ID": "n1"}});
        assert_eq!(reaction(&created), Some(Reaction::RefreshKind(Kind::Networks, None)));
        assert_eq!(reaction(&json!({"Type": "plugin"})), None);
    }
}
