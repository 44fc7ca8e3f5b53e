//! Network namespaces: a fresh one for the calling thread, and work run inside a named one.

use std::fs::File;
use std::os::fd::AsRawFd;

use crate::witness::{witness, IP};

/// While alive, the calling thread is in a new, empty network namespace with `lo` up.
/// Dropping it returns the thread to the namespace it came from.
pub struct NetNs {
    previous: File,
}

impl NetNs {
    /// Moves the calling thread into a new network namespace and brings `lo` up.
    pub fn fresh() -> Self {
        let previous = File::open("/proc/thread-self/ns/net").expect("open current netns");
        // SAFETY: unshare has no memory-safety preconditions; it affects only this thread's netns.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        witness(IP, &["link", "set", "lo", "up"]);
        Self { previous }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // SAFETY: the fd is a valid netns fd owned by `self.previous`.
        let rc = unsafe { libc::setns(self.previous.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            eprintln!("setns back failed: {}", std::io::Error::last_os_error());
        }
    }
}

/// Runs `work` on a new thread inside the named namespace `netns` (`/run/netns/NAME`).
pub fn in_netns<T: Send + 'static>(
    netns: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{netns}");
    std::thread::spawn(move || {
        let target = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns on a valid netns fd affects only this new thread.
        let rc = unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        work()
    })
}
