//! The credential check: a call's `Authorization` (bearer, or HTTP Basic with the token
//! as password) compared by digest, in constant time.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};

/// The credential check, holding only digests of what is accepted.
pub(super) struct Credentials {
    bearer: [u8; 32],
    basic: Option<[u8; 32]>,
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Equality whose time does not depend on where the inputs differ: both sides are
/// fixed-size digests, so neither length nor content leaks through timing.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

impl Credentials {
    pub(super) fn new(token: &SecretString, basic_user: Option<&str>) -> Self {
        let t = token.expose_secret();
        Credentials {
            bearer: digest(t.as_bytes()),
            basic: basic_user.map(|u| digest(format!("{u}:{t}").as_bytes())),
        }
    }

    pub(super) fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let Some((scheme, rest)) = value.trim().split_once(' ') else {
            return false;
        };
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            same(&digest(rest.as_bytes()), &self.bearer)
        } else if scheme.eq_ignore_ascii_case("basic") {
            let Some(basic) = &self.basic else {
                return false;
            };
            match base64::engine::general_purpose::STANDARD.decode(rest) {
                Ok(raw) => same(&digest(&raw), basic),
                Err(_) => false,
            }
        } else {
            false
        }
    }
}
