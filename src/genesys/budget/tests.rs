//! The budget's tests: the order of priorities, pauses, cancelled waiters, the priority
//! of each call and the pace.

use super::*;

/// One permit per `period`, no burst: the budget is exhausted after one request.
fn slow(period: Duration) -> Arc<Budget> {
    let quota = Quota::with_period(period)
        .expect("non-zero period")
        .allow_burst(NonZeroU32::MIN);
    Arc::new(Budget::with_quota(quota))
}

#[test]
fn every_priority_has_its_metrics_label() {
    // The metrics put these series at zero before the first request.
    assert_eq!(
        Priority::ALL.map(Priority::as_str),
        crate::metrics::BUDGET_PRIORITIES
    );
}

async fn wait_for_depths(b: &Budget, want: [usize; 3]) {
    tokio::time::timeout(Duration::from_secs(2), async {
        while b.queued() != want {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("queue depths stayed {:?}, want {want:?}", b.queued()));
}

#[tokio::test(flavor = "current_thread")]
async fn subscriptions_then_closes_overtake_queued_reads() {
    let b = slow(Duration::from_millis(100));
    // Spend the only cell: everything below has to queue.
    b.acquire(Priority::Read).await;
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    // Spawned in this order, and (current-thread runtime) first polled in this order
    // at the next await, long before the next cell 100 ms from now.
    for (p, name) in [
        (Priority::Read, "read1"),
        (Priority::Read, "read2"),
        (Priority::Subscribe, "sub"),
        (Priority::Close, "close1"),
        (Priority::Close, "close2"),
    ] {
        let (b, order) = (b.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            b.acquire(p).await;
            order.lock().unwrap().push(name);
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(3), t)
            .await
            .expect("every request gets its permit")
            .unwrap();
    }
    assert_eq!(
        *order.lock().unwrap(),
        ["sub", "close1", "close2", "read1", "read2"]
    );
    assert_eq!(b.queued(), [0, 0, 0]);
}

#[tokio::test]
async fn a_pause_holds_every_priority_until_it_ends() {
    let b = Arc::new(Budget::unlimited());
    let start = Instant::now();
    b.pause_for(Duration::from_millis(300));
    // A shorter Retry-After does not shorten the pause.
    b.pause_for(Duration::from_millis(10));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for p in Priority::ALL {
        let (b, done) = (b.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            b.acquire(p).await;
            done.fetch_add(1, Ordering::SeqCst);
        }));
    }
    wait_for_depths(&b, [1, 1, 1]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(done.load(Ordering::SeqCst), 0, "no permit during the pause");
    assert_eq!(b.queued(), [1, 1, 1]);
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(3), t)
            .await
            .expect("the pause ends")
            .unwrap();
    }
    assert_eq!(done.load(Ordering::SeqCst), 3);
    // A lower bound only: sleeping can run late, never early.
    assert!(start.elapsed() >= Duration::from_millis(300));
    // Once over, requests go straight through again.
    let p = b.acquire(Priority::Read).await;
    assert!(p.waited() < SLOW_WAIT);
}

#[tokio::test]
async fn a_cancelled_waiter_does_not_block_the_ones_behind_it() {
    let b = slow(Duration::from_millis(100));
    b.acquire(Priority::Close).await;
    // A close queues, then its caller gives up.
    let cancelled = {
        let b = b.clone();
        tokio::spawn(async move { b.acquire(Priority::Close).await })
    };
    wait_for_depths(&b, [0, 1, 0]).await;
    cancelled.abort();
    assert!(cancelled.await.unwrap_err().is_cancelled());
    assert_eq!(b.queued(), [0, 0, 0], "the cancelled waiter is not counted");
    // A read queued behind it still gets through.
    let read = {
        let b = b.clone();
        tokio::spawn(async move { b.acquire(Priority::Read).await })
    };
    tokio::time::timeout(Duration::from_secs(2), read)
        .await
        .expect("the read is not stuck behind the cancelled close")
        .unwrap();

    // All waiters cancelled: the dispatcher ends, and the next request restarts it.
    let lone = {
        let b = b.clone();
        tokio::spawn(async move { b.acquire(Priority::Subscribe).await })
    };
    wait_for_depths(&b, [1, 0, 0]).await;
    lone.abort();
    let _ = lone.await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    tokio::time::timeout(Duration::from_secs(2), b.acquire(Priority::Read))
        .await
        .expect("a later request is served");
    assert_eq!(b.queued(), [0, 0, 0]);
}

#[test]
fn priority_follows_method_and_path() {
    let cases = [
        (
            Method::PATCH,
            "/api/v2/conversations/messages/c1",
            Priority::Close,
        ),
        (
            Method::PATCH,
            "/api/v2/conversations/messages/c1/participants/p1",
            Priority::Close,
        ),
        (
            Method::POST,
            "/api/v2/conversations/c1/disconnect",
            Priority::Close,
        ),
        (
            Method::POST,
            "/api/v2/conversations/messages/c1/communications/m1/messages",
            Priority::Close,
        ),
        (
            Method::POST,
            "/api/v2/conversations/messages/c1/participants/p1/communications/m1/wrapup",
            Priority::Close,
        ),
        (
            Method::POST,
            "/api/v2/notifications/channels",
            Priority::Subscribe,
        ),
        (
            Method::HEAD,
            "/api/v2/notifications/channels/ch1",
            Priority::Subscribe,
        ),
        (
            Method::PUT,
            "/api/v2/notifications/channels/ch1/subscriptions?ignoreErrors=true",
            Priority::Subscribe,
        ),
        (
            Method::GET,
            "/api/v2/notifications/availabletopics?expand=transports",
            Priority::Subscribe,
        ),
        (
            Method::GET,
            "/api/v2/conversations/messages/c1",
            Priority::Read,
        ),
        (Method::GET, "/api/v2/conversations/c1", Priority::Read),
        (
            Method::GET,
            "/api/v2/conversations/messages/c1/communications/m1/messages",
            Priority::Read,
        ),
        (
            Method::POST,
            "/api/v2/analytics/flows/activity/query?pageSize=100",
            Priority::Read,
        ),
        // A conversation's own message list is not a farewell.
        (
            Method::POST,
            "/api/v2/conversations/messages",
            Priority::Read,
        ),
    ];
    for (method, path, want) in cases {
        assert_eq!(priority_of(&method, path), want, "{method} {path}");
    }
}

#[tokio::test]
async fn what_a_pause_held_goes_out_at_the_steady_pace_not_at_once() {
    // 600 a minute: one permit per 100 ms, and a burst of 60 that fills up during
    // the pause. Without pacing, all ten would go out the moment the pause ends.
    let b = Arc::new(Budget::new(600));
    b.pause_for(Duration::from_millis(200));
    let times = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (b, times) = (b.clone(), times.clone());
        tasks.push(tokio::spawn(async move {
            b.acquire(Priority::Close).await;
            times.lock().unwrap().push(Instant::now());
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(5), t)
            .await
            .expect("every request gets its permit")
            .unwrap();
    }
    let mut times = times.lock().unwrap().clone();
    times.sort();
    // A lower bound only (a sleep can run late, never early): ten permits spaced
    // 100 ms apart span at least 900 ms.
    let span = times[9] - times[0];
    assert!(
        span >= Duration::from_millis(900),
        "released within {span:?}"
    );
    // Once the queue is empty the burst is available again.
    assert!(b.acquire(Priority::Read).await.waited() < SLOW_WAIT);
}

#[tokio::test]
async fn new_allows_a_tenth_of_the_minute_at_once() {
    let b = Budget::new(600);
    for _ in 0..60 {
        assert!(b.acquire(Priority::Read).await.waited() < SLOW_WAIT);
    }
    assert_eq!(b.waited_total(), 0);
    // The burst is spent: the next request has to queue.
    let next = b.acquire(Priority::Read);
    tokio::pin!(next);
    // (A zero timeout polls the request exactly once.)
    assert!(
        tokio::time::timeout(Duration::ZERO, &mut next)
            .await
            .is_err()
    );
    assert_eq!(b.queued(), [0, 0, 1]);
    next.await;
    // A zero rate is treated as one per minute rather than refused.
    let b = Budget::new(0);
    b.acquire(Priority::Close).await;
}
