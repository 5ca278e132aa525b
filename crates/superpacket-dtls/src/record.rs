//! The DTLS 1.2 record header (RFC 6347 §4.1) and the AEAD additional data built from it
//! (RFC 5246 §6.2.3.3 with RFC 6347 §4.1.2.1).
//!
//! ```text
//! record = type (1) ‖ version (2) ‖ epoch (2) ‖ sequence_number (6) ‖ length (2) ‖ fragment (length)
//! aad    = epoch ‖ sequence_number (8) ‖ type (1) ‖ version (2) ‖ plaintext length (2)
//! ```
//! All integers are big-endian. Epoch and sequence number travel together as one 64-bit value,
//! `epoch << 48 | sequence_number`, which is also what the nonces are built from.

/// Bytes of the record header.
pub const RECORD_HEADER_LEN: usize = 13;
/// The record type this framer sends and accepts: application_data.
pub const CONTENT_TYPE_APPLICATION_DATA: u8 = 23;
/// DTLS 1.2 on the wire (the one's complement of 1.2, as RFC 6347 §4.1 defines it).
pub const DTLS_1_2_VERSION: u16 = 0xFEFD;
/// Sequence numbers of one epoch are below this: they are 48 bits on the wire.
pub const SEQUENCE_LIMIT: u64 = 1 << 48;
/// Bytes of the additional data.
pub const AAD_LEN: usize = 13;

/// `epoch ‖ sequence_number` as one big-endian 64-bit value.
pub fn epoch_and_sequence(epoch: u16, sequence: u64) -> u64 {
    (u64::from(epoch) << 48) | (sequence & (SEQUENCE_LIMIT - 1))
}

/// Writes a header for a fragment of `fragment_len` bytes into `out` (exactly [`RECORD_HEADER_LEN`] bytes).
pub fn write_header(out: &mut [u8; RECORD_HEADER_LEN], epoch_seq: u64, fragment_len: u16) {
    out[0] = CONTENT_TYPE_APPLICATION_DATA;
    out[1..3].copy_from_slice(&DTLS_1_2_VERSION.to_be_bytes());
    out[3..11].copy_from_slice(&epoch_seq.to_be_bytes());
    out[11..13].copy_from_slice(&fragment_len.to_be_bytes());
}

/// The fields of a record header that vary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// `epoch << 48 | sequence_number`.
    pub epoch_seq: u64,
    /// The fragment length the header announces.
    pub fragment_len: usize,
}

impl RecordHeader {
    /// The epoch.
    pub fn epoch(&self) -> u16 {
        (self.epoch_seq >> 48) as u16
    }

    /// The sequence number within the epoch.
    pub fn sequence(&self) -> u64 {
        self.epoch_seq & (SEQUENCE_LIMIT - 1)
    }
}

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer bytes than a header.
    TooShort,
    /// Not an application_data record of DTLS 1.2.
    WrongTypeOrVersion,
}

/// Reads the header at the start of `record`, checking type and version.
pub fn parse_header(record: &[u8]) -> Result<RecordHeader, HeaderError> {
    let header: &[u8; RECORD_HEADER_LEN] =
        record.get(..RECORD_HEADER_LEN).and_then(|h| h.try_into().ok()).ok_or(HeaderError::TooShort)?;
    if header[0] != CONTENT_TYPE_APPLICATION_DATA || header[1..3] != DTLS_1_2_VERSION.to_be_bytes() {
        return Err(HeaderError::WrongTypeOrVersion);
    }
    let mut epoch_seq = [0u8; 8];
    epoch_seq.copy_from_slice(&header[3..11]);
    Ok(RecordHeader {
        epoch_seq: u64::from_be_bytes(epoch_seq),
        fragment_len: usize::from(u16::from_be_bytes([header[11], header[12]])),
    })
}

/// The additional data for a record with this epoch and sequence number and `plaintext_len` bytes of
/// plaintext.
pub fn additional_data(epoch_seq: u64, plaintext_len: u16) -> [u8; AAD_LEN] {
    let mut aad = [0u8; AAD_LEN];
    aad[..8].copy_from_slice(&epoch_seq.to_be_bytes());
    aad[8] = CONTENT_TYPE_APPLICATION_DATA;
    aad[9..11].copy_from_slice(&DTLS_1_2_VERSION.to_be_bytes());
    aad[11..13].copy_from_slice(&plaintext_len.to_be_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_checks_type_and_version() {
        let mut h = [0u8; RECORD_HEADER_LEN];
        let es = epoch_and_sequence(0x0102, 0x0304_0506_0708);
        write_header(&mut h, es, 0x090a);
        assert_eq!(h, [23, 0xfe, 0xfd, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        let parsed = parse_header(&h).unwrap();
        assert_eq!((parsed.epoch(), parsed.sequence(), parsed.fragment_len), (0x0102, 0x0304_0506_0708, 0x090a));
        assert_eq!(parse_header(&h[..12]), Err(HeaderError::TooShort));
        let mut wrong = h;
        wrong[0] = 22;
        assert_eq!(parse_header(&wrong), Err(HeaderError::WrongTypeOrVersion));
        let mut wrong = h;
        wrong[2] = 0xff;
        assert_eq!(parse_header(&wrong), Err(HeaderError::WrongTypeOrVersion));
    }

    #[test]
    fn additional_data_is_epoch_seq_type_version_length() {
        let aad = additional_data(epoch_and_sequence(7, 9), 1400);
        assert_eq!(aad, [0, 7, 0, 0, 0, 0, 0, 9, 23, 0xfe, 0xfd, 0x05, 0x78]);
    }
}
