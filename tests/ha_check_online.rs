//! `check --online` with `[ha]`: besides Genesys (the simulator on loopback), it connects
//! to the coordination database (the test PostgreSQL on 127.0.0.1:5432, or
//! GENESYS_CLOSER_TEST_PG), says its version, how TLS checks it and where the schema's
//! migrations stand against this binary's, changes nothing, and fails with a clear line
//! when the database cannot be reached or is newer than the binary.

mod common;

use std::process::Output;

use common::*;
use genesys_sim::SimConfig;

fn pg_url() -> String {
    std::env::var("GENESYS_CLOSER_TEST_PG")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into())
}

/// `check --online` on a config for the simulator at `sim` with `[ha]` on `database_url`
/// and `schema`; the binary runs on a blocking thread (the simulator answers it here).
async fn check_online(sim: &str, database_url: &str, schema: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[genesys]
api_url = "{sim}"
login_url = "{sim}"
client_id = "5e1f0c1e-51a0-4c1e-8e57-0000000c11e7"

[stream]
queues = ["{QUEUE}"]

[daemon]
state_dir = "{state}"

[ha]
database_url = "{database_url}"
schema = "{schema}"
instance = "check"

[[rule]]
name = "goodbye"
intents = ["Goodbye"]
"#,
            state = dir.path().join("state").display()
        ),
    )
    .expect("config");
    let out: Output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_genesys-closer"))
            .args(["check", "--online", "--config"])
            .arg(&path)
            .env("GENESYSCLOUD_OAUTHCLIENT_SECRET", "sim-secret")
            .output()
            .expect("binary runs")
    })
    .await
    .expect("join");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_reads_the_coordination_database_and_changes_nothing() {
    let sim = start_sim(SimConfig::default()).await;
    let url = sim.base_url();
    let (db, conn) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls)
        .await
        .expect("the test PostgreSQL on 127.0.0.1:5432 (bash .ci/run starts one)");
    tokio::spawn(conn);
    let schema = format!("t_check_online_{}", std::process::id());
    let drop_schema = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
    db.batch_execute(&drop_schema).await.expect("clean");
    let latest = genesys_closer::ha::schema::latest();
    let exists = async || {
        !db.query(
            "SELECT 1 FROM pg_namespace WHERE nspname = $1",
            &[&schema.as_str()],
        )
        .await
        .expect("pg_namespace")
        .is_empty()
    };

    // No instance has started yet: the schema is absent, and still absent after.
    let (code, out) = check_online(&url, &pg_url(), &schema).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("online: OK"), "Genesys's half: {out}");
    assert!(
        out.contains(&format!(
            "coordination database (127.0.0.1 port 5432 database test, schema {schema}):\n  \
             server: PostgreSQL 1"
        )),
        "{out}"
    );
    assert!(out.contains("(sslmode=prefer)"), "{out}");
    assert!(
        out.contains(&format!(
            "schema {schema}: absent; the first instance to start creates it (migration {latest})"
        )),
        "{out}"
    );
    assert!(out.ends_with("database: OK\n"), "{out}");
    assert!(!exists().await, "check created nothing");

    // Migrated, as by an instance's start.
    let mut migrating = {
        let (c, conn) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls)
            .await
            .expect("a session");
        tokio::spawn(conn);
        c
    };
    genesys_closer::ha::schema::migrate(&mut migrating, &schema)
        .await
        .expect("migrations");
    let (code, out) = check_online(&url, &pg_url(), &schema).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!(
            "schema {schema}: at migration {latest}, as this binary"
        )),
        "{out}"
    );

    // A newer binary migrated it: `run` would refuse, so `check --online` fails.
    db.batch_execute(&format!(
        "INSERT INTO {schema}.migrations (version) VALUES ({})",
        latest + 1
    ))
    .await
    .expect("a newer version");
    let (code, out) = check_online(&url, &pg_url(), &schema).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "error: schema {schema} is at migration {}, newer than this binary's {latest}",
            latest + 1
        )),
        "{out}"
    );
    assert!(out.contains("database: PROBLEMS"), "{out}");

    // Nothing listens on port 1: one error line naming where, never the password.
    let (code, out) = check_online(
        &url,
        "host=127.0.0.1 port=1 user=postgres password=s3cret-pw dbname=nowhere",
        &schema,
    )
    .await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(
            "coordination database (127.0.0.1 port 1 database nowhere, schema t_check_online_"
        ) && out.contains("  error: coordination database: error connecting to server")
            && out.contains("database: CANNOT CONNECT"),
        "{out}"
    );
    assert!(
        out.contains("online: OK"),
        "Genesys's half still said: {out}"
    );
    assert!(!out.contains("s3cret-pw"), "{out}");

    db.batch_execute(&drop_schema).await.expect("clean");
    sim.shutdown().await;
}
