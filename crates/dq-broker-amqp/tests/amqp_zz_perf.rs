use crate::util::{self, Queue};
use dq_core::{Broker, Token};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perf() {
    let url = util::init();
    let q = Queue::new("perf", &url);
    let broker = util::broker(&url).await;
    let t = Instant::now();
    for i in 0..3000 {
        broker.enqueue(&mut util::msg(&q.name, i)).await.unwrap();
    }
    eprintln!(
        "PERF sequential enqueue: {:.0}/s",
        3000.0 / t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    for b in 0..70 {
        let mut batch: Vec<_> = (0..100).map(|i| util::msg(&q.name, b * 100 + i)).collect();
        broker.enqueue_many(&mut batch).await.unwrap();
    }
    eprintln!(
        "PERF batched enqueue: {:.0}/s",
        7000.0 / t.elapsed().as_secs_f64()
    );
    // concurrent enqueues
    let t = Instant::now();
    let mut hs = vec![];
    for k in 0..8 {
        let b = broker.clone();
        let name = q.name.clone();
        hs.push(tokio::spawn(async move {
            for i in 0..500 {
                b.enqueue(&mut util::msg(&name, k * 1000 + i))
                    .await
                    .unwrap();
            }
        }));
    }
    for h in hs {
        h.await.unwrap();
    }
    eprintln!(
        "PERF 8-task enqueue: {:.0}/s",
        4000.0 / t.elapsed().as_secs_f64()
    );
    let mut c = broker.consume(&q.name, 100).await.unwrap();
    let acker = c.acker();
    let t = Instant::now();
    let mut n = 0;
    while n < 14000 {
        let ds = c.fetch(Duration::from_millis(500)).await.unwrap();
        for d in ds {
            n += 1;
            acker.ack(&[d.token]).await.unwrap();
        }
    }
    eprintln!(
        "PERF consume+ack: {:.0}/s",
        14000.0 / t.elapsed().as_secs_f64()
    );
    let _ = Token::Tag(0);
    c.close().await.unwrap();
}
