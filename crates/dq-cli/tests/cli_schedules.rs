//! `dq schedules` lists what the broker records of periodic schedules, and `dq schedules run
//! NAME` enqueues one message of a schedule now. The records are made by the Redis broker's
//! `enqueue_tick`, as a worker's scheduler makes them; the claim rules are checked on the way.

use dq_core::{Broker, Message, ScheduleState, TickClaim, TickOutcome};

use super::cli_admin::{check, stderr, stdout};
use super::*;

fn state(tick: i64) -> ScheduleState {
    ScheduleState {
        name: "nightly".into(),
        actor_name: "build_report".into(),
        queue_name: "reports".into(),
        expression: "0 3 * * *".into(),
        timezone: "Europe/Paris".into(),
        definition: "d1".into(),
        last_tick_ms: tick,
        last_message_id: format!("m-{tick}"),
        claimed_at_ms: tick,
        next_tick_ms: Some(tick + 86_400_000),
        args: vec!["pdf".into(), 30.into()],
        ..Default::default()
    }
}

async fn claim(broker: &RedisBroker, tick: i64, no_overlap: bool) -> TickOutcome {
    let s = state(tick);
    let mut m = Message::new("reports", "build_report", &("pdf", 30), &()).unwrap();
    m.message_id = s.last_message_id.clone();
    let claim = TickClaim {
        schedule: "nightly",
        tick_ms: tick,
        no_overlap,
        busy_ttl_ms: 60_000,
        record_ttl_ms: 60_000,
        state: &s,
    };
    broker.enqueue_tick(&claim, &mut m).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_listed_and_run_on_demand() {
    let scope = Scope::new("cli-schedules");
    let broker = scope.broker().await;
    let o = scope.dq(&["schedules"]);
    check(&o, 0);
    assert!(stdout(&o).contains("No schedules"), "{}", stdout(&o));

    // One enqueue per tick: a tick claimed twice, or an earlier one, enqueues nothing.
    let t = 1_800_000_000_000;
    assert_eq!(claim(&broker, t, true).await, TickOutcome::Enqueued);
    assert_eq!(claim(&broker, t, true).await, TickOutcome::Taken);
    assert_eq!(claim(&broker, t - 1000, true).await, TickOutcome::Taken);
    // no_overlap: the next tick is skipped while the previous message is not released ...
    assert_eq!(
        claim(&broker, t + 1000, true).await,
        TickOutcome::Busy(format!("m-{t}"))
    );
    // ... and enqueued once it is (compare and delete: another id releases nothing).
    broker
        .release_tick("nightly", "someone-else")
        .await
        .unwrap();
    assert!(matches!(
        claim(&broker, t + 2000, true).await,
        TickOutcome::Busy(_)
    ));
    broker
        .release_tick("nightly", &format!("m-{t}"))
        .await
        .unwrap();
    assert_eq!(claim(&broker, t + 3000, true).await, TickOutcome::Enqueued);
    assert_eq!(broker.stats("reports").await.unwrap().ready, 2);

    let o = scope.dq(&["schedules"]);
    check(&o, 0);
    let table = stdout(&o);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "SCHEDULE",
            "EXPRESSION",
            "ZONE",
            "ACTOR",
            "QUEUE",
            "LAST",
            "TICK",
            "NEXT",
            "TICK",
            "LAST",
            "MESSAGE"
        ]
    );
    let row = table.lines().nth(1).unwrap();
    for cell in [
        "nightly",
        "0 3 * * *",
        "Europe/Paris",
        "build_report",
        "reports",
        &format!("m-{}", t + 3000),
    ] {
        assert!(row.contains(cell), "{cell} not in {row}");
    }

    let o = scope.dq(&["schedules", "run", "nightly"]);
    check(&o, 0);
    assert!(stdout(&o).starts_with("Enqueued "), "{}", stdout(&o));
    assert_eq!(broker.stats("reports").await.unwrap().ready, 3);
    let mut consumer = broker.consume("reports", 10).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        got.extend(
            consumer
                .fetch(std::time::Duration::from_secs(1))
                .await
                .unwrap(),
        );
    }
    let manual = Message::decode(&got[2].body).unwrap();
    assert_eq!(manual.actor_name, "build_report");
    assert_eq!(manual.args.get(), r#"["pdf",30]"#);
    assert_eq!(manual.options.get_str("dq_schedule"), Some("nightly"));
    assert!(manual.options.get_str("scheduled_at").is_some());
    consumer.close().await.unwrap();

    let o = scope.dq(&["schedules", "run", "nope"]);
    check(&o, 1);
    assert!(
        stderr(&o).contains("no schedule \"nope\""),
        "{}",
        stderr(&o)
    );
}
