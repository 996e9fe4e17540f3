use std::time::{Duration, Instant};
use swarm_testkit::manager::Manager;
use swarm_testkit::testbed::Testbed;

#[test]
fn explore() {
    let tb = Testbed::start(2, &[], false);
    let m = Manager::builder(&tb.addrs().join(",")).default_refresh()
        .args(&["--engine-refresh-min-interval", "1s", "--engine-refresh-max-interval", "1s", "--engine-failure-retry", "5", "--debug"])
        .start();
    m.wait_healthy(2);
    for i in 0..3 {
        m.docker_ok(["run", "-d", "--restart", "always", "-e", "reschedule:on-node-failure", "-e", "constraint:node==node-01", "--name", &format!("c{i}"), "busybox", "sleep", "600"]);
    }
    let t = Instant::now();
    tb.stop_engine("node-01");
    eprintln!("stopped after {:?}", t.elapsed());
    std::thread::sleep(Duration::from_secs(1));
    tb.start_engine("node-01");
    eprintln!("started after {:?}", t.elapsed());
    for _ in 0..8 {
        eprintln!("{:?} {}", t.elapsed(), m.docker_ok(["ps", "-a", "--format", "{{.Names}} {{.Status}}"]));
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("{}", m.log());
}
