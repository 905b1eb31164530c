//! A TCP link in front of a server that a test can cut and restore: an API server that goes
//! away for a while.
//!
//! [`Link::start`] listens on a free 127.0.0.1 port and forwards each connection to the
//! upstream address. [`Link::cut`] closes the listening socket (new connections are refused)
//! and shuts every open connection down (watches and keep-alive connections break, as when a
//! server goes down); [`Link::restore`] listens on the same port again. Plain threads, so it
//! serves sync and async tests alike; it stops when dropped.

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::forward::pump;

/// Open connections (both ends), to shut down on a cut.
type Open = Arc<Mutex<Vec<TcpStream>>>;

/// A running link; see the module docs.
pub struct Link {
    addr: SocketAddr,
    upstream: SocketAddr,
    open: Open,
    accepting: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl Link {
    /// Forwards a fresh `127.0.0.1` port to `upstream`.
    pub fn start(upstream: SocketAddr) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port for the link");
        let addr = listener.local_addr().expect("the link's address");
        let mut link = Link { addr, upstream, open: Arc::default(), accepting: None };
        link.accept_on(listener);
        link
    }

    /// Where clients connect: `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Refuses new connections and breaks the open ones, until [`Link::restore`].
    pub fn cut(&mut self) {
        if let Some((stop, thread)) = self.accepting.take() {
            stop.store(true, Ordering::SeqCst);
            let _ = thread.join();
        }
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Listens on the same port again.
    ///
    /// # Panics
    /// When the port cannot be bound again within a few seconds.
    pub fn restore(&mut self) {
        assert!(self.accepting.is_none(), "restore: the link is not cut");
        let mut last = None;
        for _ in 0..100 {
            match TcpListener::bind(self.addr) {
                Ok(l) => return self.accept_on(l),
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("cannot listen on {} again: {last:?}", self.addr);
    }

    fn accept_on(&mut self, listener: TcpListener) {
        listener.set_nonblocking(true).expect("a nonblocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, open, upstream) = (stop.clone(), self.open.clone(), self.upstream);
        let thread = std::thread::spawn(move || {
            // Polled, so that a cut closes the socket at once (dropping it refuses connections).
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        relay(client, upstream, &open);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        self.accepting = Some((stop, thread));
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.cut();
    }
}

fn relay(client: TcpStream, upstream: SocketAddr, open: &Open) {
    let Ok(server) = TcpStream::connect(upstream) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) =
        (client.try_clone(), server.try_clone(), client.try_clone(), server.try_clone())
    else {
        return;
    };
    open.lock().unwrap().extend([c3, s3]);
    std::thread::spawn(move || pump(c2, s2));
    std::thread::spawn(move || pump(server, client));
}
