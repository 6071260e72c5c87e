//! RabbitMQ's management API, when its URL is given: every queue's name, message rates and
//! consumers, which AMQP itself cannot tell.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Rates and consumers of one queue, from the management API.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub(crate) struct QueueRates {
    /// Messages published per second.
    pub(crate) publish_per_s: f64,
    /// Messages delivered per second.
    pub(crate) deliver_per_s: f64,
    /// Messages acked per second.
    pub(crate) ack_per_s: f64,
    /// Consumers (channels) on the queue.
    pub(crate) consumers: u64,
}

#[derive(Deserialize)]
struct Rate {
    #[serde(default)]
    rate: f64,
}

#[derive(Deserialize, Default)]
struct Stats {
    publish_details: Option<Rate>,
    deliver_get_details: Option<Rate>,
    ack_details: Option<Rate>,
}

#[derive(Deserialize)]
struct ApiQueue {
    name: String,
    #[serde(default)]
    consumers: u64,
    #[serde(default)]
    message_stats: Option<Stats>,
}

/// A client of one management API.
#[derive(Clone, Debug)]
pub(crate) struct Management {
    client: reqwest::Client,
    base: reqwest::Url,
    user: String,
    password: Option<String>,
    vhost: String,
}

impl Management {
    pub(crate) fn new(url: &str, vhost: &str) -> crate::Result<Management> {
        let invalid = || crate::Error::InvalidManagementUrl {
            url: dq_core::redact_url(url),
        };
        let mut base = reqwest::Url::parse(url).map_err(|_| invalid())?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid());
        }
        let user = match base.username() {
            "" => "guest".to_owned(),
            u => u.to_owned(),
        };
        let password = base.password().map(str::to_owned);
        let _ = base.set_username("");
        let _ = base.set_password(None);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|_| invalid())?;
        Ok(Management {
            client,
            base,
            user,
            password: password.or_else(|| Some("guest".to_owned())),
            vhost: vhost.to_owned(),
        })
    }

    fn url(&self, path: &[&str]) -> Result<reqwest::Url, String> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| "the management URL cannot have a path".to_owned())?
            .pop_if_empty()
            .extend(path);
        Ok(url)
    }

    async fn get<T: for<'de> Deserialize<'de>>(&self, path: &[&str]) -> Result<T, String> {
        let url = self.url(path)?;
        let response = self
            .client
            .get(url)
            .basic_auth(&self.user, self.password.as_deref())
            .send()
            .await
            .map_err(|e| dq_core::ErrorChain(&e).to_string())?;
        if !response.status().is_success() {
            return Err(format!("the management API answered {}", response.status()));
        }
        response
            .json()
            .await
            .map_err(|e| dq_core::ErrorChain(&e).to_string())
    }

    /// The canonical queues of the vhost (`q.DQ` and `q.XQ` count as `q`).
    pub(crate) async fn queue_names(&self) -> Result<Vec<String>, String> {
        let queues: Vec<ApiQueue> = self.get(&["api", "queues", &self.vhost]).await?;
        let mut names: Vec<String> = queues
            .into_iter()
            .map(|q| dq_core::base_queue_name(&q.name).to_owned())
            .filter(|n| dq_core::is_valid_queue_name(n) && !n.starts_with("dq:"))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// One canonical queue's rates and consumers.
    pub(crate) async fn rates(&self, queue: &str) -> Result<QueueRates, String> {
        let q: ApiQueue = self.get(&["api", "queues", &self.vhost, queue]).await?;
        let stats = q.message_stats.unwrap_or_default();
        let rate = |r: Option<Rate>| r.map(|r| r.rate).unwrap_or(0.0);
        Ok(QueueRates {
            publish_per_s: rate(stats.publish_details),
            deliver_per_s: rate(stats.deliver_get_details),
            ack_per_s: rate(stats.ack_details),
            consumers: q.consumers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_read_as_rabbitmq_writes_them() {
        // The shape of `GET /api/queues/{vhost}/{name}` (trimmed), as RabbitMQ 3.x answers.
        let q: ApiQueue = serde_json::from_str(
            r#"{"name":"default","consumers":2,"messages":5,
                "message_stats":{"publish":10,"publish_details":{"rate":1.5},
                                 "deliver_get":8,"deliver_get_details":{"rate":0.8},
                                 "ack":8,"ack_details":{"rate":0.6}}}"#,
        )
        .unwrap();
        assert_eq!(q.consumers, 2);
        let stats = q.message_stats.unwrap();
        assert_eq!(stats.publish_details.map(|r| r.rate), Some(1.5));
        assert_eq!(stats.ack_details.map(|r| r.rate), Some(0.6));
        // A queue nothing went through yet has no message_stats.
        let idle: ApiQueue = serde_json::from_str(r#"{"name":"idle.DQ"}"#).unwrap();
        assert!(idle.message_stats.is_none());
        assert_eq!(dq_core::base_queue_name(&idle.name), "idle");
    }

    #[test]
    fn urls_take_the_vhost_as_one_segment() {
        let m = Management::new("http://u:p@localhost:15672/", "/").unwrap();
        assert_eq!(m.user, "u");
        assert_eq!(m.password.as_deref(), Some("p"));
        assert_eq!(
            m.url(&["api", "queues", "/", "q"]).unwrap().as_str(),
            "http://localhost:15672/api/queues/%2F/q"
        );
        assert!(Management::new("amqp://localhost", "/").is_err());
        assert!(Management::new("not a url", "/").is_err());
    }
}
