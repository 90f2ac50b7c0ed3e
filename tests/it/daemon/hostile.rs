//! The daemon against hostile clients of its API.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::daemon::Daemon;
use crate::support::{Project, claim};

/// The status of `GET path`, or `None` when the server closed the connection
/// or did not answer within 2 s.
fn probe(addr: &str, path: &str) -> Option<u16> {
    use std::io::Read;
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut head = [0_u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// The test process's own soft limit of open files, raised to its hard one.
fn raise_own_fd_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    );
}

#[test]
fn idle_and_slowloris_connections_neither_block_health_nor_stop_reconciliation() {
    raise_own_fd_limit();
    let p = Project::new("api:\n  idle_timeout: 2s\n  max_connections: 64\n");
    p.write("claims/dev-a.yaml", claim("dev-a", "dev"));
    let d = Daemon::start_with_open_files(p.dir.path(), 1024);
    d.wait_for("the first pass", |d| d.get("/ready").0 == 200);

    // 1,100 idle connections and 100 slowloris ones (headers trickled).
    let mut held = Vec::new();
    for _ in 0..1100 {
        if let Ok(s) = TcpStream::connect(&d.addr) {
            held.push(s);
        }
    }
    let mut slow: Vec<TcpStream> = (0..100)
        .filter_map(|_| TcpStream::connect(&d.addr).ok())
        .collect();
    for s in &mut slow {
        let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n");
    }
    let trickle = |slow: &mut Vec<TcpStream>| {
        for s in slow.iter_mut() {
            let _ = s.write_all(b"X-a: b\r\n");
        }
    };

    // /health answers while they are held (once the server closed what it
    // does not serve), and an edited claim is applied as usual.
    let started = Instant::now();
    let mut healthy = false;
    while started.elapsed() < Duration::from_secs(20) {
        trickle(&mut slow);
        if probe(&d.addr, "/health") == Some(200) {
            healthy = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(healthy, "/health answered under attack\n{}", d.log());
    p.write(
        "claims/dev-a.yaml",
        claim("dev-a", "dev").replace("v1.2.3", "v1.2.4"),
    );
    d.wait_for("the edited claim applied", |_| {
        std::fs::read_to_string(p.path("out/dev-a/deployment-user-service.yaml"))
            .is_ok_and(|y| y.contains("v1.2.4"))
    });
    assert!(
        !d.log().contains("Too many open files"),
        "sources kept their file descriptors\n{}",
        d.log()
    );
    drop((held, slow));
}

/// `host:port` of the probe listener, from the daemon's log: its whole
/// line, waited for (it is written after the API's).
fn probe_addr(d: &Daemon) -> String {
    let line = |d: &Daemon| {
        d.log()
            .split("probes listening on http://")
            .nth(1)
            .and_then(|r| r.split_once('\n'))
            .map(|(a, _)| a.trim().to_owned())
    };
    d.wait_for("the probe listener", |d| line(d).is_some());
    line(d).unwrap_or_else(|| panic!("no probe listener\n{}", d.log()))
}

#[test]
fn probes_on_their_own_listener_answer_while_a_flood_holds_the_api() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    raise_own_fd_limit();
    // The API's defaults (256 connections, 10 s idle timeout), as the README
    // gives them, and the probes on a listener of their own.
    let p = Project::new("api:\n  probe_listen: 127.0.0.1:0\n");
    p.write("claims/dev-a.yaml", claim("dev-a", "dev"));
    let d = Daemon::start_with_open_files(p.dir.path(), 1024);
    let probes = probe_addr(&d);
    d.wait_for("the first pass", |d| d.get("/ready").0 == 200);

    // 1,100 idle connections to the API from a client that never sends a
    // byte, renewed as fast as they can be opened (the oldest dropped), so
    // the API's connections stay taken for the whole check. Bounded: it
    // stops when told, after 60 s, or after 200,000 connections.
    let stop = Arc::new(AtomicBool::new(false));
    let (full, held_all) = std::sync::mpsc::channel();
    let flood = {
        let (stop, addr) = (stop.clone(), d.addr.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut held = std::collections::VecDeque::new();
            let mut opened = 0_u32;
            while !stop.load(Ordering::Relaxed)
                && started.elapsed() < Duration::from_mins(1)
                && opened < 200_000
            {
                if let Ok(s) = TcpStream::connect(&addr) {
                    held.push_back(s);
                    opened += 1;
                }
                if held.len() > 1100 {
                    held.pop_front();
                }
                if opened == 1100 {
                    let _ = full.send(());
                }
            }
            opened
        })
    };
    held_all
        .recv_timeout(Duration::from_mins(1))
        .expect("1,100 connections opened to the API");

    // Every probe on the probe listener answers, 20 rounds of both.
    let mut api_answered = 0;
    for _ in 0..20 {
        assert_eq!(probe(&probes, "/health"), Some(200), "{}", d.log());
        assert_eq!(probe(&probes, "/ready"), Some(200), "{}", d.log());
        if probe(&d.addr, "/health") == Some(200) {
            api_answered += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Only the probes: nothing else is served there.
    assert_eq!(probe(&probes, "/metrics"), Some(404));
    assert_eq!(probe(&probes, "/api/v1/environments"), Some(404));
    stop.store(true, Ordering::Relaxed);
    let opened = flood.join().expect("flood");
    eprintln!(
        "flood: {opened} connections opened; the probe listener answered 40 of 40 probes, \
         the API's own /health {api_answered} of 20"
    );

    // The flood gone, the API answers again and applies an edited claim.
    d.wait_for("the API answers again", |d| {
        probe(&d.addr, "/health") == Some(200)
    });
    p.write(
        "claims/dev-a.yaml",
        claim("dev-a", "dev").replace("v1.2.3", "v1.2.4"),
    );
    d.wait_for("the edited claim applied", |_| {
        std::fs::read_to_string(p.path("out/dev-a/deployment-user-service.yaml"))
            .is_ok_and(|y| y.contains("v1.2.4"))
    });
}
