//! Record framing: pure functions that encode one record and decode one from a byte slice.
//!
//! Layout (little endian), 16-byte header then payload:
//!
//! ```text
//! offset 0  u32  payload length (<= MAX_PAYLOAD)
//! offset 4  u32  CRC32 (crc32fast) over bytes 0..4, 8..16 and the payload
//! offset 8  u64  log sequence number (LSN)
//! offset 16 ..   payload
//! ```
//!
//! The decoder never trusts the length beyond the bytes present and never panics.

/// Size of the record header in bytes.
pub const HEADER_LEN: usize = 16;
/// Largest payload a record may carry (64 MiB). Larger lengths are treated as corruption.
pub const MAX_PAYLOAD: usize = 64 << 20;

/// One decoded record, borrowing its payload from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub lsn: u64,
    pub payload: &'a [u8],
}

/// Why a record could not be decoded at some offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated record: {available} bytes present, {needed} needed")]
    Truncated { needed: usize, available: usize },
    #[error("record length {0} exceeds the maximum {MAX_PAYLOAD}")]
    TooLarge(u64),
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadChecksum { stored: u32, computed: u32 },
}

fn checksum(len_bytes: &[u8], lsn_bytes: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(len_bytes);
    h.update(lsn_bytes);
    h.update(payload);
    h.finalize()
}

/// Append the encoded record to `out`. Panics never; callers check `payload.len() <= MAX_PAYLOAD`.
pub fn encode_record(out: &mut Vec<u8>, lsn: u64, payload: &[u8]) {
    let len = (payload.len() as u32).to_le_bytes();
    let lsn_b = lsn.to_le_bytes();
    let crc = checksum(&len, &lsn_b, payload);
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&lsn_b);
    out.extend_from_slice(payload);
}

/// Decode the record at the start of `buf`; returns it and the number of bytes it occupies.
pub fn decode_record(buf: &[u8]) -> Result<(Record<'_>, usize), DecodeError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Err(DecodeError::Truncated { needed: HEADER_LEN, available: buf.len() });
    };
    let (len_b, rest) = header.split_at(4);
    let (crc_b, lsn_b) = rest.split_at(4);
    let len = u32::from_le_bytes(to4(len_b)) as usize;
    if len > MAX_PAYLOAD {
        return Err(DecodeError::TooLarge(len as u64));
    }
    let total = HEADER_LEN + len;
    let Some(payload) = buf.get(HEADER_LEN..total) else {
        return Err(DecodeError::Truncated { needed: total, available: buf.len() });
    };
    let stored = u32::from_le_bytes(to4(crc_b));
    let computed = checksum(len_b, lsn_b, payload);
    if stored != computed {
        return Err(DecodeError::BadChecksum { stored, computed });
    }
    let lsn = u64::from_le_bytes(to8(lsn_b));
    Ok((Record { lsn, payload }, total))
}

fn to4(b: &[u8]) -> [u8; 4] {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    a
}

fn to8(b: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    a
}

/// Decode records from `buf` in order until the end or the first bad record.
/// Returns the records and, if it stopped early, the offset and reason.
pub fn decode_all(buf: &[u8]) -> (Vec<Record<'_>>, Option<(usize, DecodeError)>) {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        match decode_record(&buf[pos..]) {
            Ok((rec, used)) => {
                out.push(rec);
                pos += used;
            }
            Err(e) => return (out, Some((pos, e))),
        }
    }
    (out, None)
}

/// The fuzz target's body (also run over the seed corpus by the tests): decode everything,
/// and check that whatever decoded re-encodes to the same bytes.
pub fn fuzz_decode(data: &[u8]) {
    let (records, stop) = decode_all(data);
    let mut again = Vec::new();
    for r in &records {
        encode_record(&mut again, r.lsn, r.payload);
    }
    let end = stop.map_or(data.len(), |(pos, _)| pos);
    assert_eq!(&again[..], &data[..end], "decoded records must re-encode to the same bytes");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn roundtrip(records in proptest::collection::vec((any::<u64>(), proptest::collection::vec(any::<u8>(), 0..300)), 0..20)) {
            let mut buf = Vec::new();
            for (lsn, p) in &records { encode_record(&mut buf, *lsn, p); }
            let (got, err) = decode_all(&buf);
            prop_assert!(err.is_none());
            prop_assert_eq!(got.len(), records.len());
            for (g, (lsn, p)) in got.iter().zip(&records) {
                prop_assert_eq!(g.lsn, *lsn);
                prop_assert_eq!(g.payload, &p[..]);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let _ = decode_all(&bytes);
        }

        #[test]
        fn bit_flip_is_detected(payload in proptest::collection::vec(any::<u8>(), 1..200), bit in 0usize..10_000) {
            let mut buf = Vec::new();
            encode_record(&mut buf, 7, &payload);
            let bit = bit % (buf.len() * 8);
            buf[bit / 8] ^= 1 << (bit % 8);
            // A flipped bit anywhere must never decode into a different record.
            if let Ok((rec, _)) = decode_record(&buf) {
                prop_assert!(false, "corruption accepted: {:?}", rec);
            }
        }
    }

    #[test]
    fn truncation_reports_needed_bytes() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 1, b"hello");
        assert_eq!(decode_record(&buf[..10]), Err(DecodeError::Truncated { needed: 16, available: 10 }));
        assert_eq!(decode_record(&buf[..18]), Err(DecodeError::Truncated { needed: 21, available: 18 }));
    }

    #[test]
    fn huge_length_is_rejected_not_allocated() {
        let mut buf = vec![0xff, 0xff, 0xff, 0xff];
        buf.extend_from_slice(&[0u8; 12]);
        assert_eq!(decode_record(&buf), Err(DecodeError::TooLarge(u32::MAX as u64)));
    }
}
