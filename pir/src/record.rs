//! The bytes of a looked-up record: the owner's record columns, in the
//! order its published record schema lists them, each as a little-endian
//! u16 length and the UTF-8 text, or `0xffff` for a null. What the
//! requester decodes comes from the owner's table, so the decoder checks
//! every length against the bytes left before it copies anything.

use crate::PirError;

/// Marks a null.
const NULL: u16 = u16::MAX;

/// A record's bytes (a text longer than 65,534 bytes is cut there; a
/// record that large never fits a slot, which the owner refuses first).
pub fn encode(values: &[Option<String>]) -> Vec<u8> {
    let mut out = Vec::new();
    for value in values {
        match value {
            None => out.extend(NULL.to_le_bytes()),
            Some(text) => {
                let len = u16::try_from(text.len()).unwrap_or(NULL - 1).min(NULL - 1);
                out.extend(len.to_le_bytes());
                out.extend(&text.as_bytes()[..usize::from(len)]);
            }
        }
    }
    out
}

/// The inverse of [`encode`] for `columns` columns: refuses trailing or
/// missing bytes, a length beyond the bytes and text that is not UTF-8.
pub fn decode(bytes: &[u8], columns: usize) -> Result<Vec<Option<String>>, PirError> {
    let malformed = || PirError::Refused("a decoded record is malformed (the owner's data or the hint is corrupt)");
    let mut rest = bytes;
    // At most one column per two bytes, whatever `columns` claims.
    let mut out = Vec::with_capacity(columns.min(bytes.len() / 2));
    for _ in 0..columns {
        let (len, tail) = rest.split_first_chunk::<2>().ok_or_else(malformed)?;
        let len = u16::from_le_bytes(*len);
        if len == NULL {
            out.push(None);
            rest = tail;
            continue;
        }
        let len = usize::from(len);
        if tail.len() < len {
            return Err(malformed());
        }
        out.push(Some(String::from_utf8(tail[..len].to_vec()).map_err(|_| malformed())?));
        rest = &tail[len..];
    }
    if !rest.is_empty() {
        return Err(malformed());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_with_nulls_and_refuse_garbage() {
        let values = vec![Some("ST-0042".to_owned()), None, Some(String::new()), Some("Ωcean, \"deep\"".to_owned())];
        let bytes = encode(&values);
        assert_eq!(decode(&bytes, 4).unwrap(), values);
        assert!(decode(&bytes, 3).is_err(), "trailing bytes");
        assert!(decode(&bytes, 5).is_err(), "a missing column");
        assert!(decode(&[5, 0, b'a'], 1).is_err(), "a length beyond the bytes");
        assert!(decode(&[2, 0, 0xff, 0xfe], 1).is_err(), "not UTF-8");
        assert!(decode(&[], usize::MAX).is_err(), "a huge column count allocates nothing");
    }

    #[test]
    fn the_encoding_has_a_known_answer() {
        assert_eq!(encode(&[Some("ab".into()), None]), [0x02, 0x00, b'a', b'b', 0xff, 0xff]);
    }
}
