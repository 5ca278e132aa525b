//! Readiness waits on the JS thread's own event loop.
//!
//! A receive into JS memory runs on the JS thread and, when nothing is queued, waits for the socket
//! to turn readable. Waiting through tokio costs a second thread per wake-up: the reactor thread wakes,
//! then signals the JS thread's loop, and on a 2-CPU machine that thread competes with the JS thread
//! for the CPU the sender leaves (15 % of a GRO receiver's samples). Here the JS thread's libuv loop
//! watches a duplicate of the socket's descriptor itself (`uv_poll`), so the kernel wakes the thread
//! that receives.
//!
//! Sockets on Unix (tested on Linux), TUN queues on Linux.
//!
//! A watch is armed for one wake-up at a time (`watchArm`); it then calls its JS callback with 0, or a
//! negative errno if libuv reports the descriptor broken, inside a callback scope (so the promise
//! reactions of the callback run before the loop goes on). `watchClose` closes it and its duplicate
//! descriptor at once (libuv frees its handle later, in the loop's close phase). Everything here runs
//! on the thread that owns the env and its loop; a worker thread's watch closes when the worker's env
//! is torn down.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ffi::{c_int, c_void, CStr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr;
use std::sync::OnceLock;

use napi::{sys, Result};

use crate::error::invalid_argument;

/// libuv's handle, opaque: allocated with the size `uv_handle_size` gives, reached through its data
/// pointer with `uv_handle_get_data`.
type UvHandle = c_void;
type PollCallback = unsafe extern "C" fn(*mut UvHandle, c_int, c_int);
type CloseCallback = unsafe extern "C" fn(*mut UvHandle);

/// `UV_POLL` in libuv's `uv_handle_type`.
const UV_POLL: c_int = 8;
/// `UV_READABLE` in libuv's `uv_poll_event`.
const UV_READABLE: c_int = 1;

/// The libuv functions used here, looked up in the process when first needed: node exports them to
/// addons, but a runtime that loads Node-API addons without libuv does not, and the addon must still load
/// there (its reads then wait through tokio).
struct Uv {
    handle_size: unsafe extern "C" fn(c_int) -> usize,
    get_data: unsafe extern "C" fn(*const UvHandle) -> *mut c_void,
    set_data: unsafe extern "C" fn(*mut UvHandle, *mut c_void),
    poll_init: unsafe extern "C" fn(*mut sys::uv_loop_s, *mut UvHandle, c_int) -> c_int,
    poll_start: unsafe extern "C" fn(*mut UvHandle, c_int, PollCallback) -> c_int,
    poll_stop: unsafe extern "C" fn(*mut UvHandle) -> c_int,
    close: unsafe extern "C" fn(*mut UvHandle, Option<CloseCallback>),
}

/// The function `name` of the process's global scope, as the function pointer type `F`.
///
/// # Safety
/// `F` must be a function pointer type with the C signature of the exported function `name`.
unsafe fn symbol<F: Copy>(name: &CStr) -> Option<F> {
    const { assert!(std::mem::size_of::<F>() == std::mem::size_of::<*mut c_void>()) };
    // SAFETY: dlsym with a NUL-terminated name; RTLD_DEFAULT searches the process's global scope.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    // SAFETY: a non-null result is the address of that function, whose signature the caller vouches for.
    (!p.is_null()).then(|| unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) })
}

/// The process's libuv, if it has one.
fn uv() -> Option<&'static Uv> {
    static UV: OnceLock<Option<Uv>> = OnceLock::new();
    UV.get_or_init(|| {
        // SAFETY: each field's type spells out the C signature of the libuv function of that name (libuv's
        // stable API, uv.h).
        unsafe {
            Some(Uv {
                handle_size: symbol(c"uv_handle_size")?,
                get_data: symbol(c"uv_handle_get_data")?,
                set_data: symbol(c"uv_handle_set_data")?,
                poll_init: symbol(c"uv_poll_init")?,
                poll_start: symbol(c"uv_poll_start")?,
                poll_stop: symbol(c"uv_poll_stop")?,
                close: symbol(c"uv_close")?,
            })
        }
    })
    .as_ref()
}

/// Whether this process has a libuv to watch descriptors with.
pub fn available() -> bool {
    uv().is_some()
}

/// Tags the externals this module hands out, so that no other value passes for one.
const TAG: sys::napi_type_tag = sys::napi_type_tag { lower: 0x7375_7065_7270_6b74, upper: 0x7576_2d77_6174_6368 };

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Armed,
    Closing,
}

struct Watch {
    env: sys::napi_env,
    handle: *mut UvHandle,
    layout: Layout,
    /// The duplicate descriptor libuv watches; closed when the watch closes.
    fd: Option<OwnedFd>,
    callback: sys::napi_ref,
    context: sys::napi_async_context,
    state: State,
    /// Owners left: the JS external and the libuv handle until its close callback.
    owners: u8,
}

fn check(status: sys::napi_status, what: &str) -> Result<()> {
    if status == sys::Status::napi_ok {
        Ok(())
    } else {
        Err(invalid_argument(format!("{what} failed (N-API status {status})")))
    }
}

/// Opens a watch of `fd` on `env`'s loop that calls `callback` on each wake-up; returns its external.
///
/// # Safety
/// `env` and `callback` are the live env and an argument of a call on the JS thread.
pub unsafe fn open(env: sys::napi_env, fd: OwnedFd, callback: sys::napi_value) -> Result<sys::napi_value> {
    let uv = uv().ok_or_else(|| invalid_argument("this runtime has no libuv to watch descriptors with"))?;
    unsafe {
        let mut kind = sys::ValueType::napi_undefined;
        if sys::napi_typeof(env, callback, &mut kind) != sys::Status::napi_ok || kind != sys::ValueType::napi_function {
            return Err(invalid_argument("callback must be a function"));
        }
        let mut event_loop = ptr::null_mut();
        check(sys::napi_get_uv_event_loop(env, &mut event_loop), "napi_get_uv_event_loop")?;
        let layout = Layout::from_size_align((uv.handle_size)(UV_POLL), 16)
            .map_err(|_| invalid_argument("libuv reports an impossible handle size"))?;
        let handle = alloc_zeroed(layout).cast::<UvHandle>();
        if handle.is_null() {
            return Err(invalid_argument("out of memory for a libuv handle"));
        }
        let rc = (uv.poll_init)(event_loop, handle, fd.as_raw_fd());
        if rc != 0 {
            // An uninitialized handle needs no uv_close.
            dealloc(handle.cast(), layout);
            return Err(invalid_argument(format!("uv_poll_init failed ({rc})")));
        }
        let w = Box::into_raw(Box::new(Watch {
            env,
            handle,
            layout,
            fd: Some(fd),
            callback: ptr::null_mut(),
            context: ptr::null_mut(),
            state: State::Idle,
            owners: 1,
        }));
        (uv.set_data)(handle, w.cast());
        // From here on the handle is open: every failure closes it, which frees what was made.
        let made = (|| -> Result<sys::napi_value> {
            check(sys::napi_create_reference(env, callback, 1, &mut (*w).callback), "napi_create_reference")?;
            let mut name = ptr::null_mut();
            check(sys::napi_create_string_utf8(env, c"superpacket.readable".as_ptr(), -1, &mut name), "a string")?;
            check(sys::napi_async_init(env, ptr::null_mut(), name, &mut (*w).context), "napi_async_init")?;
            check(sys::napi_add_env_cleanup_hook(env, Some(on_env_teardown), w.cast()), "napi_add_env_cleanup_hook")?;
            let mut ext = ptr::null_mut();
            check(
                sys::napi_create_external(env, w.cast(), Some(on_finalize), ptr::null_mut(), &mut ext),
                "napi_create_external",
            )?;
            (*w).owners = 2;
            check(sys::napi_type_tag_object(env, ext, &TAG), "napi_type_tag_object")?;
            Ok(ext)
        })();
        if made.is_err() {
            begin_close(w, true);
        }
        made
    }
}

/// The watch behind `ext`, checked to be one.
unsafe fn watch_of(env: sys::napi_env, ext: sys::napi_value) -> Result<*mut Watch> {
    unsafe {
        let mut tagged = false;
        let mut data = ptr::null_mut();
        if sys::napi_check_object_type_tag(env, ext, &TAG, &mut tagged) != sys::Status::napi_ok
            || !tagged
            || sys::napi_get_value_external(env, ext, &mut data) != sys::Status::napi_ok
            || data.is_null()
        {
            return Err(invalid_argument("not a readiness watch"));
        }
        Ok(data.cast())
    }
}

/// Arms the watch behind `ext` for one wake-up (nothing if it is armed). False once it is closed.
///
/// # Safety
/// `env` and `ext` are the live env and an argument of a call on the JS thread.
pub unsafe fn arm(env: sys::napi_env, ext: sys::napi_value) -> Result<bool> {
    unsafe {
        let w = watch_of(env, ext)?;
        // A watch exists only where libuv was found.
        let uv = uv().ok_or_else(|| invalid_argument("no libuv"))?;
        match (*w).state {
            State::Closing => Ok(false),
            State::Armed => Ok(true),
            State::Idle => {
                let rc = (uv.poll_start)((*w).handle, UV_READABLE, on_poll);
                if rc != 0 {
                    return Err(invalid_argument(format!("uv_poll_start failed ({rc})")));
                }
                (*w).state = State::Armed;
                Ok(true)
            }
        }
    }
}

/// Closes the watch behind `ext` (harmless twice). An armed watch does not call back any more.
///
/// # Safety
/// `env` and `ext` are the live env and an argument of a call on the JS thread.
pub unsafe fn close(env: sys::napi_env, ext: sys::napi_value) -> Result<()> {
    unsafe {
        let w = watch_of(env, ext)?;
        begin_close(w, true);
        Ok(())
    }
}

/// Starts closing: libuv lets go of the handle in its close phase (`on_closed`), the JS references go
/// now. `unhook`: whether to take the env cleanup hook off (not from within that hook).
unsafe fn begin_close(w: *mut Watch, unhook: bool) {
    unsafe {
        if (*w).state == State::Closing {
            return;
        }
        (*w).state = State::Closing;
        let env = (*w).env;
        if unhook {
            sys::napi_remove_env_cleanup_hook(env, Some(on_env_teardown), w.cast());
        }
        if !(*w).callback.is_null() {
            sys::napi_delete_reference(env, (*w).callback);
            (*w).callback = ptr::null_mut();
        }
        if !(*w).context.is_null() {
            sys::napi_async_destroy(env, (*w).context);
            (*w).context = ptr::null_mut();
        }
        let Some(uv) = uv() else { return };
        // uv_close stops the poll at once (the descriptor leaves libuv's epoll set) and frees nothing until
        // on_closed; libuv does not touch the descriptor again, so it is closed now: the socket's port is
        // free as soon as the socket is closed.
        (uv.close)((*w).handle, Some(on_closed));
        (*w).fd = None;
    }
}

unsafe fn release(w: *mut Watch) {
    unsafe {
        (*w).owners -= 1;
        if (*w).owners == 0 {
            drop(Box::from_raw(w));
        }
    }
}

unsafe extern "C" fn on_poll(handle: *mut UvHandle, status: c_int, _events: c_int) {
    unsafe {
        let Some(uv) = uv() else { return };
        let w = (uv.get_data)(handle).cast::<Watch>();
        if w.is_null() || (*w).state != State::Armed {
            return;
        }
        // One wake-up per arming: level-triggered polling would otherwise call again until the receive
        // has taken everything.
        (uv.poll_stop)(handle);
        (*w).state = State::Idle;
        let env = (*w).env;
        let mut scope = ptr::null_mut();
        if sys::napi_open_handle_scope(env, &mut scope) != sys::Status::napi_ok {
            return;
        }
        let (mut cb, mut recv, mut arg, mut result) =
            (ptr::null_mut(), ptr::null_mut(), ptr::null_mut(), ptr::null_mut());
        if sys::napi_get_reference_value(env, (*w).callback, &mut cb) == sys::Status::napi_ok
            && !cb.is_null()
            && sys::napi_get_global(env, &mut recv) == sys::Status::napi_ok
            && sys::napi_create_int32(env, status, &mut arg) == sys::Status::napi_ok
        {
            // The callback may close this watch: `w` stays valid until on_closed, which runs later.
            let st = sys::napi_make_callback(env, (*w).context, recv, cb, 1, &arg, &mut result);
            // The callback only resolves a promise; if it threw anyway, the exception is reported as
            // uncaught. An env that is being torn down (a worker ending) refuses to run JS with the same
            // status but no exception: nothing to report then.
            if st == sys::Status::napi_pending_exception {
                let mut err = ptr::null_mut();
                let mut kind = sys::ValueType::napi_undefined;
                if sys::napi_get_and_clear_last_exception(env, &mut err) == sys::Status::napi_ok
                    && !err.is_null()
                    && sys::napi_typeof(env, err, &mut kind) == sys::Status::napi_ok
                    && kind != sys::ValueType::napi_undefined
                {
                    sys::napi_fatal_exception(env, err);
                }
            }
        }
        sys::napi_close_handle_scope(env, scope);
    }
}

unsafe extern "C" fn on_closed(handle: *mut UvHandle) {
    unsafe {
        let Some(uv) = uv() else { return };
        let w = (uv.get_data)(handle).cast::<Watch>();
        dealloc(handle.cast(), (*w).layout);
        release(w);
    }
}

unsafe extern "C" fn on_finalize(_env: sys::napi_env, data: *mut c_void, _hint: *mut c_void) {
    unsafe {
        let w = data.cast::<Watch>();
        begin_close(w, true);
        release(w);
    }
}

unsafe extern "C" fn on_env_teardown(arg: *mut c_void) {
    // The env goes away (a worker thread ends): its loop must have no handle of ours left open.
    unsafe { begin_close(arg.cast(), false) }
}
