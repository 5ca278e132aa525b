//! macOS, Windows and the BSDs: tun-rs's async device, one queue, no offloads. Reads get a zeroed
//! `virtio_net_hdr` in front and writes drop it (see `super`), so the API is the same as on Linux.

use std::io::{self, IoSlice};

use tun_rs::{AsyncDevice, DeviceBuilder};

use super::{OffloadMode, Offloads, Opened, TunOptions};
use crate::error::{ErrorKind, IoError};

/// The device; tun-rs registers it with the current tokio runtime.
pub(super) struct RawQueue {
    dev: AsyncDevice,
}

impl RawQueue {
    pub(super) async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.dev.recv(buf).await
    }

    pub(super) fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.dev.try_recv(buf)
    }

    /// Writes one packet. Without a vnet header the caller always passes a single part; several are
    /// joined rather than refused.
    pub(super) async fn write(&self, parts: &[IoSlice<'_>]) -> io::Result<usize> {
        match parts {
            [one] => self.dev.send(one).await,
            _ => self.dev.send(&parts.iter().flat_map(|p| p.iter().copied()).collect::<Vec<u8>>()).await,
        }
    }
}

pub(super) fn open(opts: &TunOptions) -> Result<Opened, IoError> {
    if opts.offload == OffloadMode::On {
        return Err(IoError::new(ErrorKind::Unsupported, "segmentation offloads need a Linux TUN device"));
    }
    if opts.queues > 1 {
        return Err(IoError::new(ErrorKind::Unsupported, "several TUN queues need Linux (IFF_MULTI_QUEUE)"));
    }
    let dev = opts
        .configure(DeviceBuilder::new())
        .build_async()
        .map_err(|e| IoError::from_admin_os("opening the TUN device (tun-rs)", &e))?;
    let name = dev.name().map_err(|e| IoError::from_os("reading the interface name", &e))?;
    let mtu = dev.mtu().map_err(|e| IoError::from_os("reading the MTU", &e))?;
    Ok(Opened { name, mtu, offloads: Offloads::default(), gso_writes: false, queues: vec![RawQueue { dev }] })
}
