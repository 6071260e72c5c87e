#[dq::actor]
struct Email {
    to: String,
}

fn main() {
    let _ = Email { to: String::new() }.to;
}
