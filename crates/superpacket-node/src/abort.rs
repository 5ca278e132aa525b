//! `NativeAbort`: how an `AbortSignal` reaches a write running on a native thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use napi::bindgen_prelude::FromNapiValue;
use napi::sys;
use napi_derive::napi;

use crate::error::aborted;

/// Set once from the JS thread when the write's signal aborts; the write checks it before each system
/// call it has yet to make (a call already made, or waiting for room, finishes first), so it can say
/// exactly how much went out.
#[napi]
pub struct NativeAbort {
    flag: Arc<AtomicBool>,
}

#[napi]
impl NativeAbort {
    #[napi(constructor)]
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        NativeAbort { flag: Arc::new(AtomicBool::new(false)) }
    }

    /// Asks the write to stop before its next system call.
    #[napi]
    pub fn abort(&self) {
        self.flag.store(true, Ordering::Relaxed);
    }
}

/// The flag of a write's `NativeAbort`, taken while the call's arguments are converted (on the JS thread).
#[derive(Clone)]
pub struct AbortFlag(Arc<AtomicBool>);

impl AbortFlag {
    /// Whether the signal aborted; false for a write without one.
    pub fn is_set(flag: &Option<AbortFlag>) -> bool {
        flag.as_ref().is_some_and(|f| f.0.load(Ordering::Relaxed))
    }

    /// Fails with `ERR_SUPERPACKET_ABORTED` (`sent` items out) if the signal aborted.
    pub fn check(flag: &Option<AbortFlag>, sent: usize) -> napi::Result<()> {
        if Self::is_set(flag) {
            return Err(aborted(sent));
        }
        Ok(())
    }
}

impl FromNapiValue for AbortFlag {
    unsafe fn from_napi_value(env: sys::napi_env, value: sys::napi_value) -> napi::Result<Self> {
        let abort = unsafe { <&NativeAbort>::from_napi_value(env, value)? };
        Ok(AbortFlag(abort.flag.clone()))
    }
}
