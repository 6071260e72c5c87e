#[dq::actor]
fn greet(name: &str, bytes: &[u8], point: &(i32, i32), items: Vec<&'static str>) {
    let _ = (name, bytes, point, items);
}

#[dq::actor]
fn show(value: impl std::fmt::Display, items: Vec<impl std::fmt::Debug>) {
    let _ = (value.to_string(), items.len());
}

fn main() {}
