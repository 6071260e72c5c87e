//! The fn stays an ordinary fn: calling it runs it right here.

use crate::actors::{add, move_point, nested, send_welcome, sum_later, BadInput, Point};

#[test]
fn sync_fns_run_directly() {
    assert_eq!(add(2, 3), 5);
    assert_eq!(send_welcome("a@b.c".into(), Some(1)).unwrap(), 6);
    let err: BadInput = send_welcome("nobody".into(), None).unwrap_err();
    assert_eq!(err.0, "nobody");
    assert_eq!(nested::nested_actor(Point { x: 3, y: 4 }), 12);
}

#[tokio::test]
async fn async_fns_run_directly() {
    assert_eq!(sum_later(vec![1, 2, 3]).await.unwrap(), 6);
    let p = move_point(Point { x: 0, y: 0 }, "up".into()).await;
    assert_eq!(p, Point { x: 0, y: 1 });
}
