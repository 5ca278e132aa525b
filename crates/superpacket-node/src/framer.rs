//! Framer specs from JS to native framers.

use std::sync::Arc;

use napi::bindgen_prelude::Buffer;
use napi_derive::napi;
use superpacket_core::framer::{Framer, HeaderFramer, PlainFramer, ReserveFramer};

use napi::Result;

use crate::error::invalid_argument;

/// Which native framer to build.
#[napi(object)]
pub struct FramerSpec {
    /// `'plain'`, `'header'` or `'reserve'` (slots for a JS framer).
    pub r#type: String,
    /// For `'header'`: the fixed header.
    pub header: Option<Buffer>,
    /// For `'reserve'`: bytes before each segment.
    pub headroom: Option<u32>,
    /// For `'reserve'`: bytes after each segment.
    pub tailroom: Option<u32>,
}

/// Builds the framer a spec names.
pub fn build(spec: &FramerSpec) -> Result<Arc<dyn Framer>> {
    match spec.r#type.as_str() {
        "plain" => Ok(Arc::new(PlainFramer)),
        "header" => {
            let header = spec.header.as_deref().unwrap_or_default();
            match HeaderFramer::new(header) {
                Some(f) if !header.is_empty() => Ok(Arc::new(f)),
                _ => Err(invalid_argument("the header framer needs 1 to 255 header bytes")),
            }
        }
        "reserve" => {
            let headroom = spec.headroom.unwrap_or(0) as usize;
            let tailroom = spec.tailroom.unwrap_or(0) as usize;
            if headroom > 1024 || tailroom > 1024 {
                return Err(invalid_argument("framer headroom and tailroom must be at most 1024"));
            }
            Ok(Arc::new(ReserveFramer { headroom, tailroom }))
        }
        other => Err(invalid_argument(format!("unknown framer type '{other}'"))),
    }
}
