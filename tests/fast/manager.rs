//! Managers started in-process, each on a runtime and thread of its own,
//! so that killing one ends every task and socket it has, the way killing
//! its process would.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use swarm::manage::Manager;
use swarm_leadership::Leadership;
use tokio::sync::oneshot;

use super::engine::FakeEngine;

/// An election's `run` future, started on the manager's runtime.
pub type ElectionTask = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A running manager.
pub struct ManagerProcess {
    pub addr: SocketAddr,
    kill: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A listener on a free loopback port, bound before the manager starts so
/// its address can be advertised in an election first.
pub fn bind() -> std::net::TcpListener {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a manager port");
    listener.set_nonblocking(true).expect("non-blocking listener");
    listener
}

/// The `nodes://` discovery flag for `engines`.
pub fn discovery(engines: &[&FakeEngine]) -> String {
    format!("nodes://{}", engines.iter().map(|e| e.addr()).collect::<Vec<_>>().join(","))
}

impl ManagerProcess {
    /// Starts `swarm manage <flags>` on `listener`, with `election` (if any)
    /// running beside it.
    pub async fn start(
        listener: std::net::TcpListener,
        flags: &[&str],
        leadership: Option<Arc<Leadership>>,
        election: Option<ElectionTask>,
    ) -> ManagerProcess {
        let addr = listener.local_addr().expect("manager address");
        let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        let (started_tx, started) = oneshot::channel::<Result<(), String>>();
        let (kill, killed) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener on this runtime");
                if let Some(election) = election {
                    tokio::spawn(election);
                }
                let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
                match Manager::start(&flags, listener, leadership).await {
                    Ok(manager) => {
                        let _ = started_tx.send(Ok(()));
                        let _ = killed.await;
                        drop(manager);
                    }
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                    }
                }
            });
            // Every task of this manager, its election included, ends here.
            runtime.shutdown_timeout(Duration::from_secs(1));
        });
        started.await.expect("manager thread").unwrap_or_else(|e| panic!("manager did not start: {e}"));
        ManagerProcess { addr, kill: Some(kill), thread: Some(thread) }
    }

    /// Ends the manager like a killed process: its port refuses connections
    /// afterwards, and its election (if any) stops without releasing the lock.
    pub fn kill(&mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().expect("manager thread");
        }
    }
}

impl Drop for ManagerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A manager in front of fake engines, ready to serve.
pub struct Cluster {
    pub manager: ManagerProcess,
    pub addr: SocketAddr,
    pub engines: Vec<FakeEngine>,
}

impl Cluster {
    /// Starts a manager for `engines` (already seeded) with extra `flags`
    /// and waits until it has loaded every engine's state.
    pub async fn start(engines: Vec<FakeEngine>, flags: &[&str]) -> Cluster {
        let discovery = discovery(&engines.iter().collect::<Vec<_>>());
        let flags: Vec<&str> = flags.iter().copied().chain([discovery.as_str()]).collect();
        let manager = ManagerProcess::start(bind(), &flags, None, None).await;
        for engine in &engines {
            engine.wait_for_request(Method::GET, "/events").await;
        }
        Cluster { addr: manager.addr, manager, engines }
    }

    pub fn engine(&self, name: &str) -> &FakeEngine {
        self.engines.iter().find(|e| e.name == name).unwrap_or_else(|| panic!("no engine {name}"))
    }
}

/// Polls `condition` until it holds; fails the test after ten seconds.
pub async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
