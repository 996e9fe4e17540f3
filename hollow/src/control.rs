//! The control endpoint of a fleet, for benches that run `hollow-engine`
//! as a separate process:
//!
//! * `GET /stats`: engines, containers, events emitted so far, the churn;
//! * `POST /churn?rate=EVENTS_PER_SECOND[&engines=N]`: starts (or
//!   changes) the churn; `rate=0` stops it;
//! * `DELETE /churn`: stops it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::api::query_get;
use crate::churn::ChurnConfig;
use crate::fleet::Fleet;

/// `GET /stats`'s answer.
pub fn stats(fleet: &Fleet) -> Value {
    let events = fleet.event_counts();
    json!({
        "engines": fleet.len(),
        "containers": fleet.containers(),
        "events": {
            "total": events.total,
            "container": events.container,
            "network": events.network,
            "volume": events.volume,
            "churn": events.churn,
        },
        "churn": fleet.churn().map(|c| json!({
            "events_per_second": c.events_per_second,
            "engines": c.engines.unwrap_or(fleet.len()).min(fleet.len()),
        })),
    })
}

fn answer(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut bytes = serde_json::to_vec(body).unwrap_or_default();
    bytes.push(b'\n');
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn handle(fleet: &Fleet, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let query = req.uri().query().unwrap_or("");
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/stats") => answer(StatusCode::OK, &stats(fleet)),
        (&Method::POST, "/churn") => {
            let rate = query_get(query, "rate").and_then(|r| r.parse::<f64>().ok());
            let engines = query_get(query, "engines").map(|n| n.parse::<usize>());
            match (rate, engines) {
                (Some(rate), None) => fleet.set_churn(ChurnConfig { events_per_second: rate, engines: None }),
                (Some(rate), Some(Ok(n))) => fleet.set_churn(ChurnConfig { events_per_second: rate, engines: Some(n) }),
                _ => {
                    let message = "usage: POST /churn?rate=EVENTS_PER_SECOND[&engines=N]";
                    return answer(StatusCode::BAD_REQUEST, &json!({"message": message}));
                }
            }
            answer(StatusCode::OK, &stats(fleet))
        }
        (&Method::DELETE, "/churn") => {
            fleet.stop_churn();
            answer(StatusCode::OK, &stats(fleet))
        }
        _ => answer(StatusCode::NOT_FOUND, &json!({"message": "page not found"})),
    }
}

/// Serves the control endpoint on `listener` until aborted.
pub async fn serve(listener: TcpListener, fleet: Arc<Fleet>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let fleet = fleet.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let response = handle(&fleet, &req);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
