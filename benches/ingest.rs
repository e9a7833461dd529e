//! Ingest: notification frame text -> conversation state -> rule decision, measured side by
//! side with merely parsing the same frames into `serde_json::Value` (the product target's
//! yardstick). Single thread; runs alternate between the two so machine noise hits both.
//!
//! `cargo bench --bench ingest` prints medians of 15 runs and the ratio.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use genesys_closer::config::Config;
use genesys_closer::genesys::frames::{Frame, parse_frame};
use genesys_closer::rules::Rules;
use genesys_closer::state::Store;

const FRAMES: usize = 20_000;
const RUNS: usize = 15;

fn main() {
    let fixture = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/genesys/events/01-queue-bot-handled-intent-attributes.json"),
    )
    .expect("fixture");
    // Distinct conversations, a quarter of them with a matching intent.
    let frames: Vec<String> = (0..FRAMES)
        .map(|i| {
            let f = fixture.replace(
                "3a6f2b9e-7c41-4d8a-b5e2-91f0c7d3a864",
                &format!("3a6f2b9e-7c41-4d8a-b5e2-{i:012}"),
            );
            if i % 4 == 0 {
                f
            } else {
                f.replace("CancelSubscription", "TalkToAgent")
            }
        })
        .collect();
    let bytes: usize = frames.iter().map(String::len).sum();
    let config = Config::parse(
        r#"
[genesys]
region = "us-east-1"
client_id = "bench"
[stream]
queues = ["8f14e45f-ceea-467a-9575-3b9d1c2e4a77"]
[[rule]]
name = "cancel"
intents = ["CancelSubscription", "Goodbye"]
"#,
        Path::new("bench.toml"),
    )
    .expect("bench config");
    let rules = Rules::compile(&config);

    let mut value_runs = Vec::new();
    let mut ingest_runs = Vec::new();
    let mut decisions = 0;
    for _ in 0..RUNS {
        let t = Instant::now();
        for f in &frames {
            black_box(serde_json::from_str::<serde_json::Value>(f).expect("json"));
        }
        value_runs.push(t.elapsed());

        let store = Store::new();
        let t = Instant::now();
        let now = tokio::time::Instant::now();
        decisions = 0;
        for f in &frames {
            if let Ok(Frame::Conversation(ev)) = parse_frame(f, rules.attributes()) {
                let applied = store.apply(&ev, now, |c| rules.evaluate(c));
                decisions += usize::from(applied.decision.is_some());
            }
        }
        ingest_runs.push(t.elapsed());
    }
    assert_eq!(
        decisions,
        FRAMES / 4,
        "every matching conversation decided once"
    );
    let value = median(&mut value_runs);
    let ingest = median(&mut ingest_runs);
    let rate = |d: Duration| FRAMES as f64 / d.as_secs_f64();
    println!(
        "frames: {FRAMES} x {} B average, {RUNS} runs each, medians:",
        bytes / FRAMES
    );
    println!(
        "  serde_json::Value parse only : {:>9.0} frames/s",
        rate(value)
    );
    println!(
        "  frame -> state -> decision   : {:>9.0} frames/s",
        rate(ingest)
    );
    println!(
        "  ratio ingest/Value           : {:.2}x",
        value.as_secs_f64() / ingest.as_secs_f64()
    );
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}
