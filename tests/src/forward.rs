//! A TCP forwarder from a loopback port inside a test host's network namespace to the same
//! port on the root namespace's loopback.
//!
//! A registry test needs one image reference that every engine can pull: the digest pinned
//! into a revision is the same on every host, and so is the registry's name in it. The root
//! engine treats only loopback registries as insecure (it runs without `--insecure-registry`,
//! and changing a shared engine's configuration is not a test's business), while a test
//! host's namespace has no route to the root namespace's loopback. [`NetnsForward`] bridges
//! the two: `127.0.0.1:PORT` inside the namespace leads to `127.0.0.1:PORT` outside, so
//! `127.0.0.1:PORT/repo:tag` names the same registry on every engine.
//!
//! The listening socket is made inside the namespace (a socket stays in the namespace it was
//! created in) by a thread that enters it with `setns(2)` and leaves again; every other
//! socket is made in the root namespace. Dropping the forwarder stops it.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// A running forwarder; stops (and closes its listener) when dropped.
pub struct NetnsForward {
    listener: Arc<TcpListener>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl NetnsForward {
    /// Listens on `127.0.0.1:port` inside network namespace `netns` (a name under
    /// `/var/run/netns`) and forwards each connection to `127.0.0.1:port` in the caller's
    /// namespace.
    ///
    /// # Panics
    /// When the namespace cannot be entered (not root, no such namespace) or the port is
    /// taken inside it.
    pub fn start(netns: &str, port: u16) -> NetnsForward {
        let path = format!("/var/run/netns/{netns}");
        let listener = std::thread::scope(|s| {
            // A thread of its own enters the namespace, so no other code runs in it meanwhile.
            s.spawn(|| {
                let home = File::open("/proc/thread-self/ns/net").expect("open this thread's network namespace");
                let target = File::open(&path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
                enter(&target, &path);
                let bound = TcpListener::bind(("127.0.0.1", port));
                enter(&home, "the root network namespace");
                bound.unwrap_or_else(|e| panic!("cannot listen on 127.0.0.1:{port} in {netns}: {e}"))
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        });
        let listener = Arc::new(listener);
        let stopping = Arc::new(AtomicBool::new(false));
        let (l, stop) = (listener.clone(), stopping.clone());
        let thread = std::thread::spawn(move || {
            for conn in l.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(inside) = conn else { continue };
                std::thread::spawn(move || relay(inside, port));
            }
        });
        NetnsForward { listener, stopping, thread: Some(thread) }
    }
}

impl Drop for NetnsForward {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // shutdown(2) on a listening socket wakes a thread blocked in accept(2) on Linux.
        // SAFETY: the descriptor is valid: the listener lives until this struct is gone.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn enter(ns: &File, what: &str) {
    // SAFETY: setns(2) with a valid descriptor of a network namespace; it affects the
    // calling thread only.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "cannot enter {what}: {}", std::io::Error::last_os_error());
}

/// Copies both ways until either side closes. A refused upstream (the registry is down)
/// closes the inside connection at once, as a stopped registry would.
fn relay(inside: TcpStream, port: u16) {
    let Ok(outside) = TcpStream::connect(("127.0.0.1", port)) else {
        let _ = inside.shutdown(Shutdown::Both);
        return;
    };
    let (Ok(inside2), Ok(outside2)) = (inside.try_clone(), outside.try_clone()) else { return };
    let up = std::thread::spawn(move || pump(inside2, outside2));
    pump(outside, inside);
    let _ = up.join();
}

/// Copies `from` to `to` until `from` closes, then half-closes `to`.
pub(crate) fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
