//! The one UUID reader: every Genesys entity id (conversation, queue, flow, OAuth
//! client) is a UUID in its 8-4-4-4-12 hex form.
//!
//! Whoever checks an id asks [`is_uuid`]; the state map keeps the canonical (lowercase)
//! form as its 128 bits ([`canonical_bits`]) and gives the text back with [`uuid_text`].
//! Nothing here imports the rest of the crate.

/// A hex digit's value for every byte; [`NOT_HEX`] for any other byte. `upper`: whether
/// `A`-`F` count as digits.
const fn hex_table(upper: bool) -> [u8; 256] {
    let mut t = [NOT_HEX; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        if upper {
            t[b'A' as usize + i] = 10 + i as u8;
        }
        i += 1;
    }
    t
}

/// Marks a byte that is no digit; any value at or above 0x10 would do.
const NOT_HEX: u8 = 0xff;
/// Digits of the canonical form: lowercase only.
const LOWER: [u8; 256] = hex_table(false);
/// Digits as Genesys and operators may write them: either case.
const EITHER_CASE: [u8; 256] = hex_table(true);

/// Reads a 36-character UUID with hyphens at 8, 13, 18 and 23 and a digit of `digits`
/// everywhere else, into its 128 bits.
fn read(s: &str, digits: &[u8; 256]) -> Option<u128> {
    let b = s.as_bytes();
    if b.len() != 36 || b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
        return None;
    }
    let mut v: u128 = 0;
    let mut bad = 0u8;
    for (i, &c) in b.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            continue;
        }
        let d = digits[usize::from(c)];
        bad |= d;
        v = (v << 4) | u128::from(d & 0xf);
    }
    // Any byte that is not a digit sets the high bits.
    (bad < 0x10).then_some(v)
}

/// Whether `s` is a UUID in the 8-4-4-4-12 hex form Genesys ids take, in either case.
pub fn is_uuid(s: &str) -> bool {
    read(s, &EITHER_CASE).is_some()
}

/// The 128 bits of a canonical UUID (36 characters, lowercase hex, hyphens at 8, 13, 18
/// and 23): the only form worth keeping in binary, because [`uuid_text`] gives exactly
/// that text back. `None` for any other text, an uppercase UUID included.
pub fn canonical_bits(s: &str) -> Option<u128> {
    read(s, &LOWER)
}

/// A 128-bit UUID as canonical text: 8-4-4-4-12 lowercase hex digits.
pub fn uuid_text(v: u128) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        v >> 96,
        (v >> 80) & 0xffff,
        (v >> 64) & 0xffff,
        (v >> 48) & 0xffff,
        v & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOWER_ID: &str = "5d2b8c1e-9a47-4f3e-b6d0-7e1c2a9f4b38";
    const UPPER_ID: &str = "5D2B8C1E-9A47-4F3E-B6D0-7E1C2A9F4B38";

    #[test]
    fn either_case_is_a_uuid() {
        assert!(is_uuid(LOWER_ID));
        assert!(is_uuid(UPPER_ID));
        assert!(is_uuid("5d2B8c1E-9a47-4F3e-b6D0-7e1C2a9F4b38"));
        assert!(is_uuid("00000000-0000-0000-0000-000000000000"));
        assert!(is_uuid("ffffffff-ffff-ffff-ffff-ffffffffffff"));
    }

    #[test]
    fn wrong_lengths_are_not() {
        for s in [
            "",
            "5d2b8c1e-9a47-4f3e-b6d0-7e1c2a9f4b3",
            "5d2b8c1e-9a47-4f3e-b6d0-7e1c2a9f4b381",
            "5d2b8c1e9a474f3eb6d07e1c2a9f4b38",
            "{5d2b8c1e-9a47-4f3e-b6d0-7e1c2a9f4b38}",
            " 5d2b8c1e-9a47-4f3e-b6d0-7e1c2a9f4b38",
        ] {
            assert!(!is_uuid(s), "{s:?}");
            assert_eq!(canonical_bits(s), None, "{s:?}");
        }
    }

    #[test]
    fn misplaced_dashes_are_not() {
        for s in [
            "5d2b8c1e99a47-4f3e-b6d0-7e1c2a9f4b38",
            "5d2b8c1-e9a47-4f3e-b6d0-7e1c2a9f4b38",
            "5d2b8c1e-9a474-f3e-b6d0-7e1c2a9f4b38",
            "5d2b8c1e-9a47-4f3e-b6d07-e1c2a9f4b38",
            "5d2b8c1e-9a47-4f3e-b6d0-7e1c-2a9f4b3",
            "5d2b8c1e-9a47-4f3e-b6d0-7e1c2a9f4b-8",
            "5d2b8c1e-9a47-4f3e-b6d0--e1c2a9f4b38",
        ] {
            assert!(!is_uuid(s), "{s:?}");
        }
    }

    #[test]
    fn other_characters_are_not() {
        for s in [
            "5d2b8c1e-9a47-4f3e-b6d0-7e1c2a9f4b3g",
            "5d2b8c1e-9a47-4f3e-b6d0-7e1c2a9f4bé",
            "5d2b8c1e-9a47-4f3e-b6d0-7e1c2a9f4b3 ",
            "5d2b8c1e_9a47_4f3e_b6d0_7e1c2a9f4b38",
            "../../etc/passwd",
        ] {
            assert!(!is_uuid(s), "{s:?}");
        }
    }

    #[test]
    fn canonical_bits_are_lowercase_only_and_round_trip() {
        assert_eq!(
            canonical_bits(LOWER_ID),
            Some(0x5d2b8c1e_9a47_4f3e_b6d0_7e1c2a9f4b38)
        );
        assert_eq!(
            canonical_bits(UPPER_ID),
            None,
            "the text would not come back"
        );
        assert_eq!(uuid_text(canonical_bits(LOWER_ID).unwrap()), LOWER_ID);
        assert_eq!(uuid_text(0), "00000000-0000-0000-0000-000000000000");
        assert_eq!(uuid_text(u128::MAX), "ffffffff-ffff-ffff-ffff-ffffffffffff");
    }
}
