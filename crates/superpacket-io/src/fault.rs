//! Fault injection for tests: makes chosen system calls fail with a chosen errno a number of times, so
//! every fallback and error branch can be driven on demand instead of waiting for a kernel that misbehaves.
//!
//! The plan is process-wide (a test that arms it must not run beside tests that do not expect faults:
//! the Rust tests that use it live in a test binary of their own and run one at a time). In production
//! nothing is armed and each wrapped system call costs one relaxed atomic load.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};

/// A system call that can be made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Syscall {
    /// `read` of a TUN queue.
    TunRead,
    /// `writev` of a frame to a TUN queue (also the GSO probe at open).
    TunWrite,
    /// `sendmsg` with `UDP_SEGMENT` (a GSO send).
    SendGso,
    /// `sendmmsg` (plain sends, one datagram per message).
    SendMmsg,
    /// `recvmmsg`.
    RecvMmsg,
}

impl Syscall {
    /// Every wrapped system call, for parsing names.
    pub const ALL: [Syscall; 5] =
        [Syscall::TunRead, Syscall::TunWrite, Syscall::SendGso, Syscall::SendMmsg, Syscall::RecvMmsg];

    /// The name used by [`Syscall::parse`] (and the JS injector).
    pub const fn name(self) -> &'static str {
        match self {
            Syscall::TunRead => "tunRead",
            Syscall::TunWrite => "tunWrite",
            Syscall::SendGso => "sendGso",
            Syscall::SendMmsg => "sendmmsg",
            Syscall::RecvMmsg => "recvmmsg",
        }
    }

    /// The call named `name` ([`Syscall::name`]).
    pub fn parse(name: &str) -> Option<Syscall> {
        Syscall::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// The errnos a fault may carry, by name (`"EIO"` ...), for the JS injector.
pub fn errno_by_name(name: &str) -> Option<i32> {
    Some(match name {
        "EIO" => libc::EIO,
        "EINVAL" => libc::EINVAL,
        "EMSGSIZE" => libc::EMSGSIZE,
        "EAGAIN" => libc::EAGAIN,
        "ENOBUFS" => libc::ENOBUFS,
        "EPERM" => libc::EPERM,
        _ => return None,
    })
}

/// Whether any fault is pending: the only thing an unarmed system call looks at.
static ARMED: AtomicBool = AtomicBool::new(false);
/// A pending fault.
struct Fault {
    syscall: Syscall,
    errno: i32,
    /// Failures left.
    times: u32,
    /// Calls to let run before the first failure.
    skip: u32,
}

/// Pending faults in the order they were injected.
static PLAN: Mutex<Vec<Fault>> = Mutex::new(Vec::new());

/// Makes the next `times` calls of `syscall` fail with `errno` instead of running. Faults of one call
/// queue up: a second injection takes effect after the first is used up.
pub fn inject(syscall: Syscall, errno: i32, times: u32) {
    inject_after(syscall, errno, times, 0);
}

/// Like [`inject`], after letting `skip` calls of `syscall` run (to fail a call in the middle of a batch).
pub fn inject_after(syscall: Syscall, errno: i32, times: u32, skip: u32) {
    if times == 0 {
        return;
    }
    let mut plan = PLAN.lock().unwrap_or_else(PoisonError::into_inner);
    plan.push(Fault { syscall, errno, times, skip });
    ARMED.store(true, Relaxed);
}

/// Drops every pending fault.
pub fn clear() {
    let mut plan = PLAN.lock().unwrap_or_else(PoisonError::into_inner);
    plan.clear();
    ARMED.store(false, Relaxed);
}

/// How many injected failures of `syscall` are still pending.
pub fn pending(syscall: Syscall) -> u32 {
    let plan = PLAN.lock().unwrap_or_else(PoisonError::into_inner);
    plan.iter().filter(|f| f.syscall == syscall).map(|f| f.times).sum()
}

/// Whether any fault is pending (one relaxed load): paths that batch several kinds of calls into one
/// take their one-call-per-kind form then, so each injected fault hits the call it names.
#[inline]
pub(crate) fn armed() -> bool {
    ARMED.load(Relaxed)
}

/// The error the wrapped call must return instead of running, if a fault is pending for it.
#[inline]
pub(crate) fn take(syscall: Syscall) -> Option<io::Error> {
    if !ARMED.load(Relaxed) {
        return None;
    }
    take_armed(syscall)
}

#[cold]
fn take_armed(syscall: Syscall) -> Option<io::Error> {
    let mut plan = PLAN.lock().unwrap_or_else(PoisonError::into_inner);
    let at = plan.iter().position(|f| f.syscall == syscall)?;
    let fault = &mut plan[at];
    if fault.skip > 0 {
        fault.skip -= 1;
        return None;
    }
    let errno = fault.errno;
    fault.times -= 1;
    if fault.times == 0 {
        plan.remove(at);
    }
    if plan.is_empty() {
        ARMED.store(false, Relaxed);
    }
    Some(io::Error::from_raw_os_error(errno))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_fire_the_number_of_times_asked_in_injection_order() {
        clear();
        assert!(take(Syscall::SendGso).is_none());
        inject(Syscall::SendGso, libc::EIO, 2);
        inject(Syscall::SendGso, libc::EINVAL, 1);
        inject(Syscall::RecvMmsg, libc::EAGAIN, 1);
        assert_eq!(pending(Syscall::SendGso), 3);
        let errnos: Vec<Option<i32>> = (0..4).map(|_| take(Syscall::SendGso).and_then(|e| e.raw_os_error())).collect();
        assert_eq!(errnos, [Some(libc::EIO), Some(libc::EIO), Some(libc::EINVAL), None]);
        assert_eq!(take(Syscall::RecvMmsg).and_then(|e| e.raw_os_error()), Some(libc::EAGAIN));
        assert!(!ARMED.load(Relaxed), "disarmed once the plan is empty");
        inject_after(Syscall::TunRead, libc::EIO, 1, 2);
        let errnos: Vec<Option<i32>> = (0..4).map(|_| take(Syscall::TunRead).and_then(|e| e.raw_os_error())).collect();
        assert_eq!(errnos, [None, None, Some(libc::EIO), None], "two calls run, the third fails");
        for s in Syscall::ALL {
            assert_eq!(Syscall::parse(s.name()), Some(s));
        }
        assert_eq!(errno_by_name("ENOBUFS"), Some(libc::ENOBUFS));
        assert_eq!(errno_by_name("nope"), None);
    }
}
