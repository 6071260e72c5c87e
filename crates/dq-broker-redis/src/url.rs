//! Redacting secrets from Redis URLs before they reach a log line, a `Debug` or an error.

/// `url` with its password (and any `password=` / `pass=` query value) replaced by `***`.
///
/// The user name stays, since it helps to tell deployments apart; a user-info without a colon
/// is redacted whole, because some clients read a lone user-info as the password.
pub(crate) fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        // Not a URL we can read: show nothing of it rather than risk a secret.
        return "<unparsable url>".to_owned();
    };
    let (scheme, rest) = url.split_at(scheme_end + 3);
    // The user-info ends at the last '@': a password that is not percent-encoded may itself
    // contain '@', '/', '?' or '#', and nothing after the host of a Redis URL holds an '@'.
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
    out.push_str(&redact_query(tail));
    out
}

fn redact_query(tail: &str) -> String {
    let Some(q) = tail.find('?') else {
        return tail.to_owned();
    };
    let (path, query) = tail.split_at(q + 1);
    let (query, fragment) = match query.find('#') {
        Some(h) => query.split_at(h),
        None => (query, ""),
    };
    let parts: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _))
                if k.eq_ignore_ascii_case("password") || k.eq_ignore_ascii_case("pass") =>
            {
                format!("{k}=***")
            }
            _ => kv.to_owned(),
        })
        .collect();
    format!("{path}{}{fragment}", parts.join("&"))
}

#[cfg(test)]
mod tests {
    use super::redact;

    fn check(input: &str, expected: &str) {
        assert_eq!(redact(input), expected, "{input}");
    }

    #[test]
    fn redacts_passwords() {
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
        check(
            "redis+unix:///tmp/redis.sock?db=1&pass=hunter2",
            "redis+unix:///tmp/redis.sock?db=1&pass=***",
        );
        check(
            "redis://host/0?password=x#insecure",
            "redis://host/0?password=***#insecure",
        );
        check("redis://:pa/ss@host:1/2", "redis://:***@host:1/2");
        check("redis://:p?a#s@host", "redis://:***@host");
        check("hunter2", "<unparsable url>");
    }
}
