//! [`DtlsFramer`]: every segment sealed as one DTLS 1.2 application_data record under keys the
//! application brings (from its own handshake), with a replay window per epoch and rekeying to a new
//! epoch while the previous one still opens for a grace period.
//!
//! Locking: the keys of the current epoch (and the retiring previous one) sit behind one `RwLock` that
//! `seal` and `open` take for reading, once per superpacket and once per datagram; only
//! [`DtlsFramer::rekey`] and the expiry in [`Framer::poll`] write it. Sequence numbers are an atomic
//! counter per epoch from which `seal` reserves one block per superpacket. Each epoch's replay window is
//! behind its own mutex, taken twice per datagram for a few instructions: to reject a replay before
//! spending a decryption on it, and to record the number once the tag has verified.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use superpacket_core::framer::{
    reserve_block, Control, DropCounters, DropReason, Framer, Opened, SealError, Sealed, Slots,
};

use crate::cipher::{Cipher, KeyMaterial, RecordKey, TAG_LEN};
use crate::error::ConfigError;
use crate::record::{
    additional_data, epoch_and_sequence, parse_header, write_header, HeaderError, RECORD_HEADER_LEN, SEQUENCE_LIMIT,
};
use crate::replay::ReplayWindow;

/// Longest prefix before each record.
pub const MAX_PREFIX_LEN: usize = 255;
/// Smallest replay window (records below the highest seen that are still told apart from replays).
pub const MIN_REPLAY_WINDOW: usize = 1024;
/// Largest replay window (128 KiB of bitmap per epoch).
pub const MAX_REPLAY_WINDOW: usize = 1 << 20;
/// The replay window unless configured: wireguard-go's, wide enough for the reordering of several
/// queues sending 64-segment trains at once.
pub const DEFAULT_REPLAY_WINDOW: usize = 8192;
/// How long records of the previous epoch still open after a rekey unless configured: the TCP maximum
/// segment lifetime, which RFC 6347 §4.1 names as the longest to keep an old epoch's keys.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(120);
/// Longest grace period.
pub const MAX_GRACE_PERIOD: Duration = Duration::from_secs(24 * 60 * 60);
/// Highest epoch (16 bits on the wire). Epochs only go up: an epoch cannot be used twice.
pub const MAX_EPOCH: u64 = u16::MAX as u64;

/// Everything a [`DtlsFramer`] needs. [`DtlsConfig::new`] fills in the defaults.
#[derive(Debug, Clone)]
pub struct DtlsConfig {
    /// The record cipher; fixed for the framer's life (the headroom depends on it).
    pub cipher: Cipher,
    /// The first epoch, 0 to [`MAX_EPOCH`].
    pub epoch: u64,
    /// Key and iv for records this side seals.
    pub tx: KeyMaterial,
    /// Key and iv for records the peer seals.
    pub rx: KeyMaterial,
    /// Bytes before every record (a session id, say); at most [`MAX_PREFIX_LEN`], may be empty.
    pub prefix: Vec<u8>,
    /// Replay window in records, [`MIN_REPLAY_WINDOW`] to [`MAX_REPLAY_WINDOW`] (rounded up to a multiple
    /// of 64).
    pub replay_window: usize,
    /// How long after a rekey records of the previous epoch still open; zero closes it at once.
    pub grace_period: Duration,
}

impl DtlsConfig {
    /// A config with no prefix, [`DEFAULT_REPLAY_WINDOW`] and [`DEFAULT_GRACE_PERIOD`].
    pub fn new(cipher: Cipher, epoch: u64, tx: KeyMaterial, rx: KeyMaterial) -> Self {
        DtlsConfig {
            cipher,
            epoch,
            tx,
            rx,
            prefix: Vec::new(),
            replay_window: DEFAULT_REPLAY_WINDOW,
            grace_period: DEFAULT_GRACE_PERIOD,
        }
    }
}

/// Counters of a [`DtlsFramer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DtlsStats {
    /// The epoch records are sealed with.
    pub epoch: u16,
    /// The previous epoch while its grace period lasts.
    pub previous_epoch: Option<u16>,
    /// Records sealed.
    pub sealed: u64,
    /// Records opened (authenticated and new).
    pub opened: u64,
    /// Records refused because the epoch's sequence numbers were used up.
    pub exhausted: u64,
    /// Datagrams dropped by `open`, by reason.
    pub drops: Vec<(DropReason, u64)>,
}

/// The sealing side of one epoch.
struct Sender {
    epoch: u16,
    key: RecordKey,
    next_sequence: AtomicU64,
}

/// The opening side of one epoch.
struct Receiver {
    epoch: u16,
    key: RecordKey,
    replay: Mutex<ReplayWindow>,
}

/// The previous epoch's receiver until its grace period ends.
struct Retiring {
    rx: Receiver,
    until: Instant,
}

struct Keys {
    tx: Sender,
    rx: Receiver,
    previous: Option<Retiring>,
}

impl Keys {
    /// The receiver for `epoch` at `now`, if it is the current one or the previous one within its grace.
    fn receiver(&self, epoch: u16, now: impl FnOnce() -> Instant) -> Option<&Receiver> {
        if epoch == self.rx.epoch {
            return Some(&self.rx);
        }
        self.previous.as_ref().filter(|p| p.rx.epoch == epoch && now() < p.until).map(|p| &p.rx)
    }
}

/// DTLS 1.2 application_data records around every segment: `prefix ‖ header (13) ‖ [explicit nonce (8),
/// AES-GCM only] ‖ ciphertext ‖ tag (16)`. See the crate documentation for the exact format.
pub struct DtlsFramer {
    cipher: Cipher,
    prefix: Box<[u8]>,
    headroom: usize,
    replay_window: usize,
    grace_period: Duration,
    keys: RwLock<Keys>,
    sealed: AtomicU64,
    opened: AtomicU64,
    exhausted: AtomicU64,
    drops: DropCounters,
}

impl std::fmt::Debug for DtlsFramer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsFramer").field("cipher", &self.cipher).field("stats", &self.stats()).finish_non_exhaustive()
    }
}

/// Checks an epoch from the API and narrows it to its 16 wire bits.
fn check_epoch(epoch: u64) -> Result<u16, ConfigError> {
    u16::try_from(epoch).map_err(|_| ConfigError::new("epoch", format!("must be 0 to {MAX_EPOCH}, got {epoch}")))
}

impl DtlsFramer {
    /// A framer sealing and opening with `config`'s keys at `config.epoch`.
    pub fn new(config: DtlsConfig) -> Result<Self, ConfigError> {
        if config.prefix.len() > MAX_PREFIX_LEN {
            return Err(ConfigError::new(
                "prefix",
                format!("at most {MAX_PREFIX_LEN} bytes, got {}", config.prefix.len()),
            ));
        }
        if !(MIN_REPLAY_WINDOW..=MAX_REPLAY_WINDOW).contains(&config.replay_window) {
            return Err(ConfigError::new(
                "replayWindow",
                format!("must be {MIN_REPLAY_WINDOW} to {MAX_REPLAY_WINDOW} records, got {}", config.replay_window),
            ));
        }
        if config.grace_period > MAX_GRACE_PERIOD {
            return Err(ConfigError::new(
                "gracePeriod",
                format!("at most {} s, got {:?}", MAX_GRACE_PERIOD.as_secs(), config.grace_period),
            ));
        }
        let epoch = check_epoch(config.epoch)?;
        let (tx, rx) = Self::epoch_keys(config.cipher, epoch, &config.tx, &config.rx, config.replay_window)?;
        let headroom = config.prefix.len() + RECORD_HEADER_LEN + config.cipher.explicit_nonce_len();
        Ok(DtlsFramer {
            cipher: config.cipher,
            prefix: config.prefix.into_boxed_slice(),
            headroom,
            replay_window: config.replay_window,
            grace_period: config.grace_period,
            keys: RwLock::new(Keys { tx, rx, previous: None }),
            sealed: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            exhausted: AtomicU64::new(0),
            drops: DropCounters::default(),
        })
    }

    fn epoch_keys(
        cipher: Cipher,
        epoch: u16,
        tx: &KeyMaterial,
        rx: &KeyMaterial,
        replay_window: usize,
    ) -> Result<(Sender, Receiver), ConfigError> {
        let tx = Sender { epoch, key: RecordKey::new(cipher, tx, "tx")?, next_sequence: AtomicU64::new(0) };
        let rx = Receiver {
            epoch,
            key: RecordKey::new(cipher, rx, "rx")?,
            replay: Mutex::new(ReplayWindow::new(replay_window)),
        };
        Ok((tx, rx))
    }

    /// Switches to `epoch` (greater than the current one) with new keys: seals from now on use `epoch`
    /// with sequence numbers from 0, and records of `epoch` open with `rx`. Records of the epoch being
    /// replaced still open for the configured grace period, measured from this call; an epoch before
    /// that is closed at once (one previous epoch is kept, not more). On an error nothing changes.
    pub fn rekey(&self, epoch: u64, tx: &KeyMaterial, rx: &KeyMaterial) -> Result<(), ConfigError> {
        let epoch = check_epoch(epoch)?;
        let (tx, rx) = Self::epoch_keys(self.cipher, epoch, tx, rx, self.replay_window)?;
        let mut keys = self.keys.write();
        if epoch <= keys.tx.epoch {
            return Err(ConfigError::new(
                "epoch",
                format!("must be greater than the current epoch {}, got {epoch}", keys.tx.epoch),
            ));
        }
        let old_rx = std::mem::replace(&mut keys.rx, rx);
        keys.tx = tx;
        keys.previous = (!self.grace_period.is_zero())
            .then(|| Instant::now().checked_add(self.grace_period))
            .flatten()
            .map(|until| Retiring { rx: old_rx, until });
        Ok(())
    }

    /// The cipher.
    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// The prefix before every record.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// The epoch records are sealed with now.
    pub fn epoch(&self) -> u16 {
        self.keys.read().tx.epoch
    }

    /// Drops counted by `open`, by reason.
    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> DtlsStats {
        let (epoch, previous_epoch) = {
            let keys = self.keys.read();
            let now = Instant::now();
            (keys.tx.epoch, keys.previous.as_ref().filter(|p| now < p.until).map(|p| p.rx.epoch))
        };
        DtlsStats {
            epoch,
            previous_epoch,
            sealed: self.sealed.load(Ordering::Relaxed),
            opened: self.opened.load(Ordering::Relaxed),
            exhausted: self.exhausted.load(Ordering::Relaxed),
            drops: self.drops.snapshot(),
        }
    }

    /// Opens one record, or says why not (the caller counts it).
    fn open_record<'a>(&self, datagram: &'a mut [u8]) -> Result<&'a [u8], DropReason> {
        let prefix_len = self.prefix.len();
        let prefix = datagram.get(..prefix_len).ok_or(DropReason::TooShort)?;
        if *prefix != *self.prefix {
            return Err(DropReason::Mismatch);
        }
        let record = datagram.get(prefix_len..).ok_or(DropReason::TooShort)?;
        let header = parse_header(record).map_err(|e| match e {
            HeaderError::TooShort => DropReason::TooShort,
            HeaderError::WrongTypeOrVersion => DropReason::Mismatch,
        })?;
        // One record per datagram: a fragment longer than what arrived was truncated; bytes after it
        // are not ours to pass on.
        let fragment = record.get(RECORD_HEADER_LEN..).ok_or(DropReason::TooShort)?;
        if header.fragment_len > fragment.len() {
            return Err(DropReason::TooShort);
        }
        if header.fragment_len < fragment.len() {
            return Err(DropReason::Mismatch);
        }
        let explicit_len = self.cipher.explicit_nonce_len();
        // An empty plaintext is no IP packet.
        let plaintext_len =
            fragment.len().checked_sub(explicit_len + TAG_LEN).filter(|&n| n > 0).ok_or(DropReason::TooShort)?;
        let plaintext_len = u16::try_from(plaintext_len).map_err(|_| DropReason::Mismatch)?;
        if fragment[..explicit_len] != header.epoch_seq.to_be_bytes()[..explicit_len] {
            return Err(DropReason::Mismatch);
        }

        let keys = self.keys.read();
        let rx = keys.receiver(header.epoch(), Instant::now).ok_or(DropReason::UnknownSession)?;
        let sequence = header.sequence();
        if !rx.replay.lock().check(sequence) {
            return Err(DropReason::Replay);
        }
        let ciphertext_start = self.headroom;
        let (_, ciphertext_and_tag) = datagram.split_at_mut_checked(ciphertext_start).ok_or(DropReason::TooShort)?;
        let plaintext = rx
            .key
            .open(header.epoch_seq, additional_data(header.epoch_seq, plaintext_len), ciphertext_and_tag)
            .ok_or(DropReason::BadMac)?;
        // Checked again: a copy of this record may have been accepted on another thread meanwhile.
        if !rx.replay.lock().mark(sequence) {
            return Err(DropReason::Replay);
        }
        Ok(plaintext)
    }

    /// Seals slot `i` of `slots` as the record numbered `epoch_seq`.
    fn seal_slot(&self, slots: &mut Slots<'_>, i: usize, key: &RecordKey, epoch_seq: u64) -> Result<(), SealError> {
        let packet_len = slots.packet_len(i);
        let explicit_len = self.cipher.explicit_nonce_len();
        let fragment_len = u16::try_from(explicit_len + packet_len + TAG_LEN).map_err(|_| SealError::BadLayout)?;
        let plaintext_len = u16::try_from(packet_len).map_err(|_| SealError::BadLayout)?;
        let slot = slots.slot_mut(i).ok_or(SealError::BadLayout)?;
        let (head, body) = slot.split_at_mut_checked(self.headroom).ok_or(SealError::BadLayout)?;
        let (packet, tail) = body.split_at_mut_checked(packet_len).ok_or(SealError::BadLayout)?;
        let (prefix, rest) = head.split_at_mut_checked(self.prefix.len()).ok_or(SealError::BadLayout)?;
        let (header, explicit) = rest.split_first_chunk_mut::<RECORD_HEADER_LEN>().ok_or(SealError::BadLayout)?;
        prefix.copy_from_slice(&self.prefix);
        write_header(header, epoch_seq, fragment_len);
        explicit.copy_from_slice(epoch_seq.to_be_bytes().get(..explicit.len()).ok_or(SealError::BadLayout)?);
        let tag = key.seal(epoch_seq, additional_data(epoch_seq, plaintext_len), packet).ok_or(SealError::BadLayout)?;
        tail.get_mut(..TAG_LEN).ok_or(SealError::BadLayout)?.copy_from_slice(tag.as_ref());
        Ok(())
    }

    /// Starts the current epoch's sequence numbers at `next` (to reach the end of the space in tests).
    #[cfg(test)]
    pub(crate) fn set_next_sequence(&self, next: u64) {
        self.keys.read().tx.next_sequence.store(next, Ordering::Relaxed);
    }
}

impl Framer for DtlsFramer {
    fn headroom(&self) -> usize {
        self.headroom
    }

    fn tailroom(&self) -> usize {
        TAG_LEN
    }

    fn seal(&self, slots: &mut Slots<'_>, _control: &mut Control) -> Result<Sealed, SealError> {
        if slots.headroom() != self.headroom || slots.tailroom() != TAG_LEN {
            return Err(SealError::BadLayout);
        }
        let count = slots.count();
        // Every packet fits the 16-bit length if the first (the longest) does.
        if self.cipher.explicit_nonce_len() + slots.packet_len(0) + TAG_LEN > usize::from(u16::MAX) {
            return Err(SealError::BadLayout);
        }
        let keys = self.keys.read();
        let tx = &keys.tx;
        let Some(first) = reserve_block(&tx.next_sequence, count as u64, SEQUENCE_LIMIT) else {
            self.exhausted.fetch_add(count as u64, Ordering::Relaxed);
            return Err(SealError::Exhausted);
        };
        for i in 0..count {
            self.seal_slot(slots, i, &tx.key, epoch_and_sequence(tx.epoch, first + i as u64))?;
        }
        self.sealed.fetch_add(count as u64, Ordering::Relaxed);
        Ok(Sealed::ToPeer)
    }

    fn open<'a>(
        &self,
        datagram: &'a mut [u8],
        _scratch: &'a mut [u8],
        _from: SocketAddr,
        _control: &mut Control,
    ) -> Opened<'a> {
        match self.open_record(datagram) {
            Ok(packet) => {
                self.opened.fetch_add(1, Ordering::Relaxed);
                Opened::Data { packet, authenticated: true }
            }
            Err(reason) => {
                self.drops.add(reason, 1);
                Opened::Dropped(reason)
            }
        }
    }

    /// Forgets the previous epoch's key once its grace period is over.
    fn poll(&self, _control: &mut Control) {
        let now = Instant::now();
        let expired = |keys: &Keys| keys.previous.as_ref().is_some_and(|p| now >= p.until);
        if expired(&self.keys.read()) {
            let mut keys = self.keys.write();
            if expired(&keys) {
                keys.previous = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn material(cipher: Cipher, byte: u8) -> KeyMaterial {
        KeyMaterial { key: vec![byte; cipher.key_len()], iv: vec![byte ^ 0x55; cipher.iv_len()] }
    }

    /// Near the end of the 48-bit space, a superpacket that would need a number past it is refused whole,
    /// counted, and the space stays usable for one that fits.
    #[test]
    fn refuses_to_seal_past_the_sequence_space() {
        let cipher = Cipher::Chacha20Poly1305;
        let sender = DtlsFramer::new(DtlsConfig::new(cipher, 1, material(cipher, 1), material(cipher, 2))).unwrap();
        let receiver = DtlsFramer::new(DtlsConfig::new(cipher, 1, material(cipher, 2), material(cipher, 1))).unwrap();
        sender.set_next_sequence(SEQUENCE_LIMIT - 3);
        let h = sender.headroom();
        let mut buf = vec![0x45u8; 4 * (h + 10 + TAG_LEN)];
        let mut slots = Slots::new(&mut buf, h, TAG_LEN, 10, 10, 4).unwrap();
        assert_eq!(sender.seal(&mut slots, &mut Control::new()), Err(SealError::Exhausted));
        assert_eq!(sender.stats().exhausted, 4);
        assert_eq!(sender.stats().sealed, 0);

        let mut buf = vec![0x45u8; 3 * (h + 10 + TAG_LEN)];
        let mut slots = Slots::new(&mut buf, h, TAG_LEN, 10, 10, 3).unwrap();
        assert_eq!(sender.seal(&mut slots, &mut Control::new()), Ok(Sealed::ToPeer));
        let stride = h + 10 + TAG_LEN;
        let last = &mut buf[2 * stride..];
        assert_eq!(&last[5..11], &(SEQUENCE_LIMIT - 1).to_be_bytes()[2..], "the last number of the space is used");
        let mut scratch = vec![0u8; last.len()];
        let from = "198.18.0.1:1".parse().unwrap();
        assert!(matches!(receiver.open(last, &mut scratch, from, &mut Control::new()), Opened::Data { .. }));

        let mut buf = vec![0x45u8; h + 10 + TAG_LEN];
        let mut slots = Slots::new(&mut buf, h, TAG_LEN, 10, 10, 1).unwrap();
        assert_eq!(sender.seal(&mut slots, &mut Control::new()), Err(SealError::Exhausted));
        assert_eq!(sender.stats().exhausted, 5);

        // A rekey starts a fresh space.
        sender.rekey(2, &material(cipher, 3), &material(cipher, 4)).unwrap();
        assert_eq!(sender.seal(&mut slots, &mut Control::new()), Ok(Sealed::ToPeer));
        assert_eq!(&buf[3..11], &epoch_and_sequence(2, 0).to_be_bytes());
    }
}
