#[dq::actor]
fn swap((a, b): (i32, i32), _: u8, ref c: String, d @ _: u8) -> (i32, i32) {
    let _ = (c, d);
    (b, a)
}

fn main() {}
