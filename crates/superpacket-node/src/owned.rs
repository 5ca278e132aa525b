//! Copies of JS buffers for work that outlives the call.
//!
//! A JS buffer may be reused, written or detached (transferred to another thread, which moves or frees
//! its memory) as soon as a call returns to JS, and the body of an `async fn` runs on a runtime thread
//! after that. So native code reads and writes JS memory only during a synchronous call on the JS thread:
//! what an asynchronous call needs is copied while its arguments are converted, which happens there.

use napi::bindgen_prelude::FromNapiValue;
use napi::sys;

/// A typed array's elements, copied when the call's arguments are converted (on the JS thread).
pub struct Copied<T>(pub Vec<T>);

impl<T: Copy> FromNapiValue for Copied<T>
where
    for<'a> &'a [T]: FromNapiValue,
{
    unsafe fn from_napi_value(env: sys::napi_env, value: sys::napi_value) -> napi::Result<Self> {
        // SAFETY: the slice lives only during this conversion, on the JS thread, which cannot run JS
        // (and so cannot detach or write the buffer) meanwhile.
        let view = unsafe { <&[T]>::from_napi_value(env, value)? };
        Ok(Copied(view.to_vec()))
    }
}

impl<T> AsRef<[T]> for Copied<T> {
    fn as_ref(&self) -> &[T] {
        &self.0
    }
}

impl<T> std::ops::Deref for Copied<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.0
    }
}
