//! WireGuard keys in the form `wg genkey`, `wg pubkey` and `wg genpsk` print: 32 bytes, standard base64
//! with padding (44 characters).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use boringtun::x25519::{PublicKey, StaticSecret};
use rand_core::{OsRng, RngCore};

use crate::ConfigError;

/// Bytes in a WireGuard key (private, public or preshared).
pub const KEY_LEN: usize = 32;

/// A private or preshared key: its `Debug` output never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(pub [u8; KEY_LEN]);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// Decodes a base64 key; `field` names it in the error.
pub fn parse_key(field: &str, text: &str) -> Result<[u8; KEY_LEN], ConfigError> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|_| ConfigError::new(field, "is not a base64 key (44 characters, as `wg genkey` prints)"))?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        ConfigError::new(field, format!("is {} bytes long; a WireGuard key is {KEY_LEN}", b.len()))
    })
}

/// Decodes a base64 private or preshared key.
pub fn parse_secret(field: &str, text: &str) -> Result<SecretKey, ConfigError> {
    parse_key(field, text).map(SecretKey)
}

/// Encodes a key as base64, as `wg` prints it.
pub fn encode_key(key: &[u8; KEY_LEN]) -> String {
    STANDARD.encode(key)
}

/// A new random private key, clamped for X25519 as `wg genkey` does, in base64.
pub fn generate_private_key() -> String {
    let mut key = [0u8; KEY_LEN];
    OsRng.fill_bytes(&mut key);
    key[0] &= 248;
    key[31] = (key[31] & 127) | 64;
    encode_key(&key)
}

/// The public key of a private key's bytes.
pub fn public_key_bytes(private: &SecretKey) -> [u8; KEY_LEN] {
    PublicKey::from(&StaticSecret::from(private.0)).to_bytes()
}

/// The public key (base64) of a base64 private key, as `wg pubkey` computes it.
pub fn public_key(private: &str) -> Result<String, ConfigError> {
    parse_secret("privateKey", private).map(|k| encode_key(&public_key_bytes(&k)))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Produced on the development machine with wireguard-tools: `wg genkey | tee k | wg pubkey`,
    // and `echo AAAA...= | wg pubkey` for the all-zero key (wg clamps it before use).
    const WG_VECTORS: [(&str, &str); 3] = [
        ("8N4OlJEPOnRQZ63TrwTPzjZW4O5ZTwvUQvK804b2nFI=", "SRFiw6eGe/U6AO+IV9BmblASS7rZYBeECj/+HGXETxI="),
        ("cO5L/YEwC7fjVz77mqymZls0/6a+avFbPF9NgghHrGM=", "JCr8AJULa4uBDoP24jODbEuL8Z7WCd41XG2/k07YZ00="),
        ("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "L+V9o0fNYkMVKNqsX7spBzD/9oSvxM/C7ZCZX1jLO3Q="),
    ];

    #[test]
    fn public_keys_match_wg_pubkey() {
        for (private, public) in WG_VECTORS {
            assert_eq!(public_key(private).unwrap(), public, "private key {private}");
        }
    }

    #[test]
    fn generated_keys_are_clamped_and_distinct() {
        let a = parse_key("k", &generate_private_key()).unwrap();
        let b = parse_key("k", &generate_private_key()).unwrap();
        assert_ne!(a, b);
        for k in [a, b] {
            assert_eq!(k[0] & 7, 0);
            assert_eq!(k[31] & 0xc0, 0x40);
        }
        assert_eq!(public_key(&generate_private_key()).unwrap().len(), 44);
    }

    #[test]
    fn bad_keys_name_the_field() {
        let cases = [
            ("not base64", "!!!!"),
            ("31 bytes", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="),
            ("33 bytes", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            ("missing padding", "8N4OlJEPOnRQZ63TrwTPzjZW4O5ZTwvUQvK804b2nFI"),
            ("empty", ""),
        ];
        for (name, text) in cases {
            let err = public_key(text).unwrap_err();
            assert_eq!(err.field, "privateKey", "{name}");
            assert!(err.to_string().starts_with("privateKey: "), "{name}: {err}");
        }
        assert!(parse_key("peers[0].publicKey", "AAAA").unwrap_err().message.contains("3 bytes"));
    }

    #[test]
    fn secret_debug_hides_the_bytes() {
        let s = parse_secret("k", WG_VECTORS[0].0).unwrap();
        assert_eq!(format!("{s:?}"), "SecretKey(..)");
    }
}
