//! Network faults as real network conditions, not mocks of a server: a
//! [`Silent`] listener that accepts connections and never answers (timeouts),
//! and a [`Proxy`] in front of a real server that cuts connections once a
//! budget of requests is spent (an interrupted listing). Both listen on a free
//! loopback port and stop accepting on drop.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

/// Accepts connections on `listener` on a thread, handing each to `handle`,
/// until `stop` is set (and a connection wakes the loop).
fn serve(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    mut handle: impl FnMut(TcpStream) + Send + 'static,
) {
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            handle(stream);
        }
    });
}

/// Stops a [`serve`] loop listening on `addr`.
fn stop_serving(addr: SocketAddr, stop: &AtomicBool) {
    stop.store(true, Ordering::SeqCst);
    let _ = TcpStream::connect(addr);
}

/// A server that accepts every connection and never answers.
pub struct Silent {
    pub addr: SocketAddr,
    held: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Silent {
    pub fn start() -> Silent {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let held = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let keep = held.clone();
        serve(listener, stop.clone(), move |stream| {
            keep.lock().expect("lock").push(stream); // accepted, never answered
        });
        Silent { addr, held, stop }
    }

    /// Closes the connections accepted so far (later ones are held again).
    pub fn hang_up(&self) {
        self.held.lock().expect("lock").clear();
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        stop_serving(self.addr, &self.stop);
        self.hang_up();
    }
}

/// A loopback TCP proxy that forwards to `upstream` and, when given a
/// budget, cuts every connection once that many requests went through.
pub struct Proxy {
    pub addr: SocketAddr,
    /// Requests still allowed; negative: no limit.
    budget: Arc<AtomicI64>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let budget = Arc::new(AtomicI64::new(-1));
        let stop = Arc::new(AtomicBool::new(false));
        let shared = budget.clone();
        serve(listener, stop.clone(), move |client| {
            let budget = shared.clone();
            std::thread::spawn(move || forward(client, upstream, &budget));
        });
        Proxy { addr, budget, stop }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Lets `n` more requests through (negative: all).
    pub fn allow(&self, n: i64) {
        self.budget.store(n, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        stop_serving(self.addr, &self.stop);
    }
}

fn forward(mut client: TcpStream, upstream: SocketAddr, budget: &AtomicI64) {
    let Ok(mut server) = TcpStream::connect(upstream) else {
        return;
    };
    let (Ok(mut from_server), Ok(mut to_client)) = (server.try_clone(), client.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_server, &mut to_client);
        let _ = to_client.shutdown(Shutdown::Both);
    });
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let requests = buf[..n]
            .windows(5)
            .filter(|w| matches!(*w, b"GET /" | b"PUT /" | b"HEAD "))
            .count();
        let requests = i64::try_from(requests).expect("a few requests per read");
        if requests > 0 && !take(budget, requests) {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            return;
        }
        if server.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = server.shutdown(Shutdown::Write);
}

fn take(budget: &AtomicI64, n: i64) -> bool {
    let mut current = budget.load(Ordering::SeqCst);
    loop {
        if current < 0 {
            return true;
        }
        if current < n {
            return false;
        }
        match budget.compare_exchange(current, current - n, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return true,
            Err(now) => current = now,
        }
    }
}
