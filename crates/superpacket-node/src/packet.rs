//! The pure packet functions of the package root: `splitSuperpacket` and `coalescePackets`.

use napi::bindgen_prelude::Buffer;
use napi_derive::napi;
use superpacket_core::coalesce::{CoalesceOptions, Coalescer, Frames};
use superpacket_core::split::{self, Layout};

use crate::error::packet_error;
use napi::Result;

/// Splits one frame (10-byte virtio_net_hdr + IP packet) into complete IP packets with final checksums.
#[napi(js_name = "splitSuperpacket")]
pub fn split_superpacket(frame: &[u8]) -> Result<Vec<Buffer>> {
    let plan = split::plan(frame).map_err(packet_error)?;
    let layout = Layout::default();
    let mut out = vec![0u8; plan.buffer_len(layout)];
    split::split_into(frame, layout, &mut out).map_err(packet_error)?;
    let stride = plan.stride(layout);
    Ok(out
        .chunks(stride)
        .enumerate()
        .map(|(i, seg)| {
            let len = if i + 1 == plan.count { plan.last_ip_len } else { plan.seg_ip_len };
            Buffer::from(&seg[..len.min(seg.len())])
        })
        .collect())
}

/// Which protocols `coalescePackets` merges.
#[napi(object)]
pub struct CoalesceSwitches {
    /// Merge TCP segments (default true).
    pub tcp: Option<bool>,
    /// Merge UDP datagrams (default true; a TUN accepts them from Linux 6.2 on).
    pub udp: Option<bool>,
}

/// Coalesces IP packets into frames ready for a TUN write, keeping each flow's order.
#[napi(js_name = "coalescePackets")]
pub fn coalesce_packets(packets: Vec<&[u8]>, options: Option<CoalesceSwitches>) -> Result<Vec<Buffer>> {
    let opts = CoalesceOptions {
        tcp: options.as_ref().and_then(|o| o.tcp).unwrap_or(true),
        udp: options.as_ref().and_then(|o| o.udp).unwrap_or(true),
    };
    let mut frames = Frames::new();
    Coalescer::new(opts).coalesce(&packets, &mut frames);
    Ok(frames.iter().map(Buffer::from).collect())
}
