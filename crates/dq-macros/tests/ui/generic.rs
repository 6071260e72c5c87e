#[dq::actor]
fn generic<T: serde::Serialize>(value: T) -> T {
    value
}

#[dq::actor]
fn lifetime<'a>(name: String) -> String
where
    'a: 'a,
{
    name
}

fn main() {
    // The fn is still emitted, so calling it adds no error of its own.
    let _ = generic(1);
}
