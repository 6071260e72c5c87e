//! Reading AMQP URLs, and redacting their secrets before they reach a log line, a `Debug` or an
//! error.

use lapin::uri::AMQPUri;

use crate::error::AmqpBrokerError;

/// The URL used when neither code nor `DQ_AMQP_URL` gives one: RabbitMQ's defaults, as Python
/// Dramatiq's default broker uses.
pub const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The heartbeat we ask for when the URL does not say: short enough that a silently dead peer
/// (a cut network, a frozen node) is noticed in seconds, as Python Dramatiq's 5 s default does,
/// while a clean close or a reset is noticed at once anyway.
const DEFAULT_HEARTBEAT_S: u16 = 10;

/// The largest frame we ask for when the URL does not say (`?frame_max=N` overrides it). The
/// client keeps two buffers of 32 frames per connection, so RabbitMQ's 128 KiB default costs
/// 16 MiB of memory for a worker's two connections; 16 KiB frames cost 2 MiB. A body larger
/// than a frame is simply split over several, and Dramatiq messages are rarely that large.
const DEFAULT_FRAME_MAX: u32 = 16 * 1024;

/// Parses `url`, filling in our defaults where it is silent. Errors never show the password.
pub(crate) fn parse(url: &str) -> Result<AMQPUri, AmqpBrokerError> {
    let invalid = |reason: String| AmqpBrokerError::InvalidUrl {
        url: redact(url),
        reason,
    };
    let scheme = url.split_once("://").map(|(s, _)| s);
    if !matches!(scheme, Some("amqp" | "amqps")) {
        return Err(invalid("the scheme must be amqp:// or amqps://".to_owned()));
    }
    // The parser's messages name the offending part (a port, a query value), never the
    // user-info, so they are safe to show.
    let mut uri: AMQPUri = url.parse().map_err(invalid)?;
    if uri.authority.host.is_empty() {
        return Err(invalid("the url names no host".to_owned()));
    }
    if uri.query.heartbeat.is_none() {
        uri.query.heartbeat = Some(DEFAULT_HEARTBEAT_S);
    }
    if uri.query.frame_max.is_none() {
        uri.query.frame_max = Some(DEFAULT_FRAME_MAX);
    }
    Ok(uri)
}

/// Shared with the other brokers: the password and secret query values become `***`.
pub(crate) use dq_core::redact_url as redact;

#[cfg(test)]
mod tests {
    use super::{parse, redact};

    fn check(input: &str, expected: &str) {
        assert_eq!(redact(input), expected, "{input}");
    }

    #[test]
    fn redacts_passwords() {
        check(DEFAULT_URL_FOR_TEST, "amqp://guest:***@127.0.0.1:5672/%2f");
        check("amqp://127.0.0.1", "amqp://127.0.0.1");
        check(
            "amqps://ann:hunter2@mq.example:5671/billing?heartbeat=5",
            "amqps://ann:***@mq.example:5671/billing?heartbeat=5",
        );
        check("amqp://hunter2@host/v", "amqp://***@host/v");
        check("amqp://u:p@ss@host/v", "amqp://u:***@host/v");
        check("amqp://u:pa/ss@host:1/v", "amqp://u:***@host:1/v");
        check(
            "amqp://host/v?password=x&heartbeat=5#f",
            "amqp://host/v?password=***&heartbeat=5#f",
        );
        check("hunter2", "<unparsable url>");
    }

    const DEFAULT_URL_FOR_TEST: &str = super::DEFAULT_URL;

    #[test]
    fn parses_vhosts_and_fills_in_the_heartbeat() {
        let uri = parse("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap();
        assert_eq!(uri.vhost, "/");
        assert_eq!(uri.query.heartbeat, Some(10));
        let uri = parse("amqps://ann:pw@mq.example/billing?heartbeat=3").unwrap();
        assert_eq!(uri.vhost, "billing");
        assert_eq!(uri.authority.port, 5671);
        assert_eq!(uri.query.heartbeat, Some(3));
    }

    #[test]
    fn fills_in_a_small_frame_max_unless_the_url_sets_one() {
        let uri = parse("amqp://127.0.0.1/%2f").unwrap();
        assert_eq!(uri.query.frame_max, Some(16 * 1024));
        let uri = parse("amqp://127.0.0.1/%2f?frame_max=131072").unwrap();
        assert_eq!(uri.query.frame_max, Some(131072));
    }

    #[test]
    fn rejects_other_schemes_without_showing_the_password() {
        for url in [
            "redis://u:hunter2@host",
            "amqp://u:hunter2@host:notaport/v",
            "u:hunter2@host",
        ] {
            let e = parse(url).unwrap_err().to_string();
            assert!(!e.contains("hunter2"), "{e}");
            assert!(e.starts_with("invalid amqp url"), "{e}");
        }
    }
}
