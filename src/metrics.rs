//! The manager's metrics, served as `GET /metrics` in the OpenMetrics text
//! format (which Prometheus scrapes).
//!
//! Counters move only through [`crate::observe::Observed::record`], so a
//! count and the log line of the same fact come from one place. States
//! (engines by health, containers, leader) are not counted but read from the
//! cluster at scrape time ([`Scrape`]): a count of transitions could drift
//! from the truth, a reading cannot.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// What `GET /metrics` answers with: the encoder writes OpenMetrics text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A request answered: which route class, which status, and whether the
/// answer came from the primary (a replica relayed it).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub status: u16,
    pub relayed: &'static str,
}

/// One label, `name="value"`, for the families below.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HealthLabel {
    pub health: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChangeLabel {
    pub change: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: &'static str,
}

/// Every metric of one manager. Each manager (in-process test managers
/// included) has its own, so its `/metrics` answers for itself alone.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `swarm_http_requests_total{route,status,relayed}`: requests answered.
    pub requests: Family<RequestLabels, Counter>,
    /// `swarm_http_request_duration_seconds{route}`: from a request's
    /// arrival to its answer headers; for the routes forwarded to an engine,
    /// mostly the engine's time.
    pub request_duration: Family<RouteLabel, Histogram, fn() -> Histogram>,
    /// `swarm_relay_duration_seconds`: on a replica, from a request's
    /// arrival to the primary's answer headers.
    pub relay_duration: Histogram,
    /// `swarm_client_connections`: client connections being served.
    pub connections: Gauge,
    /// `swarm_engine_health_changes_total{health}`: engines flagged
    /// unhealthy, or healthy again.
    pub health_changes: Family<HealthLabel, Counter>,
    /// `swarm_engine_event_stream_reconnects_total`: engine event streams
    /// lost (each is reopened).
    pub event_stream_reconnects: Counter,
    /// `swarm_container_creates_total{result}`: container creates decided
    /// (`created`, or the class of failure).
    pub creates: Family<ResultLabel, Counter>,
    /// `swarm_container_create_retries_total`: creates retried on the next
    /// ranked node (`swarm.createretry`).
    pub create_retries: Counter,
    /// `swarm_reschedules_total{result}`: containers of lost engines recreated or not.
    pub reschedules: Family<ResultLabel, Counter>,
    /// `swarm_leadership_changes_total{change}`: the primary role acquired,
    /// lost or released by this manager.
    pub leadership_changes: Family<ChangeLabel, Counter>,
    /// `swarm_store_errors_total{source}`: failed calls to the discovery,
    /// desired state or election store.
    pub store_errors: Family<SourceLabel, Counter>,
    /// `swarm_engines{health}`, set at scrape time.
    engines: Family<HealthLabel, Gauge>,
    /// `swarm_containers`, set at scrape time.
    containers: Gauge,
    /// `swarm_leader`, set at scrape time.
    leader: Gauge,
}

/// What a scrape reads from the cluster.
pub struct Scrape {
    /// Engines per health state; every state is listed, zero or not, so a
    /// state that empties shows 0 rather than vanishing.
    pub engines: Vec<(&'static str, i64)>,
    /// Containers in the cache, on every engine.
    pub containers: i64,
    /// Whether this manager is primary (always, without replication).
    pub leader: bool,
}

/// Latencies from 1 ms to about 16 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 15)
}

fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "swarm_http_requests",
            "Requests answered, by route class, status code, and whether the primary answered them (relayed)",
            requests.clone(),
        );
        let request_duration = Family::<RouteLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register_with_unit(
            "swarm_http_request_duration",
            "Time from a request's arrival to its answer, by route class",
            Unit::Seconds,
            request_duration.clone(),
        );
        let relay_duration = latency_histogram();
        registry.register_with_unit(
            "swarm_relay_duration",
            "Time from a request's arrival on this replica to the primary's answer",
            Unit::Seconds,
            relay_duration.clone(),
        );
        let connections = Gauge::default();
        registry.register("swarm_client_connections", "Client connections open on the listeners", connections.clone());
        let engines = Family::<HealthLabel, Gauge>::default();
        registry.register("swarm_engines", "Engines of the cluster, by health", engines.clone());
        let containers = Gauge::default();
        registry.register("swarm_containers", "Containers on the engines of the cluster", containers.clone());
        let leader = Gauge::default();
        registry.register("swarm_leader", "1 when this manager is the primary, 0 on a replica", leader.clone());
        let leadership_changes = Family::<ChangeLabel, Counter>::default();
        registry.register(
            "swarm_leadership_changes",
            "Times this manager acquired, lost or released the primary role",
            leadership_changes.clone(),
        );
        let health_changes = Family::<HealthLabel, Counter>::default();
        registry.register(
            "swarm_engine_health_changes",
            "Engines flagged Unhealthy, or Healthy again",
            health_changes.clone(),
        );
        let event_stream_reconnects = Counter::default();
        registry.register(
            "swarm_engine_event_stream_reconnects",
            "Engine event streams lost and reopened",
            event_stream_reconnects.clone(),
        );
        let creates = Family::<ResultLabel, Counter>::default();
        registry.register(
            "swarm_container_creates",
            "Container creates scheduled: created, or why not",
            creates.clone(),
        );
        let create_retries = Counter::default();
        registry.register(
            "swarm_container_create_retries",
            "Creates that failed on one node and were tried on the next",
            create_retries.clone(),
        );
        let reschedules = Family::<ResultLabel, Counter>::default();
        registry.register(
            "swarm_reschedules",
            "Containers of lost engines recreated elsewhere, or that could not be",
            reschedules.clone(),
        );
        let store_errors = Family::<SourceLabel, Counter>::default();
        registry.register(
            "swarm_store_errors",
            "Failed calls to the discovery, desired state or election store",
            store_errors.clone(),
        );
        Metrics {
            registry,
            requests,
            request_duration,
            relay_duration,
            connections,
            health_changes,
            event_stream_reconnects,
            creates,
            create_retries,
            reschedules,
            leadership_changes,
            store_errors,
            engines,
            containers,
            leader,
        }
    }

    /// The metrics in the text format, with the states read now.
    pub fn encode(&self, scrape: &Scrape) -> Result<String, std::fmt::Error> {
        for (health, count) in &scrape.engines {
            self.engines.get_or_create(&HealthLabel { health }).set(*count);
        }
        self.containers.set(scrape.containers);
        self.leader.set(i64::from(scrape.leader));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_their_units_and_states_are_read_at_scrape_time() {
        let metrics = Metrics::new();
        metrics
            .requests
            .get_or_create(&RequestLabels { route: "containers_list", status: 200, relayed: "false" })
            .inc();
        metrics.relay_duration.observe(0.003);
        let scrape = Scrape { engines: vec![("Healthy", 2), ("Unhealthy", 0)], containers: 5, leader: true };
        let text = metrics.encode(&scrape).expect("encodes");
        for line in [
            "swarm_http_requests_total{route=\"containers_list\",status=\"200\",relayed=\"false\"} 1",
            "swarm_relay_duration_seconds_count 1",
            "swarm_engines{health=\"Healthy\"} 2",
            "swarm_engines{health=\"Unhealthy\"} 0",
            "swarm_containers 5",
            "swarm_leader 1",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing from:\n{text}");
        }
        let later = Scrape { engines: vec![("Healthy", 1), ("Unhealthy", 1)], containers: 4, leader: false };
        let text = metrics.encode(&later).expect("encodes");
        assert!(
            text.contains("swarm_engines{health=\"Unhealthy\"} 1\n") && text.contains("swarm_leader 0\n"),
            "{text}"
        );
    }
}
