//! The connection string's `sslmode` as this module reads it, the CA file, and the
//! parse errors that never show the string. Connecting (TLS refused, TLS through a
//! terminator with certificates) is tested in `tests/ha_tls.rs`.

use super::*;

fn check_of(url: &str) -> Result<Check, HaError> {
    Database::from(url).connector().map(|c| c.check())
}

#[test]
fn verify_modes_become_require_for_the_driver_and_nothing_else_changes() {
    let cases: &[(&str, &str, Option<Check>)] = &[
        (
            "host=db sslmode=verify-full user=u",
            "host=db sslmode=require user=u",
            Some(Check::Full),
        ),
        (
            "host=db sslmode = 'verify-ca' password='a b\\' sslmode=x'",
            "host=db sslmode = require password='a b\\' sslmode=x'",
            Some(Check::Chain),
        ),
        // The last one wins, as in the driver.
        (
            "sslmode=verify-full host=db sslmode=disable",
            "sslmode=verify-full host=db sslmode=disable",
            None,
        ),
        (
            "sslmode=disable sslmode=verify-ca",
            "sslmode=disable sslmode=require",
            Some(Check::Chain),
        ),
        (
            "postgres://u:p%3Fw@db:5432/gc?sslmode=verify-full&application_name=x",
            "postgres://u:p%3Fw@db:5432/gc?sslmode=require&application_name=x",
            Some(Check::Full),
        ),
        // A `?` and `sslmode=` inside the credentials are not the query.
        (
            "postgresql://u:sslmode=verify-ca?@db/gc?ssl%6Dode=verify%2Dca",
            "postgresql://u:sslmode=verify-ca?@db/gc?ssl%6Dode=require",
            Some(Check::Chain),
        ),
        ("postgres://db/gc", "postgres://db/gc", None),
        ("host=db user=u", "host=db user=u", None),
        ("host=db sslmode=require", "host=db sslmode=require", None),
        ("", "", None),
        // Cut short: left as it is for the driver to refuse.
        (
            "host=db sslmode='verify-full",
            "host=db sslmode='verify-full",
            None,
        ),
        ("host=db sslmode", "host=db sslmode", None),
    ];
    for (url, want, check) in cases {
        let (text, got) = split_verify(url);
        assert_eq!((text.as_ref(), got), (*want, *check), "{url}");
    }
}

#[test]
fn sslmode_and_ca_file_decide_what_is_checked() {
    assert_eq!(check_of("host=db").unwrap(), Check::Opportunistic);
    assert_eq!(check_of("host=db sslmode=disable").unwrap(), Check::Off);
    assert_eq!(
        check_of("host=db sslmode=prefer").unwrap(),
        Check::Opportunistic
    );
    assert_eq!(
        check_of("host=db sslmode=require").unwrap(),
        Check::Encrypted
    );
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let cert = rcgen::generate_simple_self_signed(vec!["db".to_string()]).unwrap();
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    let with_ca = |url: &str| {
        Database::new(SecretString::from(url.to_owned()), Some(ca.clone()))
            .connector()
            .map(|c| c.check())
    };
    // libpq's reading: `require` with a root file checks the chain.
    assert_eq!(with_ca("host=db sslmode=require").unwrap(), Check::Chain);
    assert_eq!(with_ca("host=db sslmode=verify-ca").unwrap(), Check::Chain);
    assert_eq!(with_ca("host=db sslmode=verify-full").unwrap(), Check::Full);
    assert_eq!(
        with_ca("host=db sslmode=prefer").unwrap(),
        Check::Opportunistic
    );
    assert_eq!(
        with_ca("postgres://db/gc?sslmode=verify-full").unwrap(),
        Check::Full
    );
}

#[test]
fn a_ca_file_that_cannot_be_used_is_named_with_why() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let key = rcgen::KeyPair::generate().unwrap();
    let cases = [
        (dir.path().join("absent.pem"), "No such file"),
        (path("empty.pem", ""), "holds no PEM certificate"),
        (
            path("key.pem", &key.serialize_pem()),
            "holds no PEM certificate",
        ),
        (
            path(
                "garbage.pem",
                "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
            ),
            "ca_file",
        ),
        (
            path(
                "not-a-cert.pem",
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            ),
            "cannot be a root",
        ),
    ];
    for (file, want) in cases {
        let e = Database::new(
            SecretString::from("host=db sslmode=verify-full".to_owned()),
            Some(file.clone()),
        )
        .connector()
        .err()
        .unwrap_or_else(|| panic!("{} was taken", file.display()));
        let words = e.to_string();
        assert!(
            words.starts_with("[ha] ca_file ") && words.contains(&*file.display().to_string()),
            "{words}"
        );
        assert!(words.contains(want), "{file:?}: want {want:?} in {words}");
        // The same file refused whatever sslmode says: `check` says it before it matters.
        assert!(
            Database::new(SecretString::from("host=db".to_owned()), Some(file))
                .connector()
                .is_err()
        );
    }
}

#[test]
fn parse_errors_name_the_option_never_the_string() {
    let secret = "s3cret-pw";
    for (url, want) in [
        (
            format!("host=db password={secret} sslmode=allow"),
            "invalid value for option `sslmode` (disable, prefer, require, verify-ca or verify-full)",
        ),
        (
            format!("host=db password={secret} nosuch=1"),
            "unknown option `nosuch`",
        ),
        (
            format!("host=db password='{secret}"),
            "not a PostgreSQL connection string",
        ),
        (
            format!("postgresql://u:{secret}@db/gc?x=%zz"),
            "unknown option `x`",
        ),
        (
            format!("postgresql://u:{secret}@db/gc?application_name=%ff"),
            "not a PostgreSQL connection string",
        ),
    ] {
        let words = match Database::from(url.as_str()).connector() {
            Err(e) => e.to_string(),
            Ok(_) => continue,
        };
        assert!(!words.contains(secret), "{words}");
        assert!(words.contains(want), "{url}: want {want:?} in {words}");
        let e = database_url(&HaConfig {
            database_url: DatabaseUrl::Inline(url.clone()),
            schema: "s".into(),
            lease_name: "l".into(),
            instance: "i".into(),
            lease_ttl: std::time::Duration::from_secs(10),
            renew_every: std::time::Duration::from_secs(2),
            instances: 2,
            ca_file: None,
        })
        .expect_err("refused at start too");
        assert!(!e.contains(secret) && e.contains(want), "{e}");
    }
    assert_eq!(
        describe(&SecretString::from(
            "host=db port=6432 dbname=gc sslmode=verify-full password=x".to_owned()
        )),
        "db port 6432 database gc"
    );
}
