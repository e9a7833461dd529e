//! TLS to the coordination database, as the connection string's `sslmode` asks
//! (`genesys_closer::ha::connect`): a server without TLS refuses `require` with an error
//! that names TLS and serves `disable` and `prefer`; a TLS server's certificate is
//! checked against `[ha] ca_file` (`verify-ca`, `verify-full`, `require` with a CA file)
//! or not (`prefer`, `require`).
//!
//! The servers are small terminators on loopback in front of the test PostgreSQL
//! (127.0.0.1:5432, trust authentication, database `test`, or GENESYS_CLOSER_TEST_PG):
//! they answer the client's TLS request ('N', or 'S' and a rustls handshake with a
//! certificate made here) and pass the rest on to the real server in plain text, so
//! every case ends with a real session (`SELECT 1`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use genesys_closer::ha::connect::{Check, Database, connect};
use genesys_closer::journal::PostgresBackend;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use secrecy::SecretString;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// The PostgreSQL protocol's SSLRequest: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// The test PostgreSQL's connection string.
fn pg_url() -> String {
    std::env::var("GENESYS_CLOSER_TEST_PG")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into())
}

/// The test PostgreSQL's address, user and database.
fn upstream() -> (String, String, String) {
    let c: tokio_postgres::Config = pg_url().parse().expect("GENESYS_CLOSER_TEST_PG parses");
    let host = match c.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".into(),
    };
    let port = c.get_ports().first().copied().unwrap_or(5432);
    (
        format!("{host}:{port}"),
        c.get_user().unwrap_or("postgres").to_owned(),
        c.get_dbname().unwrap_or("test").to_owned(),
    )
}

/// A terminator on loopback: `tls` answers a TLS request with a handshake, `None` with
/// 'N' (a server without TLS). `sessions` counts the TLS handshakes that succeeded.
struct Terminator {
    port: u16,
    sessions: Arc<AtomicUsize>,
}

async fn terminator(tls: Option<TlsAcceptor>) -> Terminator {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let sessions = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&sessions);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(serve(client, tls.clone(), Arc::clone(&count)));
        }
    });
    Terminator { port, sessions }
}

async fn serve(mut client: TcpStream, tls: Option<TlsAcceptor>, count: Arc<AtomicUsize>) {
    let mut first = [0u8; 8];
    if client.read_exact(&mut first).await.is_err() {
        return;
    }
    let Ok(mut db) = TcpStream::connect(upstream().0).await else {
        return;
    };
    if first != SSL_REQUEST {
        // No TLS asked (sslmode=disable): the startup message goes on as it is.
        if db.write_all(&first).await.is_ok() {
            let _ = tokio::io::copy_bidirectional(&mut client, &mut db).await;
        }
        return;
    }
    match tls {
        None => {
            if client.write_all(b"N").await.is_ok() {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut db).await;
            }
        }
        Some(acceptor) => {
            if client.write_all(b"S").await.is_err() {
                return;
            }
            let Ok(mut session) = acceptor.accept(client).await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let _ = tokio::io::copy_bidirectional(&mut session, &mut db).await;
        }
    }
}

/// A CA and a server certificate it signed for `names`, as PEM (the CA) and a
/// rustls acceptor (the server).
struct Pki {
    ca_pem: String,
    acceptor: TlsAcceptor,
}

fn pki(names: &[&str]) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
        .expect("CA certificate");
    let key = KeyPair::generate().expect("server key");
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let cert = CertificateParams::new(names)
        .expect("server params")
        .signed_by(&key, &ca)
        .expect("server certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        )
        .expect("server config");
    Pki {
        ca_pem: ca.pem(),
        acceptor: TlsAcceptor::from(Arc::new(config)),
    }
}

/// The connection string to the terminator on `port` as `host`, with `sslmode`.
fn via(host: &str, port: u16, sslmode: &str) -> String {
    let (_, user, db) = upstream();
    format!("host={host} port={port} user={user} dbname={db} sslmode={sslmode}")
}

fn database(url: &str, ca_file: Option<&Path>) -> Database {
    Database::new(
        SecretString::from(url.to_owned()),
        ca_file.map(Path::to_path_buf),
    )
}

/// Connects and runs `SELECT 1`; the error's words otherwise.
async fn session(d: &Database) -> Result<Check, String> {
    let connector = d.connector().map_err(|e| e.to_string())?;
    let (client, conn) = connector.connect().await.map_err(|e| e.to_string())?;
    let task = tokio::spawn(conn);
    let one: i32 = client
        .query_one("SELECT 1", &[])
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    assert_eq!(one, 1);
    drop(client);
    let _ = task.await;
    Ok(connector.check())
}

/// `url` (key=value pairs or a URL) with `sslmode` added.
fn with_sslmode(url: &str, mode: &str) -> String {
    if !url.contains("://") {
        format!("{url} sslmode={mode}")
    } else if url.contains('?') {
        format!("{url}&sslmode={mode}")
    } else {
        format!("{url}?sslmode={mode}")
    }
}

fn ca_file(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, pem).expect("CA file");
    p
}

#[tokio::test]
async fn a_server_without_tls_refuses_require_and_serves_disable_and_prefer() {
    let t = terminator(None).await;
    let host = "127.0.0.1";
    assert_eq!(
        session(&database(&via(host, t.port, "disable"), None)).await,
        Ok(Check::Off)
    );
    assert_eq!(
        session(&database(&via(host, t.port, "prefer"), None)).await,
        Ok(Check::Opportunistic),
        "prefer goes on in plain text when the server offers no TLS"
    );
    let dir = tempfile::tempdir().expect("dir");
    let ca = ca_file(dir.path(), "ca.pem", &pki(&["127.0.0.1"]).ca_pem);
    for (mode, ca) in [
        ("require", None),
        ("require", Some(ca.as_path())),
        ("verify-ca", Some(ca.as_path())),
        ("verify-full", Some(ca.as_path())),
    ] {
        let e = session(&database(&via(host, t.port, mode), ca))
            .await
            .expect_err("TLS required, none offered");
        assert!(
            e.contains("TLS") && e.contains("this server offers none"),
            "{mode}: {e}"
        );
    }
    // The journal's connection says it too. It blocks: a thread of its own, awaited
    // without blocking this runtime, which serves the terminator.
    let url = via(host, t.port, "require");
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(PostgresBackend::connect(&url, "genesys_closer", None).err());
    });
    let e = rx.await.expect("the thread").expect("refused");
    let words = e.to_string();
    assert!(
        words.contains("cannot connect to PostgreSQL")
            && words.contains("server does not support TLS"),
        "{words}"
    );
    assert_eq!(t.sessions.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn tls_checks_the_certificate_as_sslmode_asks() {
    let dir = tempfile::tempdir().expect("dir");
    let good = pki(&["127.0.0.1"]);
    let ca = ca_file(dir.path(), "ca.pem", &good.ca_pem);
    let other_ca = ca_file(dir.path(), "other.pem", &pki(&["127.0.0.1"]).ca_pem);
    let t = terminator(Some(good.acceptor)).await;
    let host = "127.0.0.1";
    let tls_sessions = || t.sessions.load(Ordering::SeqCst);

    let cases: [(&str, Option<&Path>, Check); 5] = [
        ("verify-full", Some(&ca), Check::Full),
        ("verify-ca", Some(&ca), Check::Chain),
        ("require", Some(&ca), Check::Chain),
        ("require", None, Check::Encrypted),
        ("prefer", None, Check::Opportunistic),
    ];
    for (n, (mode, ca, check)) in cases.into_iter().enumerate() {
        assert_eq!(
            session(&database(&via(host, t.port, mode), ca)).await,
            Ok(check),
            "{mode} with {ca:?}"
        );
        assert_eq!(tls_sessions(), n + 1, "{mode}: over TLS");
    }
    // A URL's sslmode too.
    let (_, user, db) = upstream();
    let url = format!(
        "postgres://{user}@{host}:{}/{db}?sslmode=verify-full",
        t.port
    );
    assert_eq!(session(&database(&url, Some(&ca))).await, Ok(Check::Full));
    assert_eq!(tls_sessions(), 6);
    // disable never asks for TLS.
    assert_eq!(
        session(&database(&via(host, t.port, "disable"), None)).await,
        Ok(Check::Off)
    );
    assert_eq!(tls_sessions(), 6);

    // No root vouches for the certificate: the system's do not know this CA, and
    // another CA's file (of the same name, another key) does not help.
    for (mode, ca) in [
        ("verify-full", None),
        ("verify-ca", None),
        ("verify-full", Some(other_ca.as_path())),
        ("require", Some(other_ca.as_path())),
    ] {
        let e = session(&database(&via(host, t.port, mode), ca))
            .await
            .expect_err("an unknown issuer");
        assert!(
            e.contains("TLS")
                && e.contains("invalid peer certificate")
                && e.contains("set [ha] ca_file"),
            "{mode} with {ca:?}: {e}"
        );
    }
    assert_eq!(
        tls_sessions(),
        6,
        "no session without a checked certificate"
    );
}

#[tokio::test]
async fn verify_full_checks_the_host_name_and_verify_ca_does_not() {
    let dir = tempfile::tempdir().expect("dir");
    let elsewhere = pki(&["db.example.com"]);
    let ca = ca_file(dir.path(), "ca.pem", &elsewhere.ca_pem);
    let t = terminator(Some(elsewhere.acceptor)).await;
    let e = session(&database(
        &via("127.0.0.1", t.port, "verify-full"),
        Some(&ca),
    ))
    .await
    .expect_err("the certificate names db.example.com only");
    assert!(
        e.contains("does not name the host") && e.contains("verify-ca"),
        "{e}"
    );
    assert_eq!(
        session(&database(&via("127.0.0.1", t.port, "verify-ca"), Some(&ca))).await,
        Ok(Check::Chain)
    );
    assert_eq!(t.sessions.load(Ordering::SeqCst), 1);
}

/// The test server itself: with TLS on (Debian's clusters have a snakeoil certificate)
/// `require` is served over TLS, `verify-full` refuses its certificate; with TLS off,
/// `require` is refused with an error naming TLS.
#[tokio::test]
async fn the_test_server_as_it_is() {
    let plain = database(&pg_url(), None);
    let (client, conn) = connect(&plain).await.expect("the test PostgreSQL");
    tokio::spawn(conn);
    let ssl: String = client
        .query_one("SHOW ssl", &[])
        .await
        .expect("SHOW ssl")
        .get(0);
    let require = database(&with_sslmode(&pg_url(), "require"), None);
    if ssl == "on" {
        let (client, conn) = connect(&require).await.expect("require over TLS");
        tokio::spawn(conn);
        let over_tls: bool = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .expect("pg_stat_ssl")
            .get(0);
        assert!(over_tls, "sslmode=require: the session is encrypted");
        let full = database(&format!("{} sslmode=verify-full", pg_url()), None);
        let e = connect(&full)
            .await
            .err()
            .expect("a self-signed certificate");
        assert!(e.to_string().contains("TLS"), "{e}");
    } else {
        let e = connect(&require)
            .await
            .err()
            .expect("no TLS on this server");
        assert!(e.to_string().contains("server does not support TLS"), "{e}");
    }
}
