//! `sim`: the Genesys simulator alone, for pointing a daemon at it by hand.

use std::net::SocketAddr;
use std::time::Duration;

use genesys_closer::config::{Exit, LogConfig, LogFormat};
use genesys_closer::lab::demo::DEMO_QUEUES;
use genesys_closer::telemetry;
use genesys_sim as sim;

/// `sim`'s options.
#[derive(clap::Args)]
pub struct SimArgs {
    /// Address to listen on: loopback unless --allow-remote.
    #[arg(long, default_value = "127.0.0.1:8900")]
    listen: SocketAddr,
    /// Allow a --listen address other machines can reach (the simulator's
    /// credentials are fixed and printed: anyone who reaches it can use it).
    #[arg(long)]
    allow_remote: bool,
    /// New conversations per second from the built-in generator (0: none).
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Heartbeat interval, e.g. "30s".
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    heartbeat: Duration,
    /// A fault on a timetable, NAME@SECONDS[:ARG], repeatable; e.g.
    /// `--fault socket-closing@30:60 --fault 429@90:10`. Names: drop, stall:SECS,
    /// socket-closing[:SECS], expire, no-longer-subscribed, drop-topics, revoke,
    /// STATUS:SECS (429:10, 503:5), bad-frames, duplicate, reorder.
    #[arg(long = "fault", value_parser = parse_fault)]
    faults: Vec<sim::ScriptedFault>,
}

/// A `--fault` entry.
fn parse_fault(text: &str) -> Result<sim::ScriptedFault, String> {
    text.parse()
}

/// Serves until killed; refuses a non-loopback address without `--allow-remote`, since
/// the simulator's credentials are fixed and printed.
pub async fn sim(args: SimArgs) -> Exit {
    if !args.allow_remote && !args.listen.ip().is_loopback() {
        eprintln!(
            "error: --listen {} is not a loopback address: other machines \
             could reach the simulator, whose credentials are fixed and printed; \
             add --allow-remote to listen there anyway",
            args.listen
        );
        return Exit::BadConfig;
    }
    telemetry::init_logging(&LogConfig {
        format: LogFormat::Human,
        level: "info".into(),
    });
    let cfg = sim::SimConfig {
        listen: args.listen,
        heartbeat_interval: args.heartbeat,
        ..sim::SimConfig::default()
    };
    match sim::serve_forever(cfg, generator(args.rate), args.faults).await {
        Ok(()) => Exit::Ok,
        Err(e) => {
            eprintln!("error: simulator failed: {e:#}");
            Exit::Failure
        }
    }
}

/// The built-in generator at `rate` conversations per second (none at 0): the demo's
/// queues and intents, and customers who leave after 30 s.
fn generator(rate: f64) -> Option<sim::GeneratorConfig> {
    (rate > 0.0).then(|| sim::GeneratorConfig {
        total: None,
        rate_per_sec: rate,
        queue_ids: DEMO_QUEUES.iter().map(|q| q.to_string()).collect(),
        intent_attribute: "Bot.Intent".into(),
        intents: vec![
            Some("Goodbye".into()),
            Some("CancelSubscription".into()),
            Some("TalkToAgent".into()),
            None,
        ],
        customer_leaves_after: Duration::from_secs(30),
    })
}
