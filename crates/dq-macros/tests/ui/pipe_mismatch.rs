// A stage whose piped (last) parameter is not of the type the previous stage returns does not
// compile: the result would be appended to its arguments and fail to decode at run time.

#[dq::actor]
fn count_words(text: String) -> usize {
    text.split_whitespace().count()
}

#[dq::actor]
fn double(n: usize) -> Result<usize, String> {
    n.checked_mul(2).ok_or_else(|| "too many words".to_owned())
}

#[dq::actor]
fn shout(greeting: String, name: String) -> String {
    format!("{greeting}, {}!", name.to_uppercase())
}

fn main() -> Result<(), dq::Error> {
    let first = count_words::message("a b c".into())?;
    let doubled = double::piped()?;
    // `shout` takes a `String` last, but `double` returns a `usize`.
    let shouted = shout::piped("hello".into())?;
    let _ = dq::pipe(first).then(doubled).then(shouted);
    Ok(())
}
