//! Integration tests of dq-broker-amqp, against the real RabbitMQ at `DQ_AMQP_URL` (default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`). Each test works in queues (or a vhost) of its own
//! and deletes them at the end, even when it fails.

mod amqp_connect;
mod amqp_consume;
mod amqp_declare;
mod amqp_priority;
mod amqp_publish;
mod amqp_reconnect;
mod amqp_vhost;
mod amqp_workers;
mod util;
