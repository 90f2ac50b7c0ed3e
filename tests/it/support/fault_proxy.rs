//! Network faults as real network conditions, not mocks of a server: a
//! [`Silent`] listener that accepts connections and never answers (timeouts),
//! and a [`Proxy`] in front of a real server that cuts connections once a
//! budget of requests is spent (an interrupted listing). Both listen on a free
//! loopback port and stop accepting on drop. A [`FaultProxy`] injects one
//! [`Fault`] at a time (refused, reset, stalled, trickled, truncated) between
//! converge and a real server (git, S3, the Kubernetes API server).

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

/// What a [`FaultProxy`] does to the connections through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forwards both ways untouched.
    None,
    /// Nothing listens on the proxy's port: connections are refused.
    Refuse,
    /// The response's first bytes come through, then a TCP reset.
    Reset,
    /// Requests reach the server; no byte of a response comes back.
    Stall,
    /// The response comes back one byte every 200 ms.
    Trickle,
    /// The response stops short (a clean close): mid-body when the first
    /// chunk holds HTTP headers and some body, mid-stream otherwise (TLS).
    Truncate,
}

/// A loopback TCP proxy in front of a real server whose [`Fault`] can be
/// changed at any time; a change cuts every open connection, so pooled
/// keep-alive connections cannot bypass the new fault.
pub struct FaultProxy {
    pub addr: SocketAddr,
    upstream: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
}

struct ProxyState {
    fault: Fault,
    /// Client sides of open connections, to cut on a change.
    open: std::collections::HashMap<u64, TcpStream>,
    next: u64,
    /// The accept loop's stop flag while listening.
    listening: Option<Arc<AtomicBool>>,
    /// Counts [`FaultProxy::set`]s: a connection from an earlier one was cut.
    epoch: u64,
}

/// What a connection's relay learns from the proxy: cut (by a `set`), or
/// whether the fault was lifted for it ([`FaultProxy::release`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Now {
    Cut,
    Faulty,
    Released,
}

impl FaultProxy {
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let proxy = FaultProxy {
            addr,
            upstream,
            state: Arc::new(Mutex::new(ProxyState {
                fault: Fault::None,
                open: std::collections::HashMap::new(),
                next: 0,
                listening: None,
                epoch: 0,
            })),
        };
        proxy.listen(listener);
        proxy
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn listen(&self, listener: TcpListener) {
        let stop = Arc::new(AtomicBool::new(false));
        self.state.lock().expect("lock").listening = Some(stop.clone());
        let (state, upstream) = (self.state.clone(), self.upstream);
        serve(listener, stop, move |client| {
            let mut s = state.lock().expect("lock");
            let (fault, id, epoch) = (s.fault, s.next, s.epoch);
            s.next += 1;
            if let Ok(kept) = client.try_clone() {
                s.open.insert(id, kept);
            }
            drop(s);
            let state = state.clone();
            let forget_state = state.clone();
            std::thread::spawn(move || {
                let now = move || {
                    let s = state.lock().expect("lock");
                    if s.epoch != epoch {
                        Now::Cut
                    } else if s.fault == Fault::None {
                        Now::Released
                    } else {
                        Now::Faulty
                    }
                };
                relay(client, upstream, fault, now, || {
                    forget_state.lock().expect("lock").open.remove(&id);
                });
            });
        });
    }

    /// Applies `fault` from now on: open connections are cut, and with
    /// [`Fault::Refuse`] the port stops listening until another fault is set.
    pub fn set(&self, fault: Fault) {
        let mut s = self.state.lock().expect("lock");
        s.epoch += 1;
        let was = std::mem::replace(&mut s.fault, fault);
        for (_, c) in s.open.drain() {
            let _ = c.shutdown(Shutdown::Both);
        }
        if fault == Fault::Refuse {
            if let Some(stop) = s.listening.take() {
                drop(s);
                stop_serving(self.addr, &stop);
                // The accept loop sees the flag on the wake-up connection
                // and drops the listener; wait until the port refuses.
                for _ in 0..100 {
                    if TcpStream::connect(self.addr).is_err() {
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                panic!("the proxy's port still accepts");
            }
        } else if was == Fault::Refuse {
            drop(s);
            let listener = TcpListener::bind(self.addr).expect("bind the proxy's port again");
            self.listen(listener);
        }
    }
}

impl FaultProxy {
    /// Lifts a [`Fault::Stall`] or [`Fault::Trickle`] without cutting the
    /// connections it held: a stalled response comes through whole, a
    /// trickling one at full speed. A client that gave up waiting but kept
    /// reading (a read abandoned at its timeout) gets its answer late.
    pub fn release(&self) {
        let mut s = self.state.lock().expect("lock");
        assert!(
            matches!(s.fault, Fault::Stall | Fault::Trickle | Fault::None),
            "release lifts a stall or a trickle"
        );
        s.fault = Fault::None;
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let mut s = self.state.lock().expect("lock");
        for (_, c) in s.open.drain() {
            let _ = c.shutdown(Shutdown::Both);
        }
        if let Some(stop) = s.listening.take() {
            drop(s);
            stop_serving(self.addr, &stop);
        }
    }
}

/// One connection: requests go through as they are; the response as the
/// fault says. `now` tells whether the connection was cut or its stall or
/// trickle released since; `forget` drops the proxy's own handle on the
/// client socket (a reset needs every handle closed).
fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    mut fault: Fault,
    now: impl Fn() -> Now,
    forget: impl FnOnce(),
) {
    let Ok(server) = TcpStream::connect(upstream) else {
        return;
    };
    let (Ok(mut from_client), Ok(mut to_server)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_client, &mut to_server);
        let _ = to_server.shutdown(Shutdown::Write);
    });
    let (mut from_server, mut to_client) = (server, client);
    // Reads wake up now and then to see a release or a cut.
    let _ = from_server.set_read_timeout(Some(std::time::Duration::from_millis(100)));
    let mut buf = vec![0; 64 * 1024];
    let mut first = true;
    // A stalled response, held until a release.
    let mut held: Vec<u8> = Vec::new();
    let mut ended = false;
    loop {
        if matches!(fault, Fault::Stall | Fault::Trickle) {
            match now() {
                Now::Cut => return,
                Now::Released => {
                    fault = Fault::None;
                    if to_client.write_all(&held).is_err() {
                        return;
                    }
                    held.clear();
                }
                Now::Faulty => {}
            }
        }
        if ended {
            if fault == Fault::Stall {
                // Everything is held; wait for a release or a cut.
                std::thread::sleep(std::time::Duration::from_millis(50));
                continue;
            }
            break;
        }
        let n = match from_server.read(&mut buf) {
            Ok(0) => {
                ended = true;
                continue;
            }
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(_) => break,
        };
        let chunk = &buf[..n];
        match fault {
            Fault::None | Fault::Refuse => {
                if to_client.write_all(chunk).is_err() {
                    break;
                }
            }
            Fault::Trickle => match trickle(chunk, &mut to_client, &now) {
                None => return,
                Some(true) => fault = Fault::None,
                Some(false) => {}
            },
            Fault::Reset | Fault::Truncate if first => {
                let keep = cut_point(chunk);
                let _ = to_client.write_all(&chunk[..keep]);
                let _ = to_client.flush();
                if fault == Fault::Reset {
                    // SO_LINGER 0: the last close sends RST instead of FIN.
                    // The request reader's handle goes when its read ends.
                    let _ = rustix::net::sockopt::set_socket_linger(
                        &to_client,
                        Some(std::time::Duration::ZERO),
                    );
                    forget();
                    let _ = to_client.shutdown(Shutdown::Read);
                    drop(to_client);
                } else {
                    let _ = to_client.shutdown(Shutdown::Both);
                }
                let _ = from_server.shutdown(Shutdown::Both);
                return;
            }
            // Stall: held, the client waits; after a cut: nothing.
            Fault::Stall => held.extend_from_slice(chunk),
            Fault::Reset | Fault::Truncate => {}
        }
        first = false;
    }
    let _ = to_client.shutdown(Shutdown::Both);
}

/// Writes `chunk` one byte every 200 ms, the rest at once when released:
/// `None` when the connection is cut or gone, else whether it was released.
fn trickle(chunk: &[u8], to_client: &mut TcpStream, now: &impl Fn() -> Now) -> Option<bool> {
    for (i, b) in chunk.iter().enumerate() {
        std::thread::sleep(std::time::Duration::from_millis(200));
        match now() {
            Now::Cut => return None,
            Now::Released => return to_client.write_all(&chunk[i..]).ok().map(|()| true),
            Now::Faulty => to_client.write_all(&[*b]).ok()?,
        }
    }
    Some(false)
}

/// Where to cut a response's first chunk: half-way into the body when the
/// chunk holds HTTP headers and body bytes, half-way into the chunk otherwise.
fn cut_point(chunk: &[u8]) -> usize {
    match chunk.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) if chunk.starts_with(b"HTTP/") && chunk.len() > end + 5 => {
            end + 4 + (chunk.len() - end - 4) / 2
        }
        _ => chunk.len() / 2,
    }
}
