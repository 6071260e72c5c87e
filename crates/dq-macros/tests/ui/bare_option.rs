#[dq::actor(notify_shutdown)]
fn bare() {}

#[dq::actor(queue_name("emails"))]
fn call_syntax() {}

fn main() {}
