//! Waiting for a full descriptor to take writes again, without watching it for writability all the time.
//!
//! A socket or TUN registered with epoll for writable events wakes the reactor every time the kernel frees
//! a buffer it sent (edge-triggered EPOLLOUT): one wake-up of an idle tokio thread per send, although
//! nobody waits (measured: a fifth of a UDP GSO sender's CPU time in the reactor's `epoll_wait`). So the
//! descriptors are registered for readable events only, and a write that finds the descriptor full
//! registers a duplicate of it for writable events for as long as that one write waits.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::OnceLock;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// The duplicate of `fd` that `cell` keeps registered with the reactor for readable events, registered now
/// if it holds none yet. Registering reports readiness the descriptor has already, so nothing that arrived
/// before is missed. Descriptors are registered this way, on the first native wait for data, so that one
/// only read from elsewhere (JS, on its own event loop) or only written never wakes the reactor.
pub(crate) fn readable_registration<'a>(
    cell: &'a OnceLock<AsyncFd<OwnedFd>>,
    fd: BorrowedFd<'_>,
) -> io::Result<&'a AsyncFd<OwnedFd>> {
    if let Some(r) = cell.get() {
        return Ok(r);
    }
    let dup = fd.try_clone_to_owned()?;
    // SAFETY: the AsyncFd owns the duplicate, which stays open and the same until the AsyncFd drops it.
    let r = unsafe { AsyncFd::register_with_interest(dup, Interest::READABLE) }.map_err(|e| e.into_parts().1)?;
    // A wait that registered at the same time wins; this registration is dropped (and removed).
    let _ = cell.set(r);
    cell.get().ok_or_else(|| io::Error::other("the readable registration vanished"))
}

/// Runs `op` now; while it fails with WouldBlock, waits until `fd` is writable and runs it again.
pub(crate) async fn write_when_ready<R>(fd: BorrowedFd<'_>, mut op: impl FnMut() -> io::Result<R>) -> io::Result<R> {
    match op() {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        done => return done,
    }
    // A duplicate descriptor is a second (file, fd) key in the reactor's epoll set; adding it reports
    // writability at once if room came back after `op` failed, so no wake-up is lost.
    let dup = fd.try_clone_to_owned()?;
    // SAFETY: the AsyncFd owns the duplicate, which stays open and the same until it is dropped here.
    let watch = unsafe { AsyncFd::register_with_interest(dup, Interest::WRITABLE) }.map_err(|e| e.into_parts().1)?;
    loop {
        let mut ready = watch.writable().await?;
        match op() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready.clear_ready(),
            done => return done,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    use super::write_when_ready;

    #[tokio::test]
    async fn a_write_that_finds_the_descriptor_full_waits_for_room_and_then_goes_through() {
        let (mut tx, mut rx) = UnixStream::pair().expect("socketpair");
        tx.set_nonblocking(true).expect("nonblocking");
        let chunk = [7u8; 4096];
        let mut queued = 0usize;
        // Fill the pair until the kernel refuses more (bounded: a socket buffer is at most a few MiB).
        for _ in 0..100_000 {
            match tx.write(&chunk) {
                Ok(n) => queued += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("write: {e}"),
            }
        }
        assert!(queued > 0);
        let reader = std::thread::spawn(move || {
            // Give the writer time to find the pair full and wait, then drain everything.
            std::thread::sleep(Duration::from_millis(100));
            let mut buf = vec![0u8; 1 << 16];
            let mut total = 0usize;
            while total < queued + chunk.len() {
                total += rx.read(&mut buf).expect("read");
            }
            total
        });
        let mut attempts = 0;
        let fd = tx.as_fd();
        let w = &tx;
        let write = write_when_ready(fd, || {
            attempts += 1;
            (&*w).write(&chunk)
        });
        let n = tokio::time::timeout(Duration::from_secs(10), write)
            .await
            .expect("the write never woke up")
            .expect("write");
        assert_eq!(n, chunk.len());
        assert!(attempts >= 2, "the first attempt must have found the pair full");
        assert_eq!(reader.join().expect("reader"), queued + chunk.len());
    }
}
