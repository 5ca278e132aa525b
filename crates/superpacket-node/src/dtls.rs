//! The DTLS-record AEAD framer for JS: keys from the app, rekeying, stats.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use napi::bindgen_prelude::Buffer;
use napi_derive::napi;
use superpacket_dtls::{Cipher, ConfigError, DtlsConfig, DtlsFramer, KeyMaterial};

use napi::Result;

use crate::error::invalid_argument;
use crate::framer::NativeFramer;
use crate::tunnel::drop_reasons;

/// A bad option as `ERR_SUPERPACKET_INVALID_ARGUMENT` naming the field.
fn config_error(e: ConfigError) -> napi::Error {
    invalid_argument(format!("dtlsFramer: {e}"))
}

/// A key and iv for one direction.
#[napi(object)]
pub struct DtlsKeys {
    pub key: Buffer,
    pub iv: Buffer,
}

/// The framer's options as JS gives them.
#[napi(object)]
pub struct DtlsOptions {
    pub cipher: String,
    pub epoch: f64,
    pub tx: DtlsKeys,
    pub rx: DtlsKeys,
    pub prefix: Option<Buffer>,
    pub replay_window: Option<u32>,
    pub grace_period_ms: Option<f64>,
}

/// A rekey as JS gives it.
#[napi(object)]
pub struct DtlsRekey {
    pub epoch: f64,
    pub tx: DtlsKeys,
    pub rx: DtlsKeys,
}

/// The framer's counters.
#[napi(object)]
pub struct JsDtlsStats {
    pub epoch: u32,
    pub previous_epoch: Option<u32>,
    pub sealed: f64,
    pub opened: f64,
    pub exhausted: f64,
    pub drop_reasons: HashMap<String, f64>,
}

fn keys(k: &DtlsKeys) -> KeyMaterial {
    KeyMaterial { key: k.key.to_vec(), iv: k.iv.to_vec() }
}

/// A whole number from JS, or an error naming `field`.
fn whole(field: &str, n: f64) -> std::result::Result<u64, ConfigError> {
    if n >= 0.0 && n.fract() == 0.0 && n <= 2f64.powi(53) {
        Ok(n as u64)
    } else {
        Err(ConfigError::new(field, format!("must be a whole number, not {n}")))
    }
}

fn config(o: &DtlsOptions) -> std::result::Result<DtlsConfig, ConfigError> {
    let cipher = Cipher::from_name(&o.cipher).ok_or_else(|| {
        ConfigError::new("cipher", format!("'{}' is not chacha20-poly1305, aes-128-gcm or aes-256-gcm", o.cipher))
    })?;
    let mut c = DtlsConfig::new(cipher, whole("epoch", o.epoch)?, keys(&o.tx), keys(&o.rx));
    if let Some(p) = &o.prefix {
        c.prefix = p.to_vec();
    }
    if let Some(w) = o.replay_window {
        c.replay_window = w as usize;
    }
    if let Some(ms) = o.grace_period_ms {
        c.grace_period = Duration::from_millis(whole("gracePeriodMs", ms)?);
    }
    Ok(c)
}

/// Makes the DTLS-record framer.
#[napi]
pub fn dtls_framer(options: DtlsOptions) -> Result<NativeFramer> {
    let framer = DtlsFramer::new(config(&options).map_err(config_error)?).map_err(config_error)?;
    Ok(NativeFramer::from_dtls(Arc::new(framer)))
}

/// Switches a DTLS framer to a new epoch and keys.
pub fn rekey(framer: &DtlsFramer, r: &DtlsRekey) -> Result<()> {
    let epoch = whole("epoch", r.epoch).map_err(config_error)?;
    framer.rekey(epoch, &keys(&r.tx), &keys(&r.rx)).map_err(config_error)
}

/// A DTLS framer's counters.
pub fn stats(framer: &DtlsFramer) -> JsDtlsStats {
    let s = framer.stats();
    JsDtlsStats {
        epoch: u32::from(s.epoch),
        previous_epoch: s.previous_epoch.map(u32::from),
        sealed: s.sealed as f64,
        opened: s.opened as f64,
        exhausted: s.exhausted as f64,
        drop_reasons: drop_reasons(&s.drops),
    }
}
