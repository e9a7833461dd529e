//! Ingest: notification frame text -> conversation state -> rule decision (the daemon's
//! path: `parse_frame`, `Store::apply`, `Rules::evaluate`), next to three ways of merely
//! reading the same bytes: `serde_json::Value`, sonic-rs `Value` and serde_json
//! `IgnoredAny` (a validating skip of the whole frame, the floor for any serde reader).
//!
//! Two input sets: the example frames of ../shared/genesys/events (queue, user-topic and
//! bot-phase conversations, each group with fresh ids) and generated queue frames
//! (2 to 8 participants, 1 to 20 messages, three frames per conversation).
//!
//! `cargo bench --bench ingest` runs criterion on every variant and input set, then the
//! summary: `ROUNDS` rounds in which every variant reads the whole set once, in turn, so
//! machine noise hits each alike; medians, and the ratios the targets are stated in.
//! `cargo bench --bench ingest -- --test` (or `cargo test --benches`) runs each once: a
//! smoke test that also checks every matching conversation is decided exactly once.
//! `INGEST_ROUNDS` overrides the number of summary rounds.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use genesys_closer::genesys::frames::{Frame, parse_frame};
use genesys_closer::rules::Rules;
use genesys_closer::state::Store;
use serde::de::IgnoredAny;

mod common;

/// Example groups (7 frames each) and generated conversations (3 frames each).
const GROUPS: usize = 1_000;
const CONVERSATIONS: usize = 2_000;
const ROUNDS: usize = 15;

struct Set {
    name: &'static str,
    frames: Vec<String>,
    decisions: usize,
}

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Ours,
    OursParseOnly,
    SerdeValue,
    SonicValue,
    Ignored,
}

const VARIANTS: [(Variant, &str); 5] = [
    (Variant::Ours, "ours: frame -> state -> decision"),
    (Variant::OursParseOnly, "ours: parse_frame only"),
    (Variant::SerdeValue, "serde_json::Value"),
    (Variant::SonicValue, "sonic_rs::Value"),
    (Variant::Ignored, "serde_json IgnoredAny"),
];

/// Reads every frame of `set` once the `v` way; returns the time taken and, for `Ours`,
/// the decisions made (checked against what the set must produce).
fn pass(v: Variant, set: &Set, rules: &Rules) -> Duration {
    let frames = &set.frames;
    match v {
        Variant::Ours => {
            let store = Store::new();
            let now = tokio::time::Instant::now();
            let t = Instant::now();
            let mut decisions = 0;
            for f in frames {
                if let Ok(Frame::Conversation(ev)) = parse_frame(f, rules.attributes()) {
                    let applied = store.apply(&ev, now, |c| rules.evaluate(c));
                    decisions += usize::from(applied.decision.is_some());
                }
            }
            let d = t.elapsed();
            assert_eq!(
                decisions, set.decisions,
                "{}: every matching conversation decided exactly once",
                set.name
            );
            drop(black_box(store));
            d
        }
        Variant::OursParseOnly => {
            let t = Instant::now();
            for f in frames {
                black_box(parse_frame(f, rules.attributes()).expect("frame"));
            }
            t.elapsed()
        }
        Variant::SerdeValue => {
            let t = Instant::now();
            for f in frames {
                black_box(serde_json::from_str::<serde_json::Value>(f).expect("json"));
            }
            t.elapsed()
        }
        Variant::SonicValue => {
            let t = Instant::now();
            for f in frames {
                black_box(sonic_rs::from_str::<sonic_rs::Value>(f).expect("json"));
            }
            t.elapsed()
        }
        Variant::Ignored => {
            let t = Instant::now();
            for f in frames {
                black_box(serde_json::from_str::<IgnoredAny>(f).expect("json"));
            }
            t.elapsed()
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` and `-- --test` do not run
    // the measurements, only one pass of each on a twentieth of the frames (criterion's
    // test mode, and ours): a smoke test that runs in seconds even unoptimised.
    let args: Vec<String> = std::env::args().collect();
    let measuring = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test");
    let profiling = std::env::var("INGEST_PROFILE").ok();
    let scale = if measuring || profiling.is_some() {
        1
    } else {
        20
    };
    let rules = common::rules();
    let (frames, decisions) = common::example_frames(GROUPS / scale);
    let examples = Set {
        name: "examples",
        frames,
        decisions,
    };
    let (frames, decisions) = common::generated_frames(CONVERSATIONS / scale);
    let generated = Set {
        name: "generated",
        frames,
        decisions,
    };
    let sets = [examples, generated];
    // `INGEST_PROFILE=generated:0` (set name, variant index in `VARIANTS`): one pass of
    // that variant only, for `valgrind --tool=callgrind` (instruction counts are stable
    // on a noisy machine; compare with the same run of another variant).
    if let Some(spec) = profiling {
        let (set, v) = spec.split_once(':').expect("INGEST_PROFILE=set:variant");
        let set = sets.iter().find(|s| s.name == set).expect("set name");
        let v: usize = v.parse().expect("variant index");
        let d = pass(VARIANTS[v].0, set, &rules);
        println!("{} on {}: {d:?}", VARIANTS[v].1, set.name);
        return;
    }

    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    for set in &sets {
        let mut g = c.benchmark_group(format!("ingest/{}", set.name));
        g.throughput(Throughput::Elements(set.frames.len() as u64));
        for (v, name) in VARIANTS {
            g.bench_function(name, |b| {
                b.iter_custom(|iters| (0..iters).map(|_| pass(v, set, &rules)).sum())
            });
        }
        g.finish();
    }
    c.final_summary();

    let rounds = if measuring {
        std::env::var("INGEST_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(ROUNDS)
    } else {
        1
    };
    println!(
        "\nSummary: {rounds} rounds, each variant reads the whole set once per round, in turn; medians."
    );
    for set in &sets {
        let mut runs: Vec<Vec<Duration>> = vec![Vec::new(); VARIANTS.len()];
        for _ in 0..rounds {
            for (i, (v, _)) in VARIANTS.iter().enumerate() {
                runs[i].push(pass(*v, set, &rules));
            }
        }
        let medians: Vec<Duration> = runs.iter_mut().map(|r| median(r)).collect();
        let n = set.frames.len();
        let bytes: usize = set.frames.iter().map(String::len).sum();
        let rate = |d: Duration| n as f64 / d.as_secs_f64();
        let ours = medians[0].as_secs_f64();
        println!(
            "\n{}: {n} frames, {} B average, {} decisions",
            set.name,
            bytes / n,
            set.decisions
        );
        println!(
            "| {:<34} | {:>10} | {:>8} | {:>21} |",
            "variant", "frames/s", "ns/frame", "time ours / time this"
        );
        println!("|{:-<36}|{:-<12}|{:-<10}|{:-<23}|", "", "", "", "");
        for (i, (_, name)) in VARIANTS.iter().enumerate() {
            println!(
                "| {:<34} | {:>10.0} | {:>8.0} | {:>21.2} |",
                name,
                rate(medians[i]),
                medians[i].as_secs_f64() * 1e9 / n as f64,
                ours / medians[i].as_secs_f64()
            );
        }
        let sonic = medians[3].as_secs_f64();
        let ignored = medians[4].as_secs_f64();
        if !measuring {
            println!("smoke run (one pass, a twentieth of the frames): no verdict on the targets");
            continue;
        }
        println!(
            "targets: ours / sonic Value = {:.2} (< 1.00: {}), ours / IgnoredAny = {:.2} (<= 1.50: {})",
            ours / sonic,
            if ours < sonic { "met" } else { "MISSED" },
            ours / ignored,
            if ours <= 1.5 * ignored {
                "met"
            } else {
                "MISSED"
            },
        );
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}
