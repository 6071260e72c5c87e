//! Broker URLs without their secrets, for log lines, errors and `Debug` output.

/// `url` with its password, and any `password=` / `pass=` query value, replaced by `***`.
///
/// The user name stays, since it helps to tell deployments apart; a user-info without a colon
/// is redacted whole, because some clients read a lone user-info as the password. The user-info
/// ends at the *last* `@`, so a password that is not percent-encoded (and holds `@`, `/`, `?`
/// or `#`) is still hidden whole. Something that is not a URL is shown as `<unparsable url>`
/// rather than risk printing a secret.
///
/// ```
/// use dq_core::redact_url;
///
/// assert_eq!(redact_url("redis://:hunter2@cache:6379/0"), "redis://:***@cache:6379/0");
/// assert_eq!(
///     redact_url("amqps://ann:p@ss@mq:5671/billing?heartbeat=5"),
///     "amqps://ann:***@mq:5671/billing?heartbeat=5"
/// );
/// assert_eq!(redact_url("redis+unix:///tmp/r.sock?pass=x"), "redis+unix:///tmp/r.sock?pass=***");
/// assert_eq!(redact_url("hunter2"), "<unparsable url>");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return "<unparsable url>".to_owned();
    };
    let (scheme, rest) = url.split_at(scheme_end + 3);
    let mut out = String::with_capacity(url.len());
    out.push_str(scheme);
    let tail = match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..colon]);
                    out.push_str(":***");
                }
                None => out.push_str("***"),
            }
            &rest[at..]
        }
        None => rest,
    };
    redact_query(tail, &mut out);
    out
}

/// Appends `tail` (host, path, query, fragment) with secret query values hidden.
fn redact_query(tail: &str, out: &mut String) {
    let Some(q) = tail.find('?') else {
        out.push_str(tail);
        return;
    };
    let (path, query) = tail.split_at(q + 1);
    let (query, fragment) = match query.find('#') {
        Some(h) => query.split_at(h),
        None => (query, ""),
    };
    out.push_str(path);
    for (i, kv) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match kv.split_once('=') {
            Some((k, _))
                if k.eq_ignore_ascii_case("password") || k.eq_ignore_ascii_case("pass") =>
            {
                out.push_str(k);
                out.push_str("=***");
            }
            _ => out.push_str(kv),
        }
    }
    out.push_str(fragment);
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    fn check(input: &str, expected: &str) {
        assert_eq!(redact_url(input), expected, "{input}");
    }

    #[test]
    fn hides_passwords_in_user_info_and_query() {
        check("redis://127.0.0.1:6379", "redis://127.0.0.1:6379");
        check(
            "redis://:hunter2@127.0.0.1:6379/0",
            "redis://:***@127.0.0.1:6379/0",
        );
        check(
            "rediss://ann:hunter2@cache.example:6380/2",
            "rediss://ann:***@cache.example:6380/2",
        );
        check("redis://hunter2@host", "redis://***@host");
        check("redis://u:p@ss@host/1", "redis://u:***@host/1");
        check("amqp://u:pa/ss@host:1/v", "amqp://u:***@host:1/v");
        check(
            "amqp://host/v?password=x&heartbeat=5#f",
            "amqp://host/v?password=***&heartbeat=5#f",
        );
        check(
            "redis+unix:///tmp/redis.sock?db=1&PASS=x",
            "redis+unix:///tmp/redis.sock?db=1&PASS=***",
        );
        check("redis://:p?a#s@host", "redis://:***@host");
        check(
            "redis://host/0?password=x#insecure",
            "redis://host/0?password=***#insecure",
        );
        check("hunter2", "<unparsable url>");
    }

    #[test]
    fn hides_percent_encoded_passwords_and_lone_user_infos() {
        // "p@ss:w0rd/", percent-encoded as a URL must carry it, in either case of hex digits.
        check(
            "redis://:p%40ss%3Aw0rd%2F@127.0.0.1:6379/0",
            "redis://:***@127.0.0.1:6379/0",
        );
        check(
            "amqp://ann:p%40ss%3aw0rd%2f@mq:5672/%2f",
            "amqp://ann:***@mq:5672/%2f",
        );
        // The same password not encoded at all: still hidden whole.
        check("amqp://ann:p@ss:w0rd/@mq/v", "amqp://ann:***@mq/v");
        // A user name with an encoded colon keeps its name; what follows the real colon goes.
        check("redis://a%3Ab:pw@h", "redis://a%3Ab:***@h");
        // A lone user-info may be a password to some clients: hidden whole.
        check("redis://p%40ss%3Aw0rd%2F@h:1", "redis://***@h:1");
        check("amqp://ann@mq/v", "amqp://***@mq/v");
        // Empty password, and an encoded one in the query.
        check("redis://ann:@h", "redis://ann:***@h");
        check(
            "redis+unix:///s.sock?password=p%40ss%3Aw0rd%2F&db=2",
            "redis+unix:///s.sock?password=***&db=2",
        );
        check("REDIS://:pw@[::1]:6379", "REDIS://:***@[::1]:6379");
    }
}
