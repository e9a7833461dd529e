//! The lab's commands (feature `lab`): `demo`, `burst`, `latency` and `fault-matrix`, each
//! the simulator and the daemon together on loopback; each exits 1 when its run missed
//! its bar.

use std::time::Duration;

use genesys_closer::config::Exit;
use genesys_closer::lab::{burst, demo, latency, matrix};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::signals::wait_for_signal;
use super::{passed, print_out};

/// `demo`'s options.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Stop after this many conversations and print a JSON summary as the last line.
    #[arg(long)]
    conversations: Option<u64>,
    /// New conversations per second.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Which paths to create conversations on, in rotation, comma-separated: queue,
    /// flow (flow discovery, intent on .attributes), flow+intake (flow discovery,
    /// intent posted by the data action), trigger (.customer.start trigger posts the
    /// id and eventTime, intent on .attributes), intake (the data action alone).
    /// Default: those five. Also: trigger-late (the trigger calls after the bot set
    /// its intent), trigger-no-time (the trigger passes no eventTime).
    #[arg(long, value_delimiter = ',', value_parser = parse_path)]
    paths: Vec<demo::Shape>,
}

/// `burst`'s options.
#[derive(clap::Args)]
pub struct BurstArgs {
    /// Conversations created at once.
    #[arg(long, default_value_t = 1000)]
    conversations: usize,
    /// The simulated org's limit, requests per 60 s (0: none).
    #[arg(long, default_value_t = 300)]
    sim_limit: u32,
    /// The daemon's budget, requests per minute.
    #[arg(long, default_value_t = 240)]
    requests_per_minute: u32,
}

/// `latency`'s options.
#[derive(clap::Args)]
pub struct LatencyArgs {
    /// Measurements of each path.
    #[arg(long, default_value_t = 200)]
    samples: usize,
    /// Other conversation frames per second meanwhile.
    #[arg(long, default_value_t = 10000)]
    background: u32,
}

/// A `--paths` name.
fn parse_path(name: &str) -> Result<demo::Shape, String> {
    demo::Shape::parse(name).ok_or_else(|| {
        let names: Vec<&str> = demo::Shape::NAMED.iter().map(|s| s.name()).collect();
        format!(
            "unknown path `{name}` (expected one of: {})",
            names.join(", ")
        )
    })
}

/// `demo`: until SIGINT, or `--conversations`; the JSON summary as the last line.
pub async fn demo(args: DemoArgs) -> Exit {
    let DemoArgs {
        conversations,
        rate,
        paths,
    } = args;
    if !(rate.is_finite() && rate > 0.0) {
        eprintln!("error: --rate must be a positive number");
        return Exit::BadConfig;
    }
    let shutdown = CancellationToken::new();
    // The demo has nothing to reload: a SIGHUP is dropped with its channel.
    let (reload_tx, _) = mpsc::channel(1);
    tokio::spawn(wait_for_signal(shutdown.clone(), reload_tx));
    let options = demo::DemoOptions {
        conversations,
        rate,
        paths,
    };
    match demo::run(options, shutdown).await {
        Ok(summary) => {
            match serde_json::to_string(&summary) {
                Ok(line) => print_out(&format!("{line}\n")),
                Err(e) => eprintln!("error: cannot print the summary: {e}"),
            }
            passed(summary.failed == 0 && summary.missing == 0)
        }
        Err(e) => {
            eprintln!("error: demo failed: {e:#}");
            Exit::Failure
        }
    }
}

/// `burst`: the table, and whether the burst stayed within the org's limit.
pub async fn burst(args: BurstArgs) -> Exit {
    let rate = (args.sim_limit > 0).then_some((args.sim_limit, Duration::from_secs(60)));
    match burst::run(args.conversations, rate, args.requests_per_minute).await {
        Ok(r) => {
            println!("{r}");
            passed(r.passes())
        }
        Err(e) => {
            eprintln!("error: burst could not run: {e:#}");
            Exit::Failure
        }
    }
}

/// `latency`: the figures, and whether every sample was measured.
pub async fn latency(args: LatencyArgs) -> Exit {
    match latency::run(args.samples, args.background).await {
        Ok(r) => {
            println!("{r}");
            passed(r.missing == 0)
        }
        Err(e) => {
            eprintln!("error: latency could not run: {e:#}");
            Exit::Failure
        }
    }
}

/// `fault-matrix`: every scenario in turn, then the table.
pub async fn fault_matrix() -> Exit {
    let mut rows = Vec::new();
    for fault in matrix::Fault::ALL {
        eprintln!("fault matrix: {}", fault.name());
        match matrix::run(fault).await {
            Ok(row) => rows.push(row),
            Err(e) => {
                eprintln!("error: scenario {:?} could not run: {e:#}", fault.name());
                return Exit::Failure;
            }
        }
    }
    print_out(&matrix::table(&rows));
    passed(rows.iter().all(|r| r.passes))
}
