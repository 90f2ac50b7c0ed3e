//! Lower-case hex, the text form of content digests (`sha256:<hex>` in the
//! API and on disk, file digests in the state store, source revisions). A
//! leaf: pure functions over bytes, used by every stage that names a digest.

/// Lower-case hex of bytes.
#[must_use]
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// The 32 bytes of 64 hex digits (either case); `None` for anything else.
#[must_use]
pub fn decode32(text: &str) -> Option<[u8; 32]> {
    let digits = text.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

fn nibble(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_round_trip_through_hex() {
        let bytes: [u8; 32] = std::array::from_fn(|i| u8::try_from(i * 8).expect("small"));
        let text = encode(&bytes);
        assert_eq!(text.len(), 64);
        assert_eq!(&text[..6], "000810");
        assert_eq!(decode32(&text), Some(bytes));
        assert_eq!(decode32(&text.to_ascii_uppercase()), Some(bytes));
    }

    #[test]
    fn anything_but_64_hex_digits_is_refused() {
        assert_eq!(decode32(""), None);
        assert_eq!(decode32(&"0".repeat(63)), None);
        assert_eq!(decode32(&"0".repeat(65)), None);
        assert_eq!(decode32(&format!("+f{}", "0".repeat(62))), None);
        assert_eq!(decode32(&format!("zz{}", "0".repeat(62))), None);
        assert_eq!(decode32(&"é".repeat(32)), None);
    }
}
