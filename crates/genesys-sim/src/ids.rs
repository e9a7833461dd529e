//! Identifier and timestamp text in the shapes Genesys uses on the wire.

use std::time::SystemTime;

/// A lowercase UUID v4 (8-4-4-4-12 hex), the shape of every Genesys entity id.
pub(crate) fn uuid_v4() -> String {
    uuid_v4_from(fastrand::u128(..))
}

/// [`uuid_v4`] made of the given random bits (for seeded, repeatable ids).
pub fn uuid_v4_from(random: u128) -> String {
    let mut n = random;
    // Version 4 in the high nibble of byte 6, RFC 4122 variant (10xx) in byte 8,
    // so strict UUID parsers in the daemon accept the ids.
    n &= !(0xF_u128 << 76);
    n |= 0x4_u128 << 76;
    n &= !(0x3_u128 << 62);
    n |= 0x2_u128 << 62;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        n >> 96,
        (n >> 80) & 0xffff,
        (n >> 64) & 0xffff,
        (n >> 48) & 0xffff,
        n & 0xffff_ffff_ffff
    )
}

/// 32 lowercase hex characters: the shape of message ids in conversation events.
pub(crate) fn hex32() -> String {
    format!("{:032x}", fastrand::u128(..))
}

/// RFC 3339 UTC with milliseconds and `Z`, as in every Genesys timestamp.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_has_version_and_variant() {
        for _ in 0..100 {
            let u = uuid_v4();
            assert_eq!(u.len(), 36);
            assert_eq!(&u[14..15], "4");
            assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
            assert!(
                u.chars()
                    .all(|c| c == '-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            );
        }
    }

    #[test]
    fn timestamps_have_millis_and_z() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_795_510_000_123);
        assert_eq!(rfc3339(t), "2026-11-24T08:46:40.123Z");
    }
}
