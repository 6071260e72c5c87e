struct Opaque;

#[dq::actor]
fn takes_opaque(value: Opaque) -> usize {
    let _ = value;
    0
}

fn main() {}
