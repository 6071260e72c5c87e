//! The limiters and the barrier against each backend: how many acquisitions each admits over a
//! measured interval, and what a barrier's waiters see.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dq_core::{ActorError, FailureKind};
use dq_ratelimit::{
    Barrier, BucketRateLimiter, ConcurrentRateLimiter, Error, RateLimiter, RateLimiterBackend,
    WindowRateLimiter,
};
use redis::Commands;

use crate::support::{align, now_ms, Keys};

/// Runs `attempts` acquisitions of `limiter` at once; how many were admitted. Permits are
/// held until every attempt is done (a concurrency slot comes back when its permit drops).
async fn burst(limiter: Arc<dyn RateLimiter>, attempts: usize) -> usize {
    let tasks: Vec<_> = (0..attempts)
        .map(|_| {
            let l = limiter.clone();
            tokio::spawn(async move { l.try_acquire().await.unwrap() })
        })
        .collect();
    let mut permits = Vec::new();
    for t in tasks {
        permits.push(t.await.unwrap());
    }
    permits.iter().filter(|p| p.acquired()).count()
}

/// Runs `attempts` acquisitions of `limiter` one after another, `pause` apart; how many were
/// admitted.
async fn trickle(limiter: &dyn RateLimiter, attempts: usize, pause: Duration) -> usize {
    let mut admitted = 0;
    for _ in 0..attempts {
        admitted += usize::from(limiter.try_acquire().await.unwrap().acquired());
        tokio::time::sleep(pause).await;
    }
    admitted
}

async fn check_concurrent(keys: Keys) {
    let backend = keys.backend();
    let limiter = Arc::new(ConcurrentRateLimiter::new(
        backend.clone(),
        &keys.key("conc"),
        3,
    ));

    // acquire raises past the limit, with an error an actor `?`s into a quiet retry.
    let held: Vec<_> = acquire_n(&*limiter, 3).await;
    let err = limiter.acquire().await.unwrap_err();
    assert!(
        matches!(&err, Error::RateLimitExceeded(e) if e.key == keys.key("conc")),
        "{err}"
    );
    assert_eq!(
        ActorError::from(err).kind(),
        &FailureKind::RateLimitExceeded
    );
    let asked = limiter.try_acquire().await.unwrap();
    assert!(!asked.acquired());
    drop(asked); // gives nothing back: it holds nothing
    for p in held {
        p.release().await.unwrap();
    }

    // 24 holders competing for 3 slots, each holding for a while: never more than 3 at once,
    // and every one gets its turn.
    let holding = Arc::new(AtomicI64::new(0));
    let most = Arc::new(AtomicI64::new(0));
    let tasks: Vec<_> = (0..24)
        .map(|_| {
            let (l, holding, most) = (limiter.clone(), holding.clone(), most.clone());
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let p = l.try_acquire().await.unwrap();
                    if p.acquired() {
                        let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(15)).await;
                        holding.fetch_sub(1, Ordering::SeqCst);
                        p.release().await.unwrap();
                        return true;
                    }
                    if Instant::now() > deadline {
                        return false;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap(), "a holder never got a slot");
    }
    let most = most.load(Ordering::SeqCst);
    assert!((1..=3).contains(&most), "{most} holders at once");
    // Every slot came back.
    assert_eq!(burst(limiter, 10).await, 3);
}

/// Acquires `n` permits, asserting each is granted.
async fn acquire_n(limiter: &dyn RateLimiter, n: usize) -> Vec<dq_ratelimit::Permit> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(limiter.acquire().await.unwrap());
    }
    out
}

async fn check_bucket(keys: Keys) {
    let backend = keys.backend();
    let limiter: Arc<dyn RateLimiter> = Arc::new(BucketRateLimiter::new(
        backend.clone(),
        &keys.key("bucket"),
        5,
        Duration::from_millis(1000),
    ));
    // 40 attempts at once early in a bucket: exactly 5 admitted.
    align(1000, 20).await;
    let started = now_ms();
    assert_eq!(burst(limiter.clone(), 40).await, 5);
    // Then spread over more of the same bucket: none.
    assert_eq!(trickle(&*limiter, 12, Duration::from_millis(15)).await, 0);
    assert_eq!(now_ms() / 1000, started / 1000, "still in the same bucket");
    // The next bucket admits 5 more.
    align(1000, 20).await;
    assert_eq!(trickle(&*limiter, 12, Duration::from_millis(15)).await, 5);
}

async fn check_window(keys: Keys) {
    let backend = keys.backend();
    let key = keys.key("window");
    let limiter: Arc<dyn RateLimiter> =
        Arc::new(WindowRateLimiter::new(backend.clone(), &key, 5, 1));
    // A window of 1 s: 5 per second, exactly.
    align(1000, 20).await;
    let started = now_ms();
    assert_eq!(burst(limiter.clone(), 40).await, 5);
    assert_eq!(trickle(&*limiter, 12, Duration::from_millis(15)).await, 0);
    assert_eq!(now_ms() / 1000, started / 1000, "still in the same second");
    align(1000, 20).await;
    assert_eq!(burst(limiter.clone(), 40).await, 5);

    // A window of 2 s: what the first second took is still counted in the second.
    let limiter: Arc<dyn RateLimiter> =
        Arc::new(WindowRateLimiter::new(backend, &keys.key("window2"), 5, 2));
    align(1000, 20).await;
    assert_eq!(trickle(&*limiter, 3, Duration::from_millis(5)).await, 3);
    align(1000, 20).await;
    assert_eq!(
        burst(limiter.clone(), 20).await,
        2,
        "5 in any 2 s, 3 already taken"
    );
    align(1000, 20).await;
    assert_eq!(
        burst(limiter, 20).await,
        3,
        "the first second left the window"
    );
}

async fn check_barrier(keys: Keys) {
    let backend = keys.backend();
    let barrier = Barrier::new(backend.clone(), &keys.key("barrier"));
    assert!(barrier.create(3).await.unwrap());
    assert!(!barrier.create(3).await.unwrap(), "created once");

    // Two parties block; the third clears the barrier and wakes them.
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let b = barrier.clone();
            tokio::spawn(async move { b.wait(true, Some(Duration::from_secs(20))).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        waiters.iter().all(|w| !w.is_finished()),
        "woke before the last party"
    );
    assert!(barrier.wait(false, None).await.unwrap());
    for w in waiters {
        assert!(w.await.unwrap().unwrap());
    }
    // Cleared stays cleared for late arrivals.
    assert!(barrier
        .wait(true, Some(Duration::from_secs(1)))
        .await
        .unwrap());

    // Not cleared: a blocking wait gives up after its timeout, not before.
    let other = Barrier::new(backend.clone(), &keys.key("other"));
    assert!(other.create(2).await.unwrap());
    let started = Instant::now();
    assert!(!other
        .wait(true, Some(Duration::from_millis(300)))
        .await
        .unwrap());
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(
        other.wait(false, None).await.unwrap(),
        "the second party clears it"
    );

    // A barrier that does not exist (never created, or expired) counts as cleared, as in
    // Dramatiq.
    let missing = Barrier::new(backend, &keys.key("missing"));
    assert!(missing.wait(false, None).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_concurrent_limit_is_never_exceeded() {
    check_concurrent(Keys::memory("rl-conc")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_concurrent_limit_is_never_exceeded() {
    check_concurrent(Keys::redis("rl-conc")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bucket_admits_the_limit_per_bucket() {
    check_bucket(Keys::memory("rl-bucket")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_bucket_admits_the_limit_per_bucket() {
    check_bucket(Keys::redis("rl-bucket")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_window_admits_the_limit_per_window() {
    check_window(Keys::memory("rl-window")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_window_admits_the_limit_per_window() {
    check_window(Keys::redis("rl-window")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_barrier_clears_with_the_last_party() {
    check_barrier(Keys::memory("rl-barrier")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_barrier_clears_with_the_last_party() {
    check_barrier(Keys::redis("rl-barrier")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_layout_is_dramatiqs() {
    let keys = Keys::redis("rl-layout");
    let backend = keys.backend();
    let mut redis = keys.client();

    // Concurrent: the bare key holds the number of holders, with the limiter's TTL.
    let conc = ConcurrentRateLimiter::new(backend.clone(), &keys.key("conc"), 2)
        .with_ttl(Duration::from_secs(60));
    let a = conc.acquire().await.unwrap();
    let b = conc.acquire().await.unwrap();
    let v: String = redis.get(keys.key("conc")).unwrap();
    assert_eq!(v, "2");
    let pttl: i64 = redis.pttl(keys.key("conc")).unwrap();
    assert!(pttl > 50_000 && pttl <= 60_000, "{pttl}");
    a.release().await.unwrap();
    b.release().await.unwrap();
    let v: String = redis.get(keys.key("conc")).unwrap();
    assert_eq!(v, "0");
    // A Python worker holding the mutex is respected.
    let _: () = redis.set(keys.key("conc"), "2").unwrap();
    assert!(!conc.try_acquire().await.unwrap().acquired());

    // Bucket: `key@<bucket start ms>`; window: `key@<unix second>`.
    let bucket =
        BucketRateLimiter::new(backend.clone(), &keys.key("b"), 3, Duration::from_secs(10));
    let before = now_ms();
    assert!(bucket.try_acquire().await.unwrap().acquired());
    let after = now_ms();
    let found: Vec<String> = redis.keys(format!("{}@*", keys.key("b"))).unwrap();
    let starts: Vec<u64> = [before, after].iter().map(|t| t - t % 10_000).collect();
    assert!(
        found.len() == 1
            && starts
                .iter()
                .any(|s| found[0] == format!("{}@{s}", keys.key("b"))),
        "{found:?}"
    );
    let window = WindowRateLimiter::new(backend.clone(), &keys.key("w"), 3, 5);
    let before = now_ms() / 1000;
    assert!(window.try_acquire().await.unwrap().acquired());
    let after = now_ms() / 1000;
    let found: Vec<String> = redis.keys(format!("{}@*", keys.key("w"))).unwrap();
    assert!(
        found.len() == 1
            && [before, after]
                .iter()
                .any(|s| found[0] == format!("{}@{s}", keys.key("w"))),
        "{found:?}"
    );
    let pttl: i64 = redis.pttl(&found[0]).unwrap();
    assert!(
        pttl > 4_000 && pttl <= 5_000,
        "window TTL is window seconds: {pttl}"
    );
    // A key another program wrote garbage into is an error, not a limit.
    let _: () = redis.set(keys.key("garbage"), "lots").unwrap();
    let garbage = ConcurrentRateLimiter::new(backend.clone(), &keys.key("garbage"), 2);
    assert!(matches!(
        garbage.try_acquire().await.unwrap_err(),
        Error::NotAnInteger { .. }
    ));

    // Barrier: the count under the bare key, events as a list of "x" under `key@events`.
    let barrier = Barrier::new(backend, &keys.key("bar"));
    assert!(barrier.create(2).await.unwrap());
    let v: String = redis.get(keys.key("bar")).unwrap();
    assert_eq!(v, "2");
    assert!(!barrier.wait(false, None).await.unwrap());
    assert!(barrier.wait(false, None).await.unwrap());
    let v: String = redis.get(keys.key("bar")).unwrap();
    assert_eq!(v, "1");
    let events: Vec<String> = redis
        .lrange(format!("{}@events", keys.key("bar")), 0, -1)
        .unwrap();
    assert_eq!(events, ["x"]);
}

/// A refused `incr` returns between `WATCH` and `EXEC`, its watch still set on the connection,
/// which goes back to the pool. Were the watch kept, the next transaction on that connection (a
/// barrier's event) would be dropped whenever another client wrote the stale key, and waiters
/// would never wake. deadpool-redis `UNWATCH`es every connection it hands out again; this
/// guards that, with one connection so every call reuses the refused one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_refused_updates_leave_no_watch_behind() {
    let keys = Keys::redis("rl-watch");
    let url = keys.url.clone().unwrap();
    // One connection, so every call reuses the one the refused update ran on.
    let backend = Arc::new(keys.redis_backend(&url, 1));
    let mut redis = keys.client();
    let ttl = Duration::from_secs(30);
    let full = keys.key("full");
    let events = keys.key("events");

    assert!(backend.add(&full, 1, ttl).await.unwrap());
    assert!(
        !backend.incr(&full, 1, 1, ttl).await.unwrap(),
        "refused: at the maximum"
    );
    let _: () = redis.set(&full, "0").unwrap(); // another client writes the key
    backend.wait_notify(&events, ttl).await.unwrap();
    assert!(
        backend.wait(&events, Some(Duration::ZERO)).await.unwrap(),
        "the event was posted"
    );

    // The same for a refused incr_and_sum (a window limiter at its limit).
    let window = [keys.key("w@2"), keys.key("w@1")];
    assert!(backend.add(&window[1], 5, ttl).await.unwrap());
    assert!(!backend
        .incr_and_sum(&window[0], &window, 1, 5, ttl)
        .await
        .unwrap());
    let _: () = redis.set(&window[1], "0").unwrap();
    let events2 = keys.key("events2");
    backend.wait_notify(&events2, ttl).await.unwrap();
    assert!(backend.wait(&events2, Some(Duration::ZERO)).await.unwrap());
}
