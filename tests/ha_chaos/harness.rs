//! The harness of tests/ha_chaos.rs: three daemon processes in a group, each reaching
//! PostgreSQL through its own loopback proxy (which can black-hole its traffic); a
//! test-owned PostgreSQL cluster that can be restarted; PgBouncer in transaction mode;
//! a watcher that logs the lease row; the intake calls; and the invariants read from
//! the simulator's request log.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use genesys_sim::{RecordedRequest, SimHandle};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub use crate::common::ha::{acts, who};
use crate::common::{FLOW, INTAKE_TOKEN, QUEUE, bot, conversation};

/// The group's lease: short, so a takeover after a kill comes within seconds.
pub const LEASE_TTL: Duration = Duration::from_secs(3);
/// The issue's targets: acting again within this of a leader killed or cut off...
pub const KILL_TARGET: Duration = Duration::from_secs(LEASE_TTL.as_secs() + 3);
/// ...and within this of a leader stopped with SIGTERM (the signal to the lease taken).
pub const TERM_TARGET: Duration = Duration::from_secs(2);
/// The lease's name in the configs.
const LEASE_NAME: &str = "closer";
/// A flow no config watches: its conversations are known through the intake only.
pub const UNWATCHED_FLOW: &str = "0b0b0b0b-1111-4222-8333-444455556666";

/// Matching conversations per scenario (`GENESYS_CLOSER_CHAOS_CONVERSATIONS`, default
/// 60; `bench/ha-chaos.sh` sets 500); a third as many match no rule.
pub fn conversations() -> usize {
    std::env::var("GENESYS_CLOSER_CHAOS_CONVERSATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
}

/// Each instance's `requests_per_minute` (`GENESYS_CLOSER_CHAOS_RPM`, default 1200).
pub fn requests_per_minute() -> u32 {
    std::env::var("GENESYS_CLOSER_CHAOS_RPM")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1200)
}

/// What the daemon's budget lets out in any 60 s: the rate plus its burst (a tenth),
/// as `Budget::new` documents.
pub fn budget_allowance(rpm: u32) -> usize {
    (rpm + (rpm / 10).max(1)) as usize
}

/// The shared PostgreSQL (`GENESYS_CLOSER_TEST_PG`, else 127.0.0.1:5432, trust,
/// database `test`).
pub fn shared_url() -> String {
    std::env::var("GENESYS_CLOSER_TEST_PG")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into())
}

/// Where a connection string points: (host, port, user, dbname).
pub fn parts(url: &str) -> (String, u16, String, String) {
    let c: tokio_postgres::Config = url.parse().expect("a PostgreSQL connection string");
    let host = match c.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".into(),
    };
    let port = c.get_ports().first().copied().unwrap_or(5432);
    let user = c.get_user().unwrap_or("postgres").to_owned();
    let db = c.get_dbname().unwrap_or("test").to_owned();
    (host, port, user, db)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free loopback port")
        .local_addr()
        .unwrap()
        .port()
}

// ---------------------------------------------------------------------------------
// Running commands as the `postgres` user (initdb, postgres and pgbouncer refuse root).

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `cmd` as the `postgres` user when we are root (`runuser -u postgres --`), as
/// ourselves otherwise.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run_ok(mut c: Command, what: &str) {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn give_to_postgres(dir: &Path) {
    if is_root() {
        run_ok(
            {
                let mut c = Command::new("chown");
                c.args(["-R", "postgres:postgres"]).arg(dir);
                c
            },
            "chown the test cluster's directory to postgres",
        );
    }
}

// ---------------------------------------------------------------------------------
// A test-owned PostgreSQL cluster.

/// The newest Debian PostgreSQL server binaries (`/usr/lib/postgresql/*/bin`).
fn pg_bin() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b).unwrap_or_else(|| {
        panic!(
            "PostgreSQL's server binaries (/usr/lib/postgresql/*/bin/initdb) are missing: \
             this test runs its own cluster to restart it; `bash .ci/run` installs them \
             (Debian's postgresql package)"
        )
    })
}

/// A PostgreSQL cluster of this test only (the shared one on 5432 is never
/// restarted): initdb in a temporary directory, trust auth, a free loopback port,
/// database `test`. Stopped (immediate) and removed when dropped.
pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

impl Cluster {
    pub async fn start() -> Cluster {
        let bin = pg_bin();
        tokio::task::spawn_blocking(move || {
            let dir = tempfile::Builder::new()
                .prefix("gc-chaos-pg.")
                .tempdir()
                .expect("tempdir");
            give_to_postgres(dir.path());
            let mut c = as_postgres(&bin.join("initdb"));
            c.arg("-D").arg(dir.path().join("data")).args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            ]);
            run_ok(c, "initdb");
            let cluster = Cluster {
                dir,
                bin,
                port: free_port(),
            };
            cluster.pg_ctl_start();
            let mut c = as_postgres(&cluster.bin.join("createdb"));
            c.args(["-h", "127.0.0.1", "-p", &cluster.port.to_string()])
                .args(["-U", "postgres", "test"]);
            run_ok(c, "createdb test");
            cluster
        })
        .await
        .unwrap()
    }

    pub fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=test",
            self.port
        )
    }

    fn pg_ctl_start(&self) {
        let mut c = as_postgres(&self.bin.join("pg_ctl"));
        c.arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-l")
            .arg(self.dir.path().join("log"))
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c max_connections=200",
                self.port,
                self.dir.path().display()
            ))
            .arg("start")
            .stdout(Stdio::null());
        run_ok(c, "pg_ctl start");
    }

    fn pg_ctl_stop_immediate(&self) -> bool {
        let mut c = as_postgres(&self.bin.join("pg_ctl"));
        c.arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c.status().is_ok_and(|s| s.success())
    }

    /// `pg_ctl stop -m immediate` (every backend killed, no checkpoint: a crash).
    pub async fn stop_immediate(self: &Arc<Self>) {
        let me = Arc::clone(self);
        let ok = tokio::task::spawn_blocking(move || me.pg_ctl_stop_immediate())
            .await
            .unwrap();
        assert!(ok, "pg_ctl stop -m immediate");
    }

    /// Started again on the same port (crash recovery first).
    pub async fn start_again(self: &Arc<Self>) {
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || me.pg_ctl_start())
            .await
            .unwrap();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl_stop_immediate();
    }
}

// ---------------------------------------------------------------------------------
// PgBouncer in transaction mode.

/// Debian's `pgbouncer` (on PATH, or /usr/sbin).
fn pgbouncer_bin() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("pgbouncer"))
            .find(|f| f.exists())
    });
    on_path
        .or_else(|| {
            let p = PathBuf::from("/usr/sbin/pgbouncer");
            p.exists().then_some(p)
        })
        .unwrap_or_else(|| {
            panic!(
                "pgbouncer is missing: `bash .ci/run` installs it (Debian's pgbouncer \
                 package), or `apt-get install pgbouncer`"
            )
        })
}

/// PgBouncer on a free loopback port in front of `upstream` (host, port, dbname), in
/// transaction mode, no authentication (`auth_type = any`, the server's user forced).
/// Stopped when dropped.
///
/// `ignore_startup_parameters = options`: the journal's connection sends
/// `options=-c statement_timeout=…`, which PgBouncer (1.18) refuses at connect
/// ("unsupported startup parameter: options") unless told to ignore it; the journal's
/// own deadline still bounds every statement then.
pub struct Bouncer {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl Bouncer {
    pub async fn start(upstream: &str) -> Bouncer {
        let (host, port, user, db) = parts(upstream);
        let bin = pgbouncer_bin();
        let dir = tempfile::Builder::new()
            .prefix("gc-chaos-bouncer.")
            .tempdir()
            .expect("tempdir");
        let listen = free_port();
        let ini = dir.path().join("pgbouncer.ini");
        std::fs::write(
            &ini,
            format!(
                "[databases]\n\
                 {db} = host={host} port={port} dbname={db} user={user}\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {listen}\n\
                 unix_socket_dir =\n\
                 auth_type = any\n\
                 pool_mode = transaction\n\
                 ignore_startup_parameters = extra_float_digits,options\n\
                 max_client_conn = 200\n\
                 default_pool_size = 20\n\
                 server_reset_query =\n\
                 logfile = {log}\n\
                 pidfile = {pid}\n",
                log = dir.path().join("pgbouncer.log").display(),
                pid = dir.path().join("pgbouncer.pid").display(),
            ),
        )
        .unwrap();
        give_to_postgres(dir.path());
        // It refuses to run as root: as the postgres user (runuser, which stays its
        // parent; the pidfile names the process to stop).
        let child = as_postgres(&bin)
            .arg(&ini)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pgbouncer starts");
        let b = Bouncer {
            child,
            dir,
            port: listen,
        };
        let url = b.url(&user, &db);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Ok((c, conn))) = tokio::time::timeout(
                Duration::from_secs(2),
                tokio_postgres::connect(&url, tokio_postgres::NoTls),
            )
            .await
            {
                tokio::spawn(conn);
                if c.simple_query("SELECT 1").await.is_ok() {
                    break;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "pgbouncer did not answer on port {listen}: {}",
                std::fs::read_to_string(b.dir.path().join("pgbouncer.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        b
    }

    pub fn url(&self, user: &str, db: &str) -> String {
        format!("host=127.0.0.1 port={} user={user} dbname={db}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("pgbouncer.pid")) {
            let _ = Command::new("kill").args(["-INT", pid.trim()]).status();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------
// A loopback TCP proxy that can black-hole its traffic.

/// Forwards every connection to `upstream`. Black-holed, it forwards nothing in either
/// direction and keeps every socket open; new connections are accepted and held (not
/// connected upstream) until it is lifted.
pub struct Proxy {
    pub port: u16,
    hole: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: (String, u16)) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (hole, rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (rx, upstream) = (rx.clone(), upstream.clone());
                tokio::spawn(forward(client, upstream, rx));
            }
        });
        Proxy { port, hole, task }
    }

    pub fn black_hole(&self, on: bool) {
        self.hole.send_replace(on);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(client: TcpStream, upstream: (String, u16), mut hole: watch::Receiver<bool>) {
    if hole.wait_for(|h| !*h).await.map(|_| ()).is_err() {
        return;
    }
    let Ok(server) = TcpStream::connect((upstream.0.as_str(), upstream.1)).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    tokio::join!(pipe(cr, sw, hole.clone()), pipe(sr, cw, hole));
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut hole: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if hole.wait_for(|h| !*h).await.map(|_| ()).is_err() {
            return;
        }
        let read = tokio::select! {
            r = from.read(&mut buf) => Some(r),
            _ = async { hole.wait_for(|h| *h).await.map(|_| ()) } => None,
        };
        let n = match read {
            None => continue,
            Some(Ok(0) | Err(_)) => {
                let _ = to.shutdown().await;
                return;
            }
            Some(Ok(n)) => n,
        };
        // Read just before the hole opened: held until it closes.
        if hole.wait_for(|h| !*h).await.map(|_| ()).is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------
// The lease as the database shows it, polled every 20 ms.

/// One poll of the lease row.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub holder: String,
    pub epoch: i64,
    /// `expires_at` on this process's clock...
    pub expires: Instant,
    /// ...give or take this (half the poll's round trip).
    pub slack: Duration,
}

impl Seen {
    pub fn valid(&self) -> bool {
        self.expires > self.at
    }
}

pub struct LeaseWatch {
    log: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl LeaseWatch {
    /// Polls `{schema}.lease` on `url` (the server itself, never through a member's
    /// proxy or the pooler), reconnecting whenever the database went away.
    pub fn start(url: String, schema: String) -> LeaseWatch {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        let sql = format!(
            "SELECT holder, epoch, \
             (extract(epoch FROM expires_at - clock_timestamp()) * 1000)::float8 \
             FROM {schema}.lease WHERE name = '{LEASE_NAME}'"
        );
        let task = tokio::spawn(async move {
            let mut client: Option<tokio_postgres::Client> = None;
            loop {
                if client.as_ref().is_none_or(|c| c.is_closed()) {
                    client = match tokio::time::timeout(
                        Duration::from_secs(2),
                        tokio_postgres::connect(&url, tokio_postgres::NoTls),
                    )
                    .await
                    {
                        Ok(Ok((c, conn))) => {
                            tokio::spawn(conn);
                            Some(c)
                        }
                        _ => None,
                    };
                }
                if let Some(c) = &client {
                    let before = Instant::now();
                    if let Ok(Ok(Some(row))) =
                        tokio::time::timeout(Duration::from_secs(2), c.query_opt(&sql, &[])).await
                    {
                        let after = Instant::now();
                        let at = before + (after - before) / 2;
                        let remaining: f64 = row.get(2);
                        let expires = if remaining >= 0.0 {
                            at + Duration::from_secs_f64(remaining / 1000.0)
                        } else {
                            at.checked_sub(Duration::from_secs_f64(-remaining / 1000.0))
                                .unwrap_or(at)
                        };
                        sink.lock().unwrap().push(Seen {
                            at,
                            holder: row.get(0),
                            epoch: row.get(1),
                            expires,
                            slack: (after - before) / 2,
                        });
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        LeaseWatch { log, task }
    }

    pub fn log(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }

    /// The valid holder at the latest poll.
    pub fn now(&self) -> Option<Seen> {
        self.log
            .lock()
            .unwrap()
            .last()
            .filter(|s| s.valid())
            .cloned()
    }

    /// Waits (bounded) for the first poll at or after `since` that `cond` accepts.
    pub async fn until(
        &self,
        since: Instant,
        within: Duration,
        cond: impl Fn(&Seen) -> bool,
    ) -> Seen {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self
                .log
                .lock()
                .unwrap()
                .iter()
                .find(|s| s.at >= since && cond(s))
            {
                return s.clone();
            }
            assert!(
                Instant::now() < deadline,
                "lease: no such change within {within:?}; last seen {:?}",
                self.log.lock().unwrap().last()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// When each epoch's lease was lost, for every epoch a later one replaced: its last
    /// `expires_at` seen (a resign sets it to the resign's time; plus the poll's
    /// slack, so that no request is blamed on the mapping of the database's clock to
    /// ours), or the first poll that showed a newer epoch, whichever is earlier.
    pub fn lost_at(&self) -> HashMap<i64, Instant> {
        let log = self.log();
        let mut last_expiry: HashMap<i64, Instant> = HashMap::new();
        let mut first_seen: HashMap<i64, Instant> = HashMap::new();
        for s in &log {
            last_expiry.insert(s.epoch, s.expires + s.slack);
            first_seen.entry(s.epoch).or_insert(s.at);
        }
        let mut lost = HashMap::new();
        for (&e, &expiry) in &last_expiry {
            let newer = first_seen
                .iter()
                .filter(|(n, _)| **n > e)
                .map(|(_, at)| *at)
                .min();
            if let Some(newer) = newer {
                lost.insert(e, expiry.min(newer));
            }
        }
        lost
    }
}

impl Drop for LeaseWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------
// Daemon processes.

/// Where the group's members reach PostgreSQL.
pub enum Db {
    /// The shared server (`GENESYS_CLOSER_TEST_PG` or 127.0.0.1:5432).
    Shared,
    /// A cluster of this test only (it may be restarted).
    Own(Arc<Cluster>),
    /// PgBouncer (transaction mode) in front of the shared server.
    Bouncer(Bouncer),
}

/// One daemon of the group: its config, its proxy, its processes (one per start).
pub struct Member {
    pub name: String,
    dir: PathBuf,
    config: PathBuf,
    child: Option<Child>,
    pub proxy: Proxy,
    /// Each process's lifetime: started, ended (None while it runs).
    pub incarnations: Vec<(Instant, Option<Instant>)>,
    /// This member's intake URL while a process runs (shared with the intake calls).
    pub intake: Arc<Mutex<Option<String>>>,
    stopped: bool,
}

impl Member {
    fn log_path(&self, n: usize) -> PathBuf {
        self.dir.join(format!("{}.{n}.log", self.name))
    }

    /// The log of the running (or last) process.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path(self.incarnations.len().saturating_sub(1)))
            .unwrap_or_default()
    }

    pub fn all_logs(&self) -> String {
        (0..self.incarnations.len())
            .map(|n| std::fs::read_to_string(self.log_path(n)).unwrap_or_default())
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("a running process").id()
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts a process and waits (bounded) until its intake listens.
    pub async fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} runs already", self.name);
        let n = self.incarnations.len();
        let log = std::fs::File::create(self.log_path(n)).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_genesys-closer"))
            .args(["run", "--config"])
            .arg(&self.config)
            .env("GENESYSCLOUD_OAUTHCLIENT_SECRET", "sim-secret")
            .env("GENESYS_CLOSER_INTAKE_TOKEN", INTAKE_TOKEN)
            .env_remove("RUST_LOG")
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("GENESYS_CLOSER_DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the daemon starts");
        self.child = Some(child);
        self.stopped = false;
        self.incarnations.push((Instant::now(), None));
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            if let Some(a) = self
                .log()
                .lines()
                .find(|l| l.contains("intake listening"))
                .and_then(|l| field(l, "addr"))
            {
                break a;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("{} exited at start ({status}):\n{}", self.name, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "{}: no intake within 30 s:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        *self.intake.lock().unwrap() = Some(format!("http://{addr}/v1/intents"));
    }

    fn ended(&mut self) {
        self.child = None;
        self.stopped = false;
        *self.intake.lock().unwrap() = None;
        if let Some(last) = self.incarnations.last_mut() {
            last.1.get_or_insert_with(Instant::now);
        }
    }

    /// SIGKILL, and reaped.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.ended();
    }

    pub fn signal(&mut self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {}", self.name);
        match sig {
            "-STOP" => self.stopped = true,
            "-CONT" => self.stopped = false,
            _ => {}
        }
    }

    /// SIGTERM, then waits (bounded) for the exit.
    pub async fn terminate(&mut self, within: Duration) -> ExitStatus {
        if self.stopped {
            self.signal("-CONT");
        }
        self.signal("-TERM");
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.ended();
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not stop within {within:?} of SIGTERM:\n{}",
                self.name,
                tail(&self.log(), 30)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the running process exited by itself (it must not).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().unwrap())
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A field of a JSON log line (top level or under `fields`), as text.
pub fn field(line: &str, name: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let f = v.get(name).or_else(|| v.get("fields")?.get(name))?;
    Some(match f {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// The time of the first line of `log` holding every one of `words`, as seconds of
/// its UTC day (the daemons' logs share this host's clock).
pub fn logged_at(log: &str, words: &[&str]) -> Option<f64> {
    let line = log.lines().find(|l| words.iter().all(|w| l.contains(w)))?;
    let ts = field(line, "timestamp")?;
    let (_, time) = ts.split_once('T')?;
    let time = time.trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Three daemons, the simulator and the lease watcher.
pub struct Group {
    pub sim: SimHandle,
    pub members: Vec<Member>,
    pub watch: LeaseWatch,
    pub schema: String,
    /// The server's connection string (the watcher's, the terminations').
    pub server: String,
    /// Each member's connections carry `application_name` = this + `_` + its name.
    pub app: String,
    pub rpm: u32,
    pub db: Db,
    _dir: tempfile::TempDir,
}

pub const NAMES: [&str; 3] = ["host-a", "host-b", "host-c"];

impl Group {
    /// The simulator (with the org's rate limit: the three budgets), three members
    /// (host-a first, so it leads), each with its proxy; returns once host-a holds the
    /// lease and all three are connected and listening for intake calls.
    pub async fn start(tag: &str, db: Db) -> Group {
        let rpm = requests_per_minute();
        let schema = format!("t_chaos_{tag}_{}", std::process::id());
        let server = match &db {
            Db::Shared | Db::Bouncer(_) => shared_url(),
            Db::Own(c) => c.url(),
        };
        let (host, port, user, dbname) = parts(&server);
        let upstream = match &db {
            Db::Bouncer(b) => ("127.0.0.1".to_owned(), b.port),
            _ => (host, port),
        };
        let admin = connect(&server).await;
        admin
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await
            .unwrap();
        let sim = crate::common::start_sim(genesys_sim::SimConfig {
            // The org's limit, as the README sizes it: each instance gets a third.
            rate_limit: Some((3 * rpm, Duration::from_secs(60))),
            ..genesys_sim::SimConfig::default()
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let app = format!("gc_{tag}_{}", std::process::id());
        let mut members = Vec::new();
        for name in NAMES {
            let proxy = Proxy::start(upstream.clone()).await;
            let db_url = format!(
                "host=127.0.0.1 port={} user={user} dbname={dbname} application_name={app}_{name}",
                proxy.port
            );
            let config = dir.path().join(format!("{name}.toml"));
            std::fs::write(
                &config,
                config_text(&sim.base_url(), dir.path(), &schema, name, &db_url, rpm),
            )
            .unwrap();
            members.push(Member {
                name: name.to_owned(),
                dir: dir.path().to_path_buf(),
                config,
                child: None,
                proxy,
                incarnations: Vec::new(),
                intake: Arc::new(Mutex::new(None)),
                stopped: false,
            });
        }
        let watch = LeaseWatch::start(server.clone(), schema.clone());
        let mut g = Group {
            sim,
            members,
            watch,
            schema,
            server,
            app,
            rpm,
            db,
            _dir: dir,
        };
        let t0 = Instant::now();
        g.members[0].spawn().await;
        g.watch
            .until(t0, Duration::from_secs(30), |s| {
                s.valid() && s.holder == "host-a"
            })
            .await;
        g.members[1].spawn().await;
        g.members[2].spawn().await;
        let sim = g.sim.clone();
        crate::common::wait_for(Duration::from_secs(30), || sim.connected_sockets() >= 3).await;
        g
    }

    /// The member holding the lease now, and its epoch.
    pub fn leader(&self) -> (usize, i64) {
        let s = self.watch.now().expect("a valid lease holder");
        let i = NAMES.iter().position(|n| *n == s.holder).unwrap();
        (i, s.epoch)
    }

    pub fn intake_targets(&self) -> Vec<Arc<Mutex<Option<String>>>> {
        self.members.iter().map(|m| Arc::clone(&m.intake)).collect()
    }

    /// Terminates every server connection of `member` (`pg_terminate_backend`).
    pub async fn terminate_connections(&self, member: usize) -> i64 {
        let admin = connect(&self.server).await;
        admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name = $1",
                &[&format!("{}_{}", self.app, NAMES[member])],
            )
            .await
            .unwrap()
            .get(0)
    }

    /// Every member still running is stopped with SIGTERM (each must exit 0), then the
    /// schema is dropped.
    pub async fn stop(mut self) {
        for m in &mut self.members {
            if let Some(s) = m.exited() {
                panic!("{} exited by itself ({s}):\n{}", m.name, tail(&m.log(), 30));
            }
        }
        for m in &mut self.members {
            if m.running() {
                let s = m.terminate(Duration::from_secs(30)).await;
                assert!(s.success(), "{} exits 0 after SIGTERM: {s}", m.name);
            }
        }
        if let Ok(admin) = try_connect(&self.server).await {
            let _ = admin
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
                .await;
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The logs outlive the test: copied where the failure says.
            let keep = std::env::temp_dir().join(format!("{}-logs", self.schema));
            let _ = std::fs::create_dir_all(&keep);
            for m in &self.members {
                let _ = std::fs::write(keep.join(format!("{}.log", m.name)), m.all_logs());
            }
            eprintln!("the members' logs: {}", keep.display());
            for m in &self.members {
                eprintln!(
                    "----- {} (last 40 lines)\n{}",
                    m.name,
                    tail(&m.all_logs(), 40)
                );
            }
            if let Db::Bouncer(b) = &self.db {
                eprintln!("----- pgbouncer\n{}", tail(&b.log(), 20));
            }
        }
    }
}

pub async fn try_connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let (c, conn) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_postgres::connect(url, tokio_postgres::NoTls),
    )
    .await
    .map_err(|_| "timeout".to_string())?
    .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(c)
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    try_connect(url).await.unwrap_or_else(|e| {
        panic!("PostgreSQL at {url}: {e} (bash .ci/run starts one on 127.0.0.1:5432)")
    })
}

fn config_text(
    sim_url: &str,
    dir: &Path,
    schema: &str,
    instance: &str,
    db_url: &str,
    rpm: u32,
) -> String {
    format!(
        r#"
[genesys]
api_url = "{sim_url}"
login_url = "{sim_url}"
client_id = "5e1f0c1e-51a0-4c1e-8e57-0000000c11e7"
requests_per_minute = {rpm}

[stream]
queues = ["{QUEUE}"]
flows = ["{FLOW}"]
mirror = false
subscribe_window = "100ms"
unsubscribe_window = "200ms"
catchup_after = "500ms"
backoff_min = "50ms"
backoff_max = "500ms"

[intake]
enabled = true
listen = "127.0.0.1:0"

[daemon]
state_dir = "{state}"

[ha]
database_url = "{db_url}"
schema = "{schema}"
lease_name = "{LEASE_NAME}"
instance = "{instance}"
lease_ttl = "{ttl}s"
renew_every = "500ms"
instances = 3

[log]
format = "json"
level = "info"

[[rule]]
name = "goodbye"
intents = ["Goodbye"]
farewell = "Thanks for contacting us. This conversation is now closed."
confirm_timeout = "3s"
"#,
        state = dir.join(instance).display(),
        ttl = LEASE_TTL.as_secs(),
    )
}

// ---------------------------------------------------------------------------------
// The workload: queue conversations, bot-phase ones found through the watched flow,
// and bot-phase ones only the intake tells of.

/// How long a bot sets its intent after the conversation starts: past the daemon's
/// `catchup_after` (500 ms), as the README's assumption asks.
const BOT_INTENT_AFTER_MS: u64 = 1000;

/// One intake call's end.
#[derive(Debug, Clone)]
pub struct IntakeResult {
    pub conversation_id: String,
    pub intent: String,
    /// 202, or 0 when no instance accepted it in time.
    pub status: u16,
    pub result: String,
    /// The instance that answered 202.
    pub instance: usize,
    /// 503s (standby, shutting down, busy) and calls that got no answer before it.
    pub refused: u32,
}

#[derive(Default)]
pub struct Workload {
    pub matching: Vec<String>,
    pub other: Vec<String>,
    calls: Vec<tokio::task::JoinHandle<Vec<IntakeResult>>>,
    next_call: usize,
}

impl Workload {
    /// Creates `m` matching and `n` non-matching conversations, a third of each in the
    /// queue, through the watched flow and through the intake; the intake calls go out
    /// in the background, round-robin over the instances.
    pub fn batch(
        &mut self,
        sim: &SimHandle,
        targets: &[Arc<Mutex<Option<String>>>],
        m: usize,
        n: usize,
    ) {
        let mut calls = Vec::new();
        for (count, intent, matching) in [(m, "Goodbye", true), (n, "Hello", false)] {
            for i in 0..count {
                let id = match i % 3 {
                    0 => sim.create_conversation(conversation(Some(intent))),
                    1 => sim.create_bot_conversation(bot(
                        Some(intent),
                        BOT_INTENT_AFTER_MS,
                        false,
                        false,
                    )),
                    _ => {
                        let mut spec = bot(Some(intent), BOT_INTENT_AFTER_MS, false, false);
                        spec.flow_id = UNWATCHED_FLOW.into();
                        let id = sim.create_bot_conversation(spec);
                        calls.push((id.clone(), intent.to_owned()));
                        id
                    }
                };
                if matching {
                    self.matching.push(id);
                } else {
                    self.other.push(id);
                }
            }
        }
        let first = self.next_call;
        self.next_call += calls.len();
        self.calls
            .push(tokio::spawn(intake_calls(targets.to_vec(), calls, first)));
    }

    /// Every intake call's end (waits for the calls still going).
    pub async fn intake_results(&mut self) -> Vec<IntakeResult> {
        let mut out = Vec::new();
        for h in self.calls.drain(..) {
            out.extend(h.await.expect("intake calls"));
        }
        out
    }

    /// Waits (bounded) until every matching conversation is closed; says which are
    /// not when the time is up (the verdict then counts them lost).
    pub async fn all_closed(&self, sim: &SimHandle, within: Duration) -> bool {
        self.closed_from(sim, 0, within).await
    }

    /// Waits (bounded) until every matching conversation from the `from`-th on is
    /// closed; `false` (and which are not) when the time is up.
    pub async fn closed_from(&self, sim: &SimHandle, from: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let open: Vec<&String> = self.matching[from..]
                .iter()
                .filter(|id| sim.is_closed(id) != Some(true))
                .collect();
            if open.is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                eprintln!(
                    "{} of {} matching conversations not closed within {within:?}: {open:?}",
                    open.len(),
                    self.matching.len() - from,
                );
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The intake calls for `calls` (conversation, intent), at most 8 at once, the k-th
/// call (counting from `first`) starting at instance k mod 3. An instance that answers
/// 503 (a standby; shutting down; busy) or nothing within 3 s is left for the next one;
/// after a round with no 202 the call waits 100 ms; a call no instance took within
/// 90 s ends with status 0. Any other status ends it as it is.
///
/// (With the intake relay, a standby answers 202 itself, with the acting instance's
/// result or `queued`; this function then sees fewer refusals and nothing else changes.)
pub async fn intake_calls(
    targets: Vec<Arc<Mutex<Option<String>>>>,
    calls: Vec<(String, String)>,
    first: usize,
) -> Vec<IntakeResult> {
    genesys_closer::install_crypto_provider();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let gate = Arc::new(tokio::sync::Semaphore::new(8));
    let mut tasks = Vec::new();
    for (k, (id, intent)) in calls.into_iter().enumerate() {
        let (client, targets, gate) = (client.clone(), targets.clone(), Arc::clone(&gate));
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.unwrap();
            one_intake_call(&client, &targets, first + k, id, intent).await
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

async fn one_intake_call(
    client: &reqwest::Client,
    targets: &[Arc<Mutex<Option<String>>>],
    k: usize,
    id: String,
    intent: String,
) -> IntakeResult {
    let body = serde_json::json!({ "conversationId": id, "intent": intent }).to_string();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut refused = 0;
    let mut i = k % targets.len();
    loop {
        for _ in 0..targets.len() {
            let url = targets[i].lock().unwrap().clone();
            if let Some(url) = url {
                let sent = client
                    .post(&url)
                    .bearer_auth(INTAKE_TOKEN)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().as_u16() == 202 => {
                        let v: serde_json::Value = r.json().await.unwrap_or_default();
                        return IntakeResult {
                            conversation_id: id,
                            intent,
                            status: 202,
                            result: v["result"].as_str().unwrap_or_default().to_owned(),
                            instance: i,
                            refused,
                        };
                    }
                    Ok(r) if r.status().as_u16() == 503 => refused += 1,
                    Ok(r) => {
                        let status = r.status().as_u16();
                        return IntakeResult {
                            conversation_id: id,
                            intent,
                            status,
                            result: r.text().await.unwrap_or_default(),
                            instance: i,
                            refused,
                        };
                    }
                    Err(_) => refused += 1,
                }
            }
            i = (i + 1) % targets.len();
        }
        if Instant::now() >= deadline {
            return IntakeResult {
                conversation_id: id,
                intent,
                status: 0,
                result: "no instance accepted it within 90 s".into(),
                instance: i,
                refused,
            };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------
// The invariants, from the simulator's request log.

fn is_disconnect(r: &RecordedRequest) -> bool {
    r.method == "PATCH" && r.path.starts_with("/api/v2/conversations/")
}

fn is_farewell(r: &RecordedRequest) -> bool {
    r.method == "POST" && r.path.contains("/communications/") && r.path.ends_with("/messages")
}

/// The most of `times` (sorted) that fall in any window of length `window`.
pub fn busiest_window(times: &[Instant], window: Duration) -> usize {
    let mut busiest = 0;
    let mut lo = 0;
    for hi in 0..times.len() {
        while times[hi] - times[lo] >= window {
            lo += 1;
        }
        busiest = busiest.max(hi - lo + 1);
    }
    busiest
}

/// What the invariants found, and the chaos table's row.
#[derive(Debug, Default)]
pub struct Verdict {
    pub matched: usize,
    pub confirmed: usize,
    pub dup_disconnects: usize,
    pub dup_farewells: usize,
    /// Requests acting on a conversation under an epoch at or after its lease was lost.
    pub stale: Vec<String>,
    /// Any request (reads too) under a lost epoch after its loss: reported, not judged.
    pub stale_any: usize,
    /// Non-matching conversations closed, or acted on.
    pub wrongly_closed: Vec<String>,
    /// The most API requests any process of an instance sent in a 60 s window.
    pub busiest_minute: Vec<(String, usize)>,
    pub over_budget: Vec<String>,
    pub rate_limited: usize,
    pub intake_failed: Vec<String>,
    pub intake_refused: u32,
    /// Intake calls each instance answered 202.
    pub intake_by_instance: [usize; 3],
    pub farewells: usize,
    /// Each duplicate: the conversation and its accepted acting requests (who, when).
    pub dup_detail: Vec<String>,
    /// Each matching conversation not closed: how the daemons heard of it.
    pub lost_detail: Vec<String>,
}

impl Verdict {
    /// Reads every invariant off the simulator's log and the lease's history.
    pub fn of(g: &Group, w: &Workload, intake: &[IntakeResult]) -> Verdict {
        let timed = g.sim.requests_timed();
        let lost = g.watch.lost_at();
        let mut v = Verdict {
            matched: w.matching.len(),
            ..Verdict::default()
        };
        let mut per_conv: HashMap<&str, (usize, usize, usize)> = HashMap::new();
        let mut sent: HashMap<&str, Vec<String>> = HashMap::new();
        let t0 = timed.first().map(|(at, _)| *at);
        let ids: HashMap<&str, bool> = w
            .matching
            .iter()
            .map(|id| (id.as_str(), true))
            .chain(w.other.iter().map(|id| (id.as_str(), false)))
            .collect();
        for (at, r) in &timed {
            if acts(r) {
                let conv = r
                    .path
                    .split('/')
                    .find(|seg| ids.contains_key(seg))
                    .unwrap_or_default();
                let e = per_conv.entry(conv).or_default();
                let ok = r.status / 100 == 2;
                sent.entry(conv).or_default().push(format!(
                    "{} {} {} at +{} ms by {}",
                    r.status,
                    r.method,
                    r.path.replace(conv, "{id}"),
                    t0.map_or(0, |t0| (*at - t0).as_millis()),
                    r.user_agent.as_deref().unwrap_or("?")
                ));
                if is_disconnect(r) && ok {
                    e.0 += 1;
                }
                if is_farewell(r) && ok {
                    e.1 += 1;
                }
                e.2 += 1;
            }
            if let Some((instance, Some(epoch))) = who(r)
                && let Some(lost_at) = lost.get(&epoch)
                && *at >= *lost_at
            {
                v.stale_any += 1;
                if acts(r) {
                    v.stale.push(format!(
                        "{instance} epoch {epoch}: {} {} ({} ms after the lease was lost)",
                        r.method,
                        r.path,
                        (*at - *lost_at).as_millis()
                    ));
                }
            }
        }
        for (id, matching) in &ids {
            let (d, f, any) = per_conv.get(id).copied().unwrap_or_default();
            v.dup_disconnects += d.saturating_sub(1);
            v.dup_farewells += f.saturating_sub(1);
            v.farewells += f;
            if d > 1 || f > 1 {
                v.dup_detail.push(format!(
                    "{id}: {:?}",
                    sent.get(id).cloned().unwrap_or_default()
                ));
            }
            if *matching {
                if g.sim.is_closed(id) == Some(true) {
                    v.confirmed += 1;
                } else {
                    let told = intake.iter().find(|c| c.conversation_id == *id).map_or(
                        "queue or watched flow".to_owned(),
                        |c| {
                            format!(
                                "intake call answered {} `{}` by {}",
                                c.status, c.result, NAMES[c.instance]
                            )
                        },
                    );
                    let decided: Vec<&str> = g
                        .members
                        .iter()
                        .filter(|m| {
                            m.all_logs()
                                .lines()
                                .any(|l| l.contains(*id) && l.contains("rule matched"))
                        })
                        .map(|m| m.name.as_str())
                        .collect();
                    v.lost_detail.push(format!(
                        "{id}: {told}; a rule matched it on {decided:?}; requests {:?}",
                        sent.get(id).cloned().unwrap_or_default()
                    ));
                }
            } else if any > 0 || g.sim.is_closed(id) != Some(false) {
                v.wrongly_closed.push(id.to_string());
            }
        }
        // The budget: per process (a restarted process starts a fresh budget), no 60 s
        // window with more API requests than the budget lets out.
        let allowance = budget_allowance(g.rpm);
        for m in &g.members {
            let mine: Vec<Instant> = timed
                .iter()
                .filter(|(_, r)| r.path.starts_with("/api/"))
                .filter(|(_, r)| who(r).is_some_and(|(i, _)| i == m.name))
                .map(|(at, _)| *at)
                .collect();
            let mut busiest = 0;
            for (start, end) in &m.incarnations {
                let times: Vec<Instant> = mine
                    .iter()
                    .copied()
                    .filter(|t| t >= start && end.is_none_or(|e| *t <= e))
                    .collect();
                busiest = busiest.max(busiest_window(&times, Duration::from_secs(60)));
            }
            if busiest > allowance {
                v.over_budget.push(format!(
                    "{}: {busiest} requests in 60 s (budget {} + burst)",
                    m.name, g.rpm
                ));
            }
            v.busiest_minute.push((m.name.clone(), busiest));
        }
        v.rate_limited = timed.iter().filter(|(_, r)| r.status == 429).count();
        let matching: std::collections::HashSet<&str> =
            w.matching.iter().map(String::as_str).collect();
        for c in intake {
            let want: &[&str] = if matching.contains(c.conversation_id.as_str()) {
                &["close", "duplicate", "queued"]
            } else {
                &["no_rule", "duplicate", "queued"]
            };
            v.intake_refused += c.refused;
            if c.status == 202 {
                v.intake_by_instance[c.instance] += 1;
            }
            if c.status != 202 || !want.contains(&c.result.as_str()) {
                v.intake_failed.push(format!(
                    "{} ({}): {} {}",
                    c.conversation_id, c.intent, c.status, c.result
                ));
            }
        }
        v
    }

    /// Prints the chaos table's row: `CHAOS|scenario|matched|confirmed|lost|dup
    /// disconnects|dup farewells|stale|takeover`.
    pub fn row(&self, scenario: &str, takeover: &str) {
        eprintln!(
            "CHAOS|{scenario}|{}|{}|{}|{}|{}|{}|{takeover}",
            self.matched,
            self.confirmed,
            self.matched - self.confirmed,
            self.dup_disconnects,
            self.dup_farewells,
            self.stale.len()
        );
        eprintln!(
            "details: farewells {}, requests of any kind under a lost epoch {}, busiest \
             minute per instance {:?}, 429s {}, intake calls answered 202 per instance {:?}, \
             refused or unanswered tries before a 202 {}",
            self.farewells,
            self.stale_any,
            self.busiest_minute,
            self.rate_limited,
            self.intake_by_instance,
            self.intake_refused
        );
    }

    /// Every invariant, each with what broke it.
    pub fn assert_all(&self) {
        for d in &self.dup_detail {
            eprintln!("duplicate: {d}");
        }
        for l in &self.lost_detail {
            eprintln!("lost: {l}");
        }
        assert_eq!(
            self.confirmed, self.matched,
            "every matching conversation closed"
        );
        assert_eq!(
            self.dup_disconnects, 0,
            "at most one accepted disconnect each"
        );
        assert_eq!(self.dup_farewells, 0, "at most one farewell each");
        assert!(
            self.farewells > 0,
            "the rule sends farewells: the duplicate check saw none"
        );
        assert_eq!(
            self.stale,
            Vec::<String>::new(),
            "no acting request under an epoch after its lease was lost"
        );
        assert_eq!(
            self.wrongly_closed,
            Vec::<String>::new(),
            "nothing closed that no rule matched"
        );
        assert_eq!(self.over_budget, Vec::<String>::new(), "the budget held");
        assert_eq!(self.rate_limited, 0, "the simulator answered no 429");
        assert_eq!(
            self.intake_failed,
            Vec::<String>::new(),
            "every intake call got its 202"
        );
    }
}
