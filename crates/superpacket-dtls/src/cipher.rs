//! The three record ciphers and their nonces, on top of ring's AEADs.
//!
//! - ChaCha20-Poly1305 (RFC 7905): a 12-byte iv; nonce = iv XOR (4 zero bytes ‖ epoch ‖ sequence_number);
//!   the fragment is ciphertext ‖ tag.
//! - AES-GCM (RFC 5288): a 4-byte salt as iv; the fragment starts with an 8-byte explicit nonce, which
//!   this framer always sets to epoch ‖ sequence_number; nonce = salt ‖ explicit nonce.

use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_128_GCM, AES_256_GCM, CHACHA20_POLY1305, NONCE_LEN};

use crate::error::ConfigError;
use crate::record::AAD_LEN;

/// Bytes of the authentication tag after each record's ciphertext (every cipher here).
pub const TAG_LEN: usize = 16;
/// Bytes of the explicit nonce at the start of an AES-GCM fragment.
pub const EXPLICIT_NONCE_LEN: usize = 8;

/// A record cipher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cipher {
    /// ChaCha20-Poly1305 as RFC 7905 uses it.
    Chacha20Poly1305,
    /// AES-128-GCM as RFC 5288 uses it.
    Aes128Gcm,
    /// AES-256-GCM as RFC 5288 uses it.
    Aes256Gcm,
}

impl Cipher {
    /// Every cipher.
    pub const ALL: [Cipher; 3] = [Cipher::Chacha20Poly1305, Cipher::Aes128Gcm, Cipher::Aes256Gcm];

    /// The name the API uses (`"chacha20-poly1305"`, `"aes-128-gcm"`, `"aes-256-gcm"`).
    pub const fn name(self) -> &'static str {
        match self {
            Cipher::Chacha20Poly1305 => "chacha20-poly1305",
            Cipher::Aes128Gcm => "aes-128-gcm",
            Cipher::Aes256Gcm => "aes-256-gcm",
        }
    }

    /// The cipher with this [`name`](Cipher::name).
    pub fn from_name(name: &str) -> Option<Cipher> {
        Cipher::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Bytes of a key.
    pub const fn key_len(self) -> usize {
        match self {
            Cipher::Chacha20Poly1305 | Cipher::Aes256Gcm => 32,
            Cipher::Aes128Gcm => 16,
        }
    }

    /// Bytes of the iv: the whole nonce mask for ChaCha20-Poly1305, the salt for AES-GCM.
    pub const fn iv_len(self) -> usize {
        match self {
            Cipher::Chacha20Poly1305 => NONCE_LEN,
            Cipher::Aes128Gcm | Cipher::Aes256Gcm => NONCE_LEN - EXPLICIT_NONCE_LEN,
        }
    }

    /// Bytes at the start of the fragment before the ciphertext.
    pub const fn explicit_nonce_len(self) -> usize {
        match self {
            Cipher::Chacha20Poly1305 => 0,
            Cipher::Aes128Gcm | Cipher::Aes256Gcm => EXPLICIT_NONCE_LEN,
        }
    }

    fn algorithm(self) -> &'static ring::aead::Algorithm {
        match self {
            Cipher::Chacha20Poly1305 => &CHACHA20_POLY1305,
            Cipher::Aes128Gcm => &AES_128_GCM,
            Cipher::Aes256Gcm => &AES_256_GCM,
        }
    }
}

impl std::fmt::Display for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A key and iv for one direction of one epoch.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyMaterial {
    /// The AEAD key ([`Cipher::key_len`] bytes).
    pub key: Vec<u8>,
    /// The iv ([`Cipher::iv_len`] bytes).
    pub iv: Vec<u8>,
}

impl std::fmt::Debug for KeyMaterial {
    /// Never prints the secret bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyMaterial {{ key: {} bytes, iv: {} bytes }}", self.key.len(), self.iv.len())
    }
}

/// One direction's ready key: ring's key schedule and the iv, placed where the nonce construction
/// wants it.
pub(crate) struct RecordKey {
    cipher: Cipher,
    key: LessSafeKey,
    /// ChaCha20-Poly1305: the 12-byte mask. AES-GCM: the salt in the first 4 bytes, zeros after.
    iv: [u8; NONCE_LEN],
}

impl RecordKey {
    /// Checks the lengths against `cipher` and prepares the key. `side` names the field in errors
    /// (`"tx"`, `"rx"`).
    pub(crate) fn new(cipher: Cipher, material: &KeyMaterial, side: &str) -> Result<Self, ConfigError> {
        if material.key.len() != cipher.key_len() {
            return Err(ConfigError::new(
                format!("{side}.key"),
                format!("{cipher} needs a {}-byte key, got {} bytes", cipher.key_len(), material.key.len()),
            ));
        }
        if material.iv.len() != cipher.iv_len() {
            return Err(ConfigError::new(
                format!("{side}.iv"),
                format!("{cipher} needs a {}-byte iv, got {} bytes", cipher.iv_len(), material.iv.len()),
            ));
        }
        let unbound = UnboundKey::new(cipher.algorithm(), &material.key)
            .map_err(|_| ConfigError::new(format!("{side}.key"), format!("{cipher} refused the key")))?;
        let mut iv = [0u8; NONCE_LEN];
        iv[..material.iv.len()].copy_from_slice(&material.iv);
        Ok(RecordKey { cipher, key: LessSafeKey::new(unbound), iv })
    }

    /// The nonce of the record numbered `epoch_seq`.
    fn nonce(&self, epoch_seq: u64) -> Nonce {
        let mut nonce = self.iv;
        let counter = epoch_seq.to_be_bytes();
        match self.cipher {
            Cipher::Chacha20Poly1305 => nonce[NONCE_LEN - 8..].iter_mut().zip(counter).for_each(|(n, c)| *n ^= c),
            Cipher::Aes128Gcm | Cipher::Aes256Gcm => nonce[NONCE_LEN - 8..].copy_from_slice(&counter),
        }
        Nonce::assume_unique_for_key(nonce)
    }

    /// Encrypts `in_out` in place and returns the tag.
    pub(crate) fn seal(&self, epoch_seq: u64, aad: [u8; AAD_LEN], in_out: &mut [u8]) -> Option<Tag> {
        self.key.seal_in_place_separate_tag(self.nonce(epoch_seq), Aad::from(aad), in_out).ok()
    }

    /// Verifies and decrypts `ciphertext_and_tag` in place; the plaintext is its start.
    pub(crate) fn open<'a>(
        &self,
        epoch_seq: u64,
        aad: [u8; AAD_LEN],
        ciphertext_and_tag: &'a mut [u8],
    ) -> Option<&'a mut [u8]> {
        self.key.open_in_place(self.nonce(epoch_seq), Aad::from(aad), ciphertext_and_tag).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_lengths_follow_the_rfcs() {
        for c in Cipher::ALL {
            assert_eq!(Cipher::from_name(c.name()), Some(c));
        }
        assert_eq!(Cipher::from_name("aes-192-gcm"), None);
        assert_eq!((Cipher::Chacha20Poly1305.key_len(), Cipher::Chacha20Poly1305.iv_len()), (32, 12));
        assert_eq!((Cipher::Aes128Gcm.key_len(), Cipher::Aes128Gcm.iv_len()), (16, 4));
        assert_eq!((Cipher::Aes256Gcm.key_len(), Cipher::Aes256Gcm.iv_len()), (32, 4));
    }

    #[test]
    fn key_material_debug_hides_the_bytes() {
        let m = KeyMaterial { key: vec![0xab; 32], iv: vec![0xcd; 12] };
        let shown = format!("{m:?}");
        assert!(!shown.contains("171") && !shown.contains("ab"), "{shown}");
        assert!(shown.contains("32 bytes"));
    }

    #[test]
    fn wrong_lengths_name_the_field() {
        let e =
            RecordKey::new(Cipher::Aes128Gcm, &KeyMaterial { key: vec![0; 32], iv: vec![0; 4] }, "tx").err().unwrap();
        assert_eq!(e.field, "tx.key");
        let e = RecordKey::new(Cipher::Chacha20Poly1305, &KeyMaterial { key: vec![0; 32], iv: vec![0; 4] }, "rx")
            .err()
            .unwrap();
        assert_eq!(e.field, "rx.iv");
    }
}
