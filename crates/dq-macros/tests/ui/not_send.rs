use std::rc::Rc;

#[dq::actor]
async fn holds_rc(n: u32) -> u32 {
    let rc = Rc::new(n);
    tokio::task::yield_now().await;
    *rc
}

fn main() {}
