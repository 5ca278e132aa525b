//! Test hosts: network namespaces made and removed by the tests themselves.
#![allow(dead_code)]

pub mod packets;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Whether privileged tests can run. In CI (CI=true) a test that cannot run must fail, so this panics
/// there; elsewhere it prints why the test is skipped and returns false.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let tun = std::path::Path::new("/dev/net/tun").exists();
    if root && tun {
        return true;
    }
    let why = if root { "/dev/net/tun is missing" } else { "not running as root (needs CAP_NET_ADMIN)" };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: privileged test cannot run in CI: {why}");
    }
    eprintln!("skipping {test}: {why}");
    false
}

/// Runs a command, panicking with its output if it fails.
pub fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// A network namespace with a unique name, deleted on drop (also when the test panics).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("sp-{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &[&str]) {
        let mut all = vec!["ip", "netns", "exec", &self.name];
        all.extend_from_slice(args);
        sh(&all);
    }

    /// Runs `f` on a thread that has entered the namespace. Sockets and devices opened there stay in it.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let file = File::open(format!("/var/run/netns/{}", self.name)).expect("open netns file");
        std::thread::spawn(move || {
            // SAFETY: setns on a valid namespace fd only changes this thread's network namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("thread in namespace panicked")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Two namespaces joined by a veth pair `a` <-> `b` with the given addresses (CIDR) on each end.
pub struct VethPair {
    pub a: Netns,
    pub b: Netns,
}

impl VethPair {
    pub fn new(tag: &str, a_addrs: &[&str], b_addrs: &[&str]) -> VethPair {
        let a = Netns::new(&format!("{tag}a"));
        let b = Netns::new(&format!("{tag}b"));
        a.exec(&["ip", "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", &b.name]);
        for addr in a_addrs {
            a.exec(&["ip", "addr", "add", addr, "dev", "va", "nodad"]);
        }
        for addr in b_addrs {
            b.exec(&["ip", "addr", "add", addr, "dev", "vb", "nodad"]);
        }
        a.exec(&["ip", "link", "set", "va", "up"]);
        b.exec(&["ip", "link", "set", "vb", "up"]);
        VethPair { a, b }
    }
}
