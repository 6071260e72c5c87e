#[dq::actor]
const fn constant() {}

#[dq::actor]
unsafe fn dangerous() {}

#[dq::actor]
extern "C" fn foreign() {}

fn main() {}
