//! The UDP sends JS makes most often, as plain N-API callbacks.
//!
//! A `#[napi]` method costs more than the system call's neighbours on a GSO send: napi-rs unwraps
//! `this` and checks its type tag (two private-property lookups in V8), and opens a borrow scope that
//! registers `&self` in a global mutex-guarded map and allocates per call. A GSO sender spends ~17 % of
//! its CPU outside the kernel that way. These callbacks read their arguments with the bare N-API calls
//! instead and find the socket by a number in a table of this thread's sockets.
//!
//! Each callback runs synchronously on the JS thread and keeps nothing of its arguments: the same
//! rule as everywhere else (see `owned.rs`).

use std::cell::RefCell;
use std::ffi::c_void;
use std::ptr;
use std::sync::Arc;

use napi::bindgen_prelude::ToNapiValue;
use napi::{sys, JsError, Result};
use superpacket_io::udp::words::ADDRESS_WORDS;
use superpacket_io::udp::UdpSocket;

use crate::error::{invalid_argument, io_error};
use crate::udp::{check_lengths, peer_words};

thread_local! {
    /// Sockets JS registered on this thread, by number; `None` for a free number.
    static SOCKETS: RefCell<Vec<Option<Arc<UdpSocket>>>> = const { RefCell::new(Vec::new()) };
}

/// Registers `sock` in this thread's table and returns its number.
pub fn register(sock: &Arc<UdpSocket>) -> u32 {
    SOCKETS.with(|t| {
        let mut t = t.borrow_mut();
        let at = t.iter().position(Option::is_none).unwrap_or_else(|| {
            t.push(None);
            t.len() - 1
        });
        t[at] = Some(Arc::clone(sock));
        at as u32
    })
}

/// Frees number `slot` if it still holds `sock` (a socket dropped on another thread leaves its entry,
/// which only keeps a closed socket's memory).
pub fn unregister(slot: u32, sock: &Arc<UdpSocket>) {
    let _ = SOCKETS.try_with(|t| {
        if let Ok(mut t) = t.try_borrow_mut() {
            if let Some(e) = t.get_mut(slot as usize) {
                if e.as_ref().is_some_and(|s| Arc::ptr_eq(s, sock)) {
                    *e = None;
                }
            }
        }
    });
}

fn with_socket<T>(slot: u32, f: impl FnOnce(&UdpSocket) -> Result<T>) -> Result<T> {
    // `f` is a system call and its bookkeeping: it cannot run JS, so nothing registers meanwhile.
    SOCKETS.with(|t| match t.borrow().get(slot as usize) {
        Some(Some(s)) => f(s),
        _ => Err(invalid_argument(format!("no UDP socket has number {slot}"))),
    })
}

/// The callback's arguments (up to `N`; missing ones read as `undefined` and fail their conversion).
unsafe fn args<const N: usize>(env: sys::napi_env, info: sys::napi_callback_info) -> Result<[sys::napi_value; N]> {
    let mut argv = [ptr::null_mut(); N];
    let mut argc = N;
    // SAFETY: `argv` has room for `argc` values.
    let status =
        unsafe { sys::napi_get_cb_info(env, info, &mut argc, argv.as_mut_ptr(), ptr::null_mut(), ptr::null_mut()) };
    if status != sys::Status::napi_ok {
        return Err(invalid_argument("the call's arguments could not be read"));
    }
    if argc < N {
        return Err(invalid_argument(format!("{N} arguments expected, {argc} given")));
    }
    Ok(argv)
}

unsafe fn uint32(env: sys::napi_env, v: sys::napi_value, what: &str) -> Result<u32> {
    let mut out = 0;
    // SAFETY: plain N-API call on the JS thread.
    if unsafe { sys::napi_get_value_uint32(env, v, &mut out) } != sys::Status::napi_ok {
        return Err(invalid_argument(format!("{what} must be a number")));
    }
    Ok(out)
}

/// A typed array of element type `kind` and element `T`, as a slice that lives for the callback.
unsafe fn typed<'a, T>(env: sys::napi_env, v: sys::napi_value, kind: i32, what: &str) -> Result<&'a [T]> {
    let (mut t, mut len, mut data) = (0, 0usize, ptr::null_mut::<c_void>());
    // SAFETY: plain N-API call on the JS thread; the outputs are plain values.
    let status =
        unsafe { sys::napi_get_typedarray_info(env, v, &mut t, &mut len, &mut data, ptr::null_mut(), ptr::null_mut()) };
    let byte = kind == sys::TypedarrayType::uint8_array || kind == sys::TypedarrayType::uint8_clamped_array;
    let kind_ok =
        t == kind || (byte && (t == sys::TypedarrayType::uint8_array || t == sys::TypedarrayType::uint8_clamped_array));
    if status != sys::Status::napi_ok || !kind_ok {
        return Err(invalid_argument(format!("{what} must be a {}", if byte { "Uint8Array" } else { "Uint32Array" })));
    }
    if len == 0 || data.is_null() {
        return Ok(&[]);
    }
    // SAFETY: V8 gives the view's start and element count; elements of a typed array of this kind are
    // aligned for `T`. The callback runs on the JS thread, which cannot run JS (and so cannot write or
    // detach the array) until it returns, and the slice does not outlive it.
    Ok(unsafe { std::slice::from_raw_parts(data.cast::<T>(), len) })
}

/// Runs `body` and hands its value to JS, or throws its error there.
unsafe fn finish<T: ToNapiValue>(env: sys::napi_env, body: impl FnOnce() -> Result<T>) -> sys::napi_value {
    // SAFETY (both arms): `env` is the live env of this callback.
    match body().and_then(|v| unsafe { T::to_napi_value(env, v) }) {
        Ok(v) => v,
        Err(e) => {
            unsafe { JsError::from(e).throw_into(env) };
            ptr::null_mut()
        }
    }
}

/// `(slot, peer: Uint32Array, data: Uint8Array) -> boolean`: `trySendTo`.
unsafe extern "C" fn try_send_to(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    unsafe {
        finish(env, || {
            let [slot, peer, data] = args::<3>(env, info)?;
            let slot = uint32(env, slot, "slot")?;
            let dest = peer_words(typed::<u32>(env, peer, sys::TypedarrayType::uint32_array, "peer")?)?;
            let data = typed::<u8>(env, data, sys::TypedarrayType::uint8_array, "data")?;
            with_socket(slot, |s| s.try_send_to(dest, data).map_err(io_error))
        })
    }
}

/// `(slot, peer, data, segmentSize) -> bytes sent`: `trySendSegments`.
unsafe extern "C" fn try_send_segments(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    unsafe {
        finish(env, || {
            let [slot, peer, data, seg] = args::<4>(env, info)?;
            let slot = uint32(env, slot, "slot")?;
            let dest = peer_words(typed::<u32>(env, peer, sys::TypedarrayType::uint32_array, "peer")?)?;
            let data = typed::<u8>(env, data, sys::TypedarrayType::uint8_array, "data")?;
            let seg = uint32(env, seg, "segmentSize")? as usize;
            with_socket(slot, |s| s.try_send_segments(dest, data, seg).map(|n| n as u32).map_err(io_error))
        })
    }
}

/// `(slot, peer, data, lengths: Uint32Array, from) -> index of the first datagram not sent`: `trySendLengths`.
unsafe extern "C" fn try_send_lengths(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    unsafe {
        finish(env, || {
            let [slot, peer, data, lengths, from] = args::<5>(env, info)?;
            let slot = uint32(env, slot, "slot")?;
            let dest = peer_words(typed::<u32>(env, peer, sys::TypedarrayType::uint32_array, "peer")?)?;
            let data = typed::<u8>(env, data, sys::TypedarrayType::uint8_array, "data")?;
            let lengths = typed::<u32>(env, lengths, sys::TypedarrayType::uint32_array, "lengths")?;
            let from = uint32(env, from, "from")?;
            let offset = check_lengths(dest, data, lengths, from)?;
            let data = data.get(offset..).unwrap_or_default();
            let rest = lengths.get(from as usize..).unwrap_or_default();
            with_socket(slot, |s| s.try_send_lengths(dest, data, rest).map(|n| from + n as u32).map_err(io_error))
        })
    }
}

/// `(slot, peers: Uint32Array, datas: Uint8Array[], from) -> index of the first datagram not sent`:
/// `trySendMessages`, datagram `i` to the address in words `8 i .. 8 i + 8` of `peers` (`NativePeer.words`).
unsafe extern "C" fn try_send_messages(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    unsafe {
        finish(env, || {
            let [slot, peers, datas, from] = args::<4>(env, info)?;
            let slot = uint32(env, slot, "slot")?;
            let words = typed::<u32>(env, peers, sys::TypedarrayType::uint32_array, "peers")?;
            let mut count = 0u32;
            if sys::napi_get_array_length(env, datas, &mut count) != sys::Status::napi_ok {
                return Err(invalid_argument("datas must be an array of Uint8Array"));
            }
            if words.len() != count as usize * ADDRESS_WORDS {
                return Err(invalid_argument("peers must hold 8 words per datagram"));
            }
            let from = uint32(env, from, "from")?.min(count);
            let mut msgs = Vec::with_capacity((count - from) as usize);
            for (i, w) in words.chunks_exact(ADDRESS_WORDS).enumerate().skip(from as usize) {
                let mut v = ptr::null_mut();
                if sys::napi_get_element(env, datas, i as u32, &mut v) != sys::Status::napi_ok {
                    return Err(invalid_argument("datas must be an array of Uint8Array"));
                }
                msgs.push((peer_words(w)?, typed::<u8>(env, v, sys::TypedarrayType::uint8_array, "each of datas")?));
            }
            with_socket(slot, |s| s.try_send_batch(&msgs).map(|n| from + n as u32).map_err(io_error))
        })
    }
}

/// `(slot, callback: (status: number) => void) -> watch | undefined`: `watchOpen`, a readiness watch of the
/// socket on this thread's event loop (see `watch.rs`); `undefined` where there is none (Windows, or a
/// runtime without libuv).
unsafe extern "C" fn watch_open(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    unsafe {
        let made = (|| -> Result<sys::napi_value> {
            let [slot, callback] = args::<2>(env, info)?;
            let slot = uint32(env, slot, "slot")?;
            #[cfg(unix)]
            if crate::watch::available() {
                let fd = with_socket(slot, |s| s.duplicate_fd().map_err(io_error))?;
                return crate::watch::open(env, fd, callback);
            }
            with_socket(slot, |_| Ok(()))?;
            let mut undefined = ptr::null_mut();
            check(sys::napi_get_undefined(env, &mut undefined))?;
            Ok(undefined)
        })();
        match made {
            Ok(v) => v,
            Err(e) => {
                JsError::from(e).throw_into(env);
                ptr::null_mut()
            }
        }
    }
}

/// `(watch) -> boolean`: `watchArm`, arms the watch for one wake-up; false once it is closed.
unsafe extern "C" fn watch_arm(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    unsafe {
        finish(env, || {
            let [w] = args::<1>(env, info)?;
            watch_call(env, w, true)
        })
    }
}

/// `(watch) -> boolean`: `watchClose`, closes the watch (harmless twice).
unsafe extern "C" fn watch_close(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    unsafe {
        finish(env, || {
            let [w] = args::<1>(env, info)?;
            watch_call(env, w, false)
        })
    }
}

#[cfg(unix)]
unsafe fn watch_call(env: sys::napi_env, w: sys::napi_value, arm: bool) -> Result<bool> {
    // SAFETY: the caller's env and argument, on the JS thread.
    unsafe {
        if arm {
            crate::watch::arm(env, w)
        } else {
            crate::watch::close(env, w).map(|()| false)
        }
    }
}

#[cfg(not(unix))]
unsafe fn watch_call(_env: sys::napi_env, _w: sys::napi_value, _arm: bool) -> Result<bool> {
    Err(invalid_argument("readiness watches exist on Unix only"))
}

/// The object `fastOps()` returns: the callbacks above by name.
pub struct FastOps;

type Callback = unsafe extern "C" fn(sys::napi_env, sys::napi_callback_info) -> sys::napi_value;

impl ToNapiValue for FastOps {
    unsafe fn to_napi_value(env: sys::napi_env, _val: Self) -> Result<sys::napi_value> {
        let ops: [(&std::ffi::CStr, Callback); 7] = [
            (c"trySendTo", try_send_to),
            (c"trySendSegments", try_send_segments),
            (c"trySendLengths", try_send_lengths),
            (c"trySendMessages", try_send_messages),
            (c"watchOpen", watch_open),
            (c"watchArm", watch_arm),
            (c"watchClose", watch_close),
        ];
        let mut obj = ptr::null_mut();
        // SAFETY: plain N-API calls on the JS thread with valid out-pointers and NUL-terminated names.
        unsafe {
            check(sys::napi_create_object(env, &mut obj))?;
            for (name, cb) in ops {
                let mut f = ptr::null_mut();
                check(sys::napi_create_function(env, name.as_ptr(), -1, Some(cb), ptr::null_mut(), &mut f))?;
                check(sys::napi_set_named_property(env, obj, name.as_ptr(), f))?;
            }
        }
        Ok(obj)
    }
}

fn check(status: sys::napi_status) -> Result<()> {
    if status == sys::Status::napi_ok {
        Ok(())
    } else {
        Err(invalid_argument(format!("N-API call failed with status {status}")))
    }
}

/// The plain N-API send callbacks (`trySendTo`, `trySendSegments`, `trySendLengths`, `trySendMessages`) and the
/// readiness watches of receives (`watchOpen`, `watchArm`, `watchClose`); they take the number
/// `NativeUdp.slot()` gives.
#[napi_derive::napi(
    ts_return_type = "{ trySendTo(slot: number, peer: Uint32Array, data: Uint8Array): boolean; trySendSegments(slot: number, peer: Uint32Array, data: Uint8Array, segmentSize: number): number; trySendLengths(slot: number, peer: Uint32Array, data: Uint8Array, lengths: Uint32Array, from: number): number; trySendMessages(slot: number, peers: Uint32Array, datas: Uint8Array[], from: number): number; watchOpen(slot: number, callback: (status: number) => void): object | undefined; watchArm(watch: object): boolean; watchClose(watch: object): boolean }"
)]
pub fn fast_ops() -> FastOps {
    FastOps
}
