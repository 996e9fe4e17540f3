//! Reading a `POST /containers/create` body: what the hollow engine
//! keeps of it (image, command, labels, ports, volumes, network) and the
//! `Config` and `HostConfig` it shows back in the inspect.

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::model::{sorted_labels, MountSpec, PortSpec};

/// A create request, read but not yet checked against the engine (its
/// images, networks and names).
#[derive(Debug)]
pub struct CreateRequest {
    /// `Image` as given.
    pub image: String,
    /// `Entrypoint` then `Cmd`; empty when neither was given (the image's
    /// command then).
    pub command: Vec<Box<str>>,
    pub labels: Box<[(Box<str>, Box<str>)]>,
    pub ports: Vec<PortSpec>,
    pub mounts: Vec<MountSpec>,
    /// `HostConfig.NetworkMode`, `default` when not given.
    pub network_mode: String,
    /// The network of `NetworkingConfig.EndpointsConfig`, if one is named.
    pub endpoint: Option<String>,
    /// The body's top-level fields but `HostConfig` and `NetworkingConfig`, compact.
    pub config: Box<str>,
    /// The body's `HostConfig`, compact (`{}` when absent).
    pub host_config: Box<str>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message)
}

/// A list of strings that Docker also accepts as one string (`Cmd`, `Entrypoint`).
fn strings(value: Option<&Value>, field: &str) -> Result<Vec<Box<str>>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.as_str().into()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(Box::from).ok_or_else(|| bad(format!("{field} must be a list of strings"))))
            .collect(),
        Some(_) => Err(bad(format!("{field} must be a list of strings"))),
    }
}

/// `80/tcp` (the protocol defaults to tcp).
fn port_key(key: &str) -> Result<(u16, Box<str>), ApiError> {
    let (port, protocol) = key.split_once('/').unwrap_or((key, "tcp"));
    let port = port.parse().map_err(|_| bad(format!("invalid port specification: \"{key}\"")))?;
    Ok((port, protocol.to_ascii_lowercase().into()))
}

/// Exposed ports (`ExposedPorts`) and published ones (`HostConfig.PortBindings`).
fn ports(body: &Map<String, Value>, host: &Map<String, Value>) -> Result<Vec<PortSpec>, ApiError> {
    let mut ports: Vec<PortSpec> = Vec::new();
    if let Some(bindings) = host.get("PortBindings").and_then(Value::as_object) {
        for (key, list) in bindings {
            let (private, protocol) = port_key(key)?;
            // No host port (`-p 80`) is one dockerd picks at start: 0 here.
            let published: Vec<u16> = list
                .as_array()
                .map(|l| {
                    l.iter()
                        .filter_map(|b| match b["HostPort"].as_str() {
                            None | Some("") => Some(0),
                            Some(port) => port.parse().ok(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            if published.is_empty() {
                ports.push(PortSpec { private, protocol: protocol.clone(), host_port: None });
            }
            for host_port in published {
                ports.push(PortSpec { private, protocol: protocol.clone(), host_port: Some(host_port) });
            }
        }
    }
    if let Some(exposed) = body.get("ExposedPorts").and_then(Value::as_object) {
        for key in exposed.keys() {
            let (private, protocol) = port_key(key)?;
            if !ports.iter().any(|p| p.private == private && p.protocol == protocol) {
                ports.push(PortSpec { private, protocol, host_port: None });
            }
        }
    }
    ports.sort_by(|a, b| (a.private, &a.protocol).cmp(&(b.private, &b.protocol)));
    Ok(ports)
}

/// Named volumes of `HostConfig.Binds` (`name:/dest[:ro]`) and of
/// `HostConfig.Mounts` of type volume. Host paths are not volumes: a
/// hollow engine has no files, so they are kept in the config only.
fn mounts(host: &Map<String, Value>) -> Vec<MountSpec> {
    let mut mounts = Vec::new();
    for bind in host.get("Binds").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        let mut parts = bind.split(':');
        let (Some(source), Some(destination)) = (parts.next(), parts.next()) else { continue };
        if source.starts_with('/') || source.is_empty() {
            continue;
        }
        let read_write = !parts.next().is_some_and(|mode| mode.split(',').any(|m| m == "ro"));
        mounts.push(MountSpec { volume: source.into(), destination: destination.into(), read_write });
    }
    for mount in host.get("Mounts").and_then(Value::as_array).into_iter().flatten() {
        if mount["Type"] != "volume" {
            continue;
        }
        let (Some(source), Some(target)) = (mount["Source"].as_str(), mount["Target"].as_str()) else { continue };
        let read_write = !mount["ReadOnly"].as_bool().unwrap_or(false);
        mounts.push(MountSpec { volume: source.into(), destination: target.into(), read_write });
    }
    mounts
}

impl CreateRequest {
    /// Reads a create body; anything unreadable is a 400, as dockerd's decoder makes it.
    pub fn parse(body: &[u8]) -> Result<CreateRequest, ApiError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
        let Value::Object(mut body) = value else {
            return Err(bad("Config cannot be empty in order to create a container"));
        };
        let host = match body.remove("HostConfig") {
            Some(Value::Object(host)) => host,
            None | Some(Value::Null) => Map::new(),
            Some(_) => return Err(bad("HostConfig must be an object")),
        };
        let networking = body.remove("NetworkingConfig");
        let image = match body.get("Image") {
            Some(Value::String(image)) if !image.is_empty() => image.clone(),
            Some(Value::String(_)) | None | Some(Value::Null) => {
                return Err(bad("Config cannot be empty in order to create a container"))
            }
            Some(_) => return Err(bad("Image must be a string")),
        };
        let mut command = strings(body.get("Entrypoint"), "Entrypoint")?;
        command.extend(strings(body.get("Cmd"), "Cmd")?);
        let labels = match body.get("Labels") {
            None | Some(Value::Null) => sorted_labels(Vec::<(String, String)>::new()),
            Some(Value::Object(labels)) => sorted_labels(
                labels.iter().map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default())).collect::<Vec<_>>(),
            ),
            Some(_) => return Err(bad("Labels must be an object")),
        };
        if let Some(env) = body.get("Env").filter(|e| !e.is_null()) {
            strings(Some(env), "Env")?;
        }
        let network_mode = match host.get("NetworkMode").and_then(Value::as_str) {
            Some("") | None => "default".to_string(),
            Some(mode) => mode.to_string(),
        };
        let endpoint = networking
            .as_ref()
            .and_then(|n| n["EndpointsConfig"].as_object())
            .and_then(|endpoints| endpoints.keys().next().cloned());
        Ok(CreateRequest {
            image,
            command,
            labels,
            ports: ports(&body, &host)?,
            mounts: mounts(&host),
            network_mode,
            endpoint,
            config: serde_json::to_string(&body).unwrap_or_default().into(),
            host_config: serde_json::to_string(&host).unwrap_or_default().into(),
        })
    }
}

/// Whether `name` is a container name dockerd accepts (`[a-zA-Z0-9][a-zA-Z0-9_.-]+`).
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_cli_sends() {
        let body = br#"{"Image":"busybox","Cmd":["sleep","1000"],"Labels":{"b":"2","a":"1"},"Env":["A=1"],
            "ExposedPorts":{"80/tcp":{},"53/udp":{}},
            "HostConfig":{"PortBindings":{"80/tcp":[{"HostIp":"","HostPort":"8080"}]},"Binds":["data:/data:ro","/etc:/host"],
              "NetworkMode":"appnet"},
            "NetworkingConfig":{"EndpointsConfig":{"appnet":{}}}}"#;
        let req = CreateRequest::parse(body).expect("parses");
        assert_eq!(req.image, "busybox");
        assert_eq!(req.command, vec![Box::from("sleep"), Box::from("1000")]);
        assert_eq!(&*req.labels[0].0, "a");
        assert_eq!(req.ports.len(), 2);
        assert_eq!(req.ports[1], PortSpec { private: 80, protocol: "tcp".into(), host_port: Some(8080) });
        assert_eq!(req.ports[0].host_port, None);
        assert_eq!(
            req.mounts,
            vec![MountSpec { volume: "data".into(), destination: "/data".into(), read_write: false }]
        );
        assert_eq!(req.network_mode, "appnet");
        assert_eq!(req.endpoint.as_deref(), Some("appnet"));
        assert!(!req.config.contains("HostConfig"));
    }

    #[test]
    fn refuses_what_dockerd_refuses() {
        for body in
            [&b"{"[..], b"[1]", b"{}", br#"{"Image":5}"#, br#"{"Image":"b","Cmd":5}"#, br#"{"Image":"b","Labels":[]}"#]
        {
            let err = CreateRequest::parse(body).expect_err("refused");
            assert_eq!(err.status, http::StatusCode::BAD_REQUEST, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn names_as_dockerd_allows() {
        assert!(valid_name("web-1.a_b"));
        assert!(!valid_name("-web"));
        assert!(!valid_name("w"));
        assert!(!valid_name("we b"));
    }
}
