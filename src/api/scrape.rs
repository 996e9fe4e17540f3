//! `GET /metrics`: this manager's metrics, with the cluster's states read
//! at the moment of the scrape. A replica answers for itself.

use http::{header, HeaderValue, Response};
use swarm_proxy::{full, ProxyBody};

use super::{ApiError, Ctx};
use crate::cluster::engine::Health;
use crate::metrics::{Scrape, CONTENT_TYPE};

pub fn metrics(ctx: &Ctx<'_>) -> Result<Response<ProxyBody>, ApiError> {
    let engines = ctx.cluster().engines();
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    let by_health =
        Health::ALL.iter().map(|h| (h.as_str(), count(engines.iter().filter(|e| e.health() == *h).count()))).collect();
    let containers = count(engines.iter().map(|e| e.containers().len()).sum());
    let leader = ctx.api.leadership.as_ref().is_none_or(|l| l.is_primary());
    let text = ctx
        .api
        .metrics
        .encode(&Scrape { engines: by_health, containers, leader })
        .map_err(|e| ApiError::Internal(format!("cannot encode the metrics: {e}")))?;
    let mut resp = Response::new(full(text));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    Ok(resp)
}
