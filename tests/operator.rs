//! What an operator meets first, tried on the real binary: the log level as people write
//! it, the fatal line of a refused credential, network failures told apart, `check` on
//! the client secret, the journald prefix only when stderr is the journal, and a stop
//! during the start-up login. Every peer is a small server on loopback that the test
//! starts itself.

#[path = "common/ids.rs"]
mod ids;

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ids::QUEUE;

const BIN: &str = env!("CARGO_BIN_EXE_genesys-closer");

/// How a test peer answers each request.
#[derive(Clone, Copy)]
enum Peer {
    /// `401 {"error":"invalid_client"}`, as the login service answers a wrong secret.
    RefuseLogin,
    /// Accepts the connection and never answers.
    Silent,
    /// A plain-HTTP server's `400` to whatever it is sent (for https pointed at it).
    PlainHttp,
}

/// A loopback server on its own threads; `accepted` counts connections.
struct Server {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

fn serve(peer: Peer) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            count.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || answer(&mut conn, peer));
        }
    });
    Server { port, accepted }
}

fn answer(conn: &mut TcpStream, peer: Peer) {
    if matches!(peer, Peer::Silent) {
        // Hold the connection open, say nothing; the client gives up on its own.
        let mut sink = [0u8; 1024];
        while conn.read(&mut sink).is_ok_and(|n| n > 0) {}
        return;
    }
    if matches!(peer, Peer::PlainHttp) {
        // Whatever came (a TLS hello), a plain-http server answers it with a 400.
        let mut first = [0u8; 1024];
        let _ = conn.read(&mut first);
        let _ = conn.write_all(
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        );
        return;
    }
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    if read_request(conn).is_none() {
        return;
    }
    let (status, body) = match peer {
        Peer::RefuseLogin => (
            "401 Unauthorized",
            r#"{"error":"invalid_client","description":"client authentication failed"}"#,
        ),
        _ => ("404 Not Found", "{}"),
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Reads one request (its head, then the body its `content-length` announces); the
/// head in lower case, or `None` if the connection ended first.
fn read_request(conn: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let length = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    let _ = conn.read_exact(&mut body);
    Some(text)
}

/// A config pointing both URLs at `url`, with `extra` appended to `[genesys]` and
/// `log` as the `[log]` section's body.
fn config_text(url: &str, genesys_extra: &str, log: &str, state: &Path) -> String {
    format!(
        r#"
[genesys]
api_url = "{url}"
login_url = "{url}"
client_id = "0c1e0c1e-0000-4000-8000-0000000000ab"
{genesys_extra}

[stream]
queues = ["{QUEUE}"]

[daemon]
state_dir = "{state}"

[log]
format = "json"
{log}

[[rule]]
name = "goodbye"
intents = ["Goodbye"]
"#,
        state = state.display()
    )
}

/// Runs the binary with `args --config <file holding text>` and the secret in the
/// environment unless `secret` is `None`.
fn run_with(args: &[&str], text: &str, secret: Option<&str>, env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).expect("config");
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .arg("--config")
        .arg(&path)
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("GENESYSCLOUD_OAUTHCLIENT_SECRET")
        .stdin(Stdio::null());
    if let Some(s) = secret {
        cmd.env("GENESYSCLOUD_OAUTHCLIENT_SECRET", s);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("binary runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `level = "warning"` once printed nothing at all, not even the fatal line; now it is
/// `warn`, and a word that is no level is refused by `check` and `run` alike.
#[test]
fn log_levels_as_people_write_them() {
    let login = serve(Peer::RefuseLogin);
    let url = format!("http://127.0.0.1:{}", login.port);
    let state = tempfile::tempdir().expect("state");
    let warning = config_text(&url, "", "level = \"warning\"", state.path());
    let out = run_with(&["run"], &warning, Some("wrong-secret"), &[]);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let fatal = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["level"] == "ERROR" && v["message"] == "daemon stopped")
        .unwrap_or_else(|| panic!("no fatal line at level warning:\n{stderr}"));
    assert!(
        fatal["error"]
            .as_str()
            .is_some_and(|e| e.contains("invalid_client")),
        "{fatal}"
    );
    for bad in ["verbose", "genesys_closer", "genesys_closer=loud"] {
        let config = config_text(&url, "", &format!("level = \"{bad}\""), state.path());
        for sub in ["check", "run"] {
            let out = run_with(&[sub], &config, Some("s"), &[]);
            let all = text(&out);
            assert_eq!(out.status.code(), Some(64), "{bad} ({sub}): {all}");
            assert!(
                all.contains("trace, debug, info, warn, error, off"),
                "{bad} ({sub}) names the levels: {all}"
            );
        }
    }
}

/// A wrong secret: `run` and `check --online` both exit 65 (restarting cannot fix it).
#[test]
fn a_refused_secret_exits_65_from_check_online_too() {
    let login = serve(Peer::RefuseLogin);
    let url = format!("http://127.0.0.1:{}", login.port);
    let state = tempfile::tempdir().expect("state");
    let config = config_text(&url, "", "level = \"info\"", state.path());
    let out = run_with(&["check", "--online"], &config, Some("wrong"), &[]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(65), "{all}");
    assert!(all.contains("invalid_client"), "{all}");
}

/// Each kind of network failure is told apart, with the address, in `check --online`.
#[test]
fn network_failures_name_the_address_and_the_kind() {
    let state = tempfile::tempdir().expect("state");
    // A port nothing listens on: bound, then closed.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let plain = serve(Peer::PlainHttp);
    let cases = [
        (
            format!("http://127.0.0.1:{closed}"),
            format!("connection refused by 127.0.0.1:{closed}"),
        ),
        (
            format!("https://127.0.0.1:{}", plain.port),
            format!("TLS with 127.0.0.1:{}", plain.port),
        ),
    ];
    let mut seen = Vec::new();
    for (url, want) in &cases {
        let config = config_text(url, "", "level = \"info\"", state.path());
        let out = run_with(&["check", "--online"], &config, Some("s"), &[]);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(1), "{url}: {all}");
        assert!(
            all.contains(want.as_str()),
            "{url}: want {want:?} in\n{all}"
        );
        assert!(all.contains(&format!("{url}/oauth/token")), "{url}: {all}");
        seen.push(all);
    }
    assert_ne!(seen[0], seen[1], "two failures read the same");
}

/// `check` on the secret: missing, a directory, an empty file, each named; never "OK".
#[test]
fn check_names_what_is_wrong_with_the_secret() {
    let dir = tempfile::tempdir().expect("dir");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "  \n").expect("empty file");
    let absent = dir.path().join("absent");
    let url = "https://api.mypurecloud.ie";
    let cases: [(String, Option<&str>, &str); 4] = [
        (
            String::new(),
            None,
            "GENESYSCLOUD_OAUTHCLIENT_SECRET is not set",
        ),
        (
            format!("client_secret_file = \"{}\"", dir.path().display()),
            None,
            "is a directory",
        ),
        (
            format!("client_secret_file = \"{}\"", empty.display()),
            None,
            "is empty",
        ),
        (
            format!("client_secret_file = \"{}\"", absent.display()),
            None,
            "No such file",
        ),
    ];
    for (extra, secret, want) in &cases {
        let config = config_text(url, extra, "level = \"info\"", dir.path());
        let out = run_with(&["check"], &config, *secret, &[]);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(64), "{extra}: {all}");
        assert!(!all.contains(": OK"), "{extra}: said OK: {all}");
        assert!(all.contains("NOT OK"), "{extra}: {all}");
        assert!(all.contains(want), "{extra}: want {want:?} in {all}");
        // `run` refuses with the same reason, before any network I/O.
        let out = run_with(&["run"], &config, *secret, &[]);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(64), "{extra} (run): {all}");
        assert!(all.contains(want), "{extra} (run): want {want:?} in {all}");
        if !extra.is_empty() {
            assert!(
                !all.contains("no client secret: GENESYSCLOUD_OAUTHCLIENT_SECRET"),
                "{extra}: blames the environment for a file: {all}"
            );
        }
    }
}

/// Syslog priority prefixes only when stderr is the journal stream systemd named:
/// `JOURNAL_STREAM` inherited by a process whose stderr is a file leaves JSON alone.
#[test]
fn journald_prefix_only_when_stderr_is_the_journal_stream() {
    let login = serve(Peer::RefuseLogin);
    let url = format!("http://127.0.0.1:{}", login.port);
    let dir = tempfile::tempdir().expect("dir");
    let config_path = dir.path().join("config.toml");
    std::fs::write(
        &config_path,
        config_text(&url, "", "level = \"info\"", &dir.path().join("state")),
    )
    .expect("config");
    let run_logging_to = |log: &Path, journal_stream: &str| -> String {
        let file = std::fs::File::create(log).expect("log file");
        let status = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&config_path)
            .env("GENESYSCLOUD_OAUTHCLIENT_SECRET", "wrong")
            .env("JOURNAL_STREAM", journal_stream)
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .status()
            .expect("binary runs");
        assert_eq!(status.code(), Some(65));
        std::fs::read_to_string(log).expect("log read")
    };
    // Another stream's numbers: every line is plain JSON.
    let log = dir.path().join("a.log");
    let text = run_logging_to(&log, "1:2");
    assert!(!text.is_empty());
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
    // The file's own device and inode: the prefix is there (journald would strip it).
    let log = dir.path().join("b.log");
    std::fs::write(&log, "").expect("create");
    let id = {
        use std::os::unix::fs::MetadataExt as _;
        let m = std::fs::metadata(&log).expect("meta");
        format!("{}:{}", m.dev(), m.ino())
    };
    let text = run_logging_to(&log, &id);
    assert!(
        text.lines().any(|l| l.starts_with("<3>{")),
        "the error line carries <3>: {text}"
    );
}

/// SIGTERM while the start-up login waits on a host that never answers: the process
/// ends at once instead of after the request's 15 s deadline.
#[test]
fn a_stop_during_the_start_up_login_ends_at_once() {
    let silent = serve(Peer::Silent);
    let url = format!("http://127.0.0.1:{}", silent.port);
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        config_text(&url, "", "level = \"info\"", &dir.path().join("state")),
    )
    .expect("config");
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .env("GENESYSCLOUD_OAUTHCLIENT_SECRET", "s")
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("daemon starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    while silent.accepted.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the daemon never tried to log in"
        );
        assert!(child.try_wait().expect("status").is_none(), "exited early");
        std::thread::sleep(Duration::from_millis(10));
    }
    let signalled = Instant::now();
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok);
    let status = loop {
        if let Some(s) = child.try_wait().expect("status") {
            break s;
        }
        // The login's own deadline is 15 s: well before it, or the stop waited for it.
        assert!(
            signalled.elapsed() < Duration::from_secs(10),
            "still running {:?} after SIGTERM",
            signalled.elapsed()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut err = String::new();
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err);
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("stopped while starting"), "{err}");
}

/// A connection lost while a 200's body is read is a transport failure, retried like
/// any other: the call succeeds on the next try instead of failing as "undecodable".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_off_mid_read_is_retried() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let channel_calls = Arc::new(AtomicUsize::new(0));
    let calls = Arc::clone(&channel_calls);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let calls = Arc::clone(&calls);
            std::thread::spawn(move || {
                let Some(text) = read_request(&mut conn) else {
                    return;
                };
                let answer = if text.starts_with("post /oauth/token") {
                    r#"{"access_token":"t","token_type":"bearer","expires_in":86400}"#
                } else {
                    r#"{"id":"streaming-0-x","connectUri":"ws://127.0.0.1:1/x"}"#
                };
                if !text.starts_with("post /oauth/token")
                    && calls.fetch_add(1, Ordering::SeqCst) == 0
                {
                    // The first channel answer: the head and half the promised body, then
                    // the connection goes.
                    let _ = write!(
                        conn,
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                         connection: close\r\n\r\n{}",
                        answer.len(),
                        &answer[..answer.len() / 2]
                    );
                    return;
                }
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{answer}",
                    answer.len()
                );
            });
        }
    });
    let url = url::Url::parse(&format!("http://127.0.0.1:{port}")).expect("url");
    let http = genesys_closer::genesys::api::ApiClient::http_client().expect("client");
    let tokens = genesys_closer::genesys::auth::TokenSource::new(
        http.clone(),
        &url,
        "0c1e0c1e-0000-4000-8000-0000000000ab".into(),
        secrecy::SecretString::from("s".to_string()),
    );
    let api = genesys_closer::genesys::api::ApiClient::new(http, url, tokens);
    let channel = api
        .create_channel()
        .await
        .expect("the cut-off answer is retried");
    assert_eq!(channel.id, "streaming-0-x");
    assert_eq!(channel_calls.load(Ordering::SeqCst), 2, "one retry");
}
