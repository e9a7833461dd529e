//! Memory of the conversation map, measured two ways at once: live heap bytes (a
//! counting global allocator: what the program holds) and resident set size
//! (`VmRSS` of /proc/self/status: what the machine pays, allocator slack included).
//!
//! Scenarios, each in a fresh process (the bench re-runs itself with the scenario's
//! name, so one scenario's freed memory cannot flatter the next):
//! - `queue N`: N open queue conversations (customer, acd and agent participants, 1 to 20
//!   messages, the intent attribute set), each from a real queue frame through
//!   `parse_frame` and `Store::apply` with the rules deciding. Bytes per conversation.
//! - `bot N`: N open bot-phase conversations as the event loop learns them: a flow-metrics
//!   record (watched), `.customer.start`, `.attributes` with the intent, then a catch-up
//!   read listing the customer and the flow's participant with its attributes.
//! - `evict N`: N queue conversations, two thirds of them closed and evicted after the
//!   grace period, then as many new ones again: does resident memory come back, and is it
//!   reused?
//! - `lifecycles N`: N whole conversation lifecycles (open frame, a busier one a minute
//!   later, the closing one five minutes in) at 50 new conversations per simulated
//!   second, with `Store::evict` every 30 simulated seconds and the daemon's grace
//!   periods, as the event loop runs them. Heap and RSS at every tenth of the run: flat
//!   after warm-up, tombstones included? (The bench's own queue of frames still to come,
//!   five minutes' worth, is counted too; it is full after the first 15,000.)
//! - `silent N`: N conversations that go silent after their first frame and never end,
//!   at 50 per simulated second, evicted the same way: the map's limit (`TRACKED_MAX`)
//!   bounds them long before their 48 hours of idleness are up.
//!
//! `cargo bench --bench memory` runs them all at their full sizes; `bench/memory.sh` does
//! the same with a summary; `cargo bench --bench memory -- queue 100000` runs one.
//! Without `--bench` (`cargo test --benches`, or `-- --test`), each runs small: a smoke test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use genesys_closer::genesys::frames::{
    ConversationEvent, Frame, Source, parse_conversation_body, parse_frame,
};
use genesys_closer::rules::Rules;
use genesys_closer::state::Store;
use tokio::time::Instant;

mod common;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// A counting allocator needs the unsafe trait; it only forwards to the system's.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Relaxed);
        LIVE.fetch_sub(layout.size(), Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Resident set size in bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .expect("VmRSS")
        * 1024
}

fn heap() -> usize {
    LIVE.load(Relaxed)
}

/// What the daemon's event loop uses (src/daemon/event_loop.rs, src/daemon/mod.rs).
const CLOSED_GRACE: Duration = Duration::from_secs(600);
const IDLE_MAX: Duration = Duration::from_secs(48 * 3600);
const EVICT_EVERY: Duration = Duration::from_secs(30);

struct Loop {
    store: Store,
    rules: Rules,
    decisions: usize,
}

impl Loop {
    fn new() -> Loop {
        Loop {
            store: Store::new(),
            rules: common::rules(),
            decisions: 0,
        }
    }

    /// What the event loop does with one socket frame.
    fn frame(&mut self, text: &str, now: Instant) {
        match parse_frame(text, self.rules.attributes()).expect("frame") {
            Frame::Conversation(ev) => self.event(&ev, now),
            Frame::FlowMetric(m) => {
                // `on_discovered`: a conversation new to us becomes known, and watched.
                let ev = ConversationEvent::empty(m.conversation_id.clone(), Source::Flow);
                self.event(&ev, now);
                self.store.set_watched(&m.conversation_id, true);
            }
            _ => {}
        }
    }

    fn event(&mut self, ev: &ConversationEvent, now: Instant) {
        let rules = &self.rules;
        let applied = self.store.apply(ev, now, |c| rules.evaluate(c));
        self.decisions += usize::from(applied.decision.is_some());
    }
}

/// Open queue conversations: customer, acd, agent, 1 to 20 messages.
fn queue(n: usize) {
    let mut rng = fastrand::Rng::with_seed(3);
    let mut lp = Loop::new();
    let now = Instant::now();
    // One conversation first, so lazily built things (rules, thread-locals) are not counted.
    let warm = common::conversation(&mut rng, 3, 5, true);
    lp.frame(&common::queue_frame(&mut rng, &warm, 0, 3), now);
    let (h0, r0) = (heap(), rss());
    for i in 0..n {
        let m = rng.usize(1..=20);
        let mut c = common::conversation(&mut rng, 4, m, i % 4 == 0);
        c.participants.remove(1); // no flow participant: customer, acd, agent
        let f = common::queue_frame(&mut rng, &c, 0, 3);
        lp.frame(&f, now);
    }
    assert_eq!(lp.store.len(), n + 1);
    report("queue", n, h0, r0);
}

/// Open bot-phase conversations: flow metric, `.customer.start`, `.attributes`, a read.
fn bot(n: usize) {
    let mut rng = fastrand::Rng::with_seed(4);
    let mut lp = Loop::new();
    let now = Instant::now();
    let one = |lp: &mut Loop, rng: &mut fastrand::Rng, i: usize| {
        let id = common::uuid(rng);
        let customer = common::uuid(rng);
        let intent = if i.is_multiple_of(4) {
            common::MATCHING_INTENT
        } else {
            common::OTHER_INTENT
        };
        for f in common::bot_frames(rng, &id, &customer, intent) {
            lp.frame(&f, now);
        }
        let read = common::bot_read(rng, &id, &customer, intent);
        let ev = parse_conversation_body(&read, None, lp.rules.attributes()).expect("read");
        lp.event(&ev, now);
    };
    one(&mut lp, &mut rng, 1);
    let (h0, r0) = (heap(), rss());
    for i in 0..n {
        one(&mut lp, &mut rng, i);
    }
    assert_eq!(lp.store.len(), n + 1);
    report("bot", n, h0, r0);
}

fn report(shape: &str, n: usize, h0: usize, r0: usize) {
    let (h1, r1) = (heap(), rss());
    println!(
        "{shape:<6} {n:>8} open conversations: heap {:>6.1} B/conversation, RSS {:>6.1} B/conversation \
         (heap +{:.1} MiB, RSS +{:.1} MiB)",
        (h1 - h0) as f64 / n as f64,
        r1.saturating_sub(r0) as f64 / n as f64,
        (h1 - h0) as f64 / 1048576.0,
        r1.saturating_sub(r0) as f64 / 1048576.0,
    );
}

fn mib(b: usize) -> f64 {
    b as f64 / 1048576.0
}

/// Mass eviction: does memory come back, and is it reused?
fn evict(n: usize) {
    let mut rng = fastrand::Rng::with_seed(5);
    let mut lp = Loop::new();
    let t0 = Instant::now();
    let (h0, r0) = (heap(), rss());
    let fill = |lp: &mut Loop, rng: &mut fastrand::Rng, count: usize, now: Instant| {
        for i in 0..count {
            let m = rng.usize(1..=20);
            let mut c = common::conversation(rng, 4, m, false);
            c.participants.remove(1);
            lp.frame(&common::queue_frame(rng, &c, 0, 3), now);
            // Two in three close at once.
            if i % 3 != 0 {
                lp.frame(&common::queue_frame(rng, &c, 2, 3), now);
            }
        }
    };
    fill(&mut lp, &mut rng, n, t0);
    let (h1, r1) = (heap(), rss());
    let later = t0 + CLOSED_GRACE + Duration::from_secs(1);
    let (_, gone) = lp.store.evict(later, CLOSED_GRACE, IDLE_MAX);
    let (h2, r2) = (heap(), rss());
    fill(&mut lp, &mut rng, gone, later);
    let (h3, r3) = (heap(), rss());
    println!(
        "evict  {n:>8} conversations tracked: heap {:.1} MiB, RSS {:.1} MiB over the start",
        mib(h1 - h0),
        mib(r1.saturating_sub(r0))
    );
    println!(
        "       {gone:>8} closed ones evicted ({} left): heap {:.1} MiB, RSS {:.1} MiB \
         (tombstones included)",
        lp.store.len() - gone,
        mib(h2.saturating_sub(h0)),
        mib(r2.saturating_sub(r0))
    );
    println!(
        "       {gone:>8} new ones tracked again: heap {:.1} MiB, RSS {:.1} MiB",
        mib(h3.saturating_sub(h0)),
        mib(r3.saturating_sub(r0))
    );
}

/// Whole lifecycles at a steady rate, evicted as the event loop evicts.
fn lifecycles(n: usize) {
    const RATE: u64 = 50; // new conversations per simulated second
    let mut rng = fastrand::Rng::with_seed(6);
    let mut lp = Loop::new();
    let t0 = Instant::now();
    // (due, conversation, stage) of frames still to come, in due order per stage.
    let mut pending: std::collections::VecDeque<(Duration, common::Generated, usize)> =
        std::collections::VecDeque::new();
    let mut later: std::collections::VecDeque<(Duration, common::Generated)> =
        std::collections::VecDeque::new();
    let mut evicted_at = Duration::ZERO;
    let checkpoints = 10;
    println!(
        "lifecycles: {n} at {RATE}/s simulated; open frame, busier frame at +60 s, closing frame at \
         +300 s"
    );
    println!(
        "| {:>10} | {:>9} | {:>8} | {:>9} | {:>9} |",
        "lifecycles", "sim hours", "tracked", "heap MiB", "RSS MiB"
    );
    let (h0, r0) = (heap(), rss());
    for i in 0..n {
        let at = Duration::from_millis(i as u64 * 1000 / RATE);
        // Frames due by now, oldest first (busier frames, then closing frames).
        while pending.front().is_some_and(|(due, _, _)| *due <= at) {
            let (due, c, stage) = pending.pop_front().expect("front");
            lp.frame(&common::queue_frame(&mut rng, &c, stage, 3), t0 + due);
            later.push_back((due + Duration::from_secs(240), c));
        }
        while later.front().is_some_and(|(due, _)| *due <= at) {
            let (due, c) = later.pop_front().expect("front");
            lp.frame(&common::queue_frame(&mut rng, &c, 2, 3), t0 + due);
        }
        if at.saturating_sub(evicted_at) >= EVICT_EVERY {
            evicted_at = at;
            lp.store.evict(t0 + at, CLOSED_GRACE, IDLE_MAX);
        }
        let (p, m) = (rng.usize(2..=5), rng.usize(1..=20));
        let c = common::conversation(&mut rng, p, m, i % 4 == 0);
        lp.frame(&common::queue_frame(&mut rng, &c, 0, 3), t0 + at);
        pending.push_back((at + Duration::from_secs(60), c, 1));
        if (i + 1) % (n / checkpoints).max(1) == 0 {
            println!(
                "| {:>10} | {:>9.2} | {:>8} | {:>9.1} | {:>9.1} |",
                i + 1,
                at.as_secs_f64() / 3600.0,
                lp.store.len(),
                mib(heap().saturating_sub(h0)),
                mib(rss().saturating_sub(r0)),
            );
        }
    }
    println!("decisions: {}", lp.decisions);
}

/// Conversations that never end: only the map's limit bounds them within 48 hours.
fn silent(n: usize) {
    const RATE: u64 = 50;
    let mut rng = fastrand::Rng::with_seed(7);
    let mut lp = Loop::new();
    let t0 = Instant::now();
    let mut evicted_at = Duration::ZERO;
    println!("silent: {n} conversations at {RATE}/s simulated, one frame each, none ends");
    println!(
        "| {:>13} | {:>9} | {:>8} | {:>9} | {:>9} |",
        "conversations", "sim hours", "tracked", "heap MiB", "RSS MiB"
    );
    let (h0, r0) = (heap(), rss());
    for i in 0..n {
        let at = Duration::from_millis(i as u64 * 1000 / RATE);
        if at.saturating_sub(evicted_at) >= EVICT_EVERY {
            evicted_at = at;
            lp.store.evict(t0 + at, CLOSED_GRACE, IDLE_MAX);
        }
        let (p, m) = (rng.usize(2..=5), rng.usize(1..=20));
        let c = common::conversation(&mut rng, p, m, false);
        lp.frame(&common::queue_frame(&mut rng, &c, 0, 3), t0 + at);
        if (i + 1) % (n / 10).max(1) == 0 {
            println!(
                "| {:>13} | {:>9.2} | {:>8} | {:>9.1} | {:>9.1} |",
                i + 1,
                at.as_secs_f64() / 3600.0,
                lp.store.len(),
                mib(heap().saturating_sub(h0)),
                mib(rss().saturating_sub(r0)),
            );
        }
    }
}

const FULL: [(&str, usize); 5] = [
    ("queue", 100_000),
    ("bot", 100_000),
    ("evict", 200_000),
    ("lifecycles", 1_000_000),
    ("silent", 1_000_000),
];

fn run(name: &str, n: usize) {
    match name {
        "queue" => queue(n),
        "bot" => bot(n),
        "evict" => evict(n),
        "lifecycles" => lifecycles(n),
        "silent" => silent(n),
        other => panic!("unknown scenario {other}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let measuring = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test");
    let plain: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    if let Some(name) = plain.first() {
        let n = plain
            .get(1)
            .and_then(|n| n.parse().ok())
            .or_else(|| FULL.iter().find(|(s, _)| s == name).map(|(_, n)| *n))
            .expect("scenario size");
        run(name, n);
        return;
    }
    let exe = std::env::current_exe().expect("own path");
    for (name, full) in FULL {
        let n = if measuring { full } else { full / 100 };
        let status = std::process::Command::new(&exe)
            .args([name, &n.to_string()])
            .status()
            .expect("run scenario");
        assert!(status.success(), "scenario {name} failed");
    }
}
