//! Unique, debounced and throttled messages: a unique send while the same call is queued or
//! running is refused and says which message holds the key; a debounced send replaces the
//! older one still waiting, which is skipped; a throttled key lets one message through per
//! window. Needs no services: the stub broker locks as Redis does (RabbitMQ cannot, and
//! refuses these sends).
//!
//! ```text
//! cargo run --example unique
//! ```

use std::time::Duration;

use dq::{SendOptions, SendOutcome, UniqueUntil};

/// Rebuilding a report is expensive: one at a time per report, whoever asks.
#[dq::actor(unique_for = 600_000)]
fn rebuild_report(report_id: u64) {
    println!("rebuilding report {report_id}");
}

/// Indexes a document once its edits have settled.
#[dq::actor]
fn reindex(doc: String, revision: u32) {
    println!("reindexing {doc} at revision {revision}");
}

/// Sends a welcome mail; at most one per user per window.
#[dq::actor]
fn notify(user: String, text: String) {
    println!("telling {user}: {text}");
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let broker = dq::StubBroker::new();
    dq::set_broker(broker.clone())?;

    // Unique (the actor says `unique_for`): the second send of the same call is refused.
    let first = rebuild_report::send(42).await?;
    let second = rebuild_report::send(42).await?;
    let other = rebuild_report::send(7).await?;
    println!("report 42: {}", first.outcome());
    println!("report 42 again: {}", second.outcome());
    assert_eq!(second.duplicate_of(), Some(first.message_id.as_str()));
    assert_eq!(*other.outcome(), SendOutcome::Enqueued);

    // Per send: its own key, released as soon as the message starts.
    let opts = SendOptions::new()
        .unique_for(Duration::from_secs(60))
        .unique_until(UniqueUntil::Started)
        .unique_key("welcome:ada");
    let hello = notify::send_with_options("ada".into(), "welcome".into(), opts.clone()).await?;
    let again = notify::send_with_options("ada".into(), "welcome!".into(), opts).await?;
    println!("welcome: {}, then {}", hello.outcome(), again.outcome());

    // Debounce: five quick edits, one reindex (the last), 300 ms after it.
    let settle = SendOptions::new()
        .debounce(Duration::from_millis(300))
        .unique_key("reindex:handbook");
    for revision in 1..=5 {
        let sent = reindex::send_with_options("handbook".into(), revision, settle.clone()).await?;
        println!("edit {revision}: {}", sent.outcome());
    }

    // Throttle: one reminder per user per second, however often it is asked for.
    let throttle = SendOptions::new()
        .throttle(Duration::from_secs(1))
        .unique_key("remind:bob");
    for i in 0..3 {
        let sent =
            notify::send_with_options("bob".into(), format!("reminder {i}"), throttle.clone())
                .await?;
        println!("reminder {i}: {}", sent.outcome());
    }

    // Ran: report 42 and 7 once each, one welcome, reindex at revision 5 (the four older edits
    // are skipped with a log line), and reminder 0.
    dq::Worker::new(dq::App::global()?, dq::WorkerOptions::default())
        .run_until_drained(Duration::from_secs(30))
        .await?;
    Ok(())
}
