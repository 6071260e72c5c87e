//! Actors with parameters of many shapes, for `actor_args`: what `#[dq::actor]` generates for
//! each is the code under test. Their bodies only touch their arguments, without panicking.

use std::collections::BTreeMap;

use dq::middleware::Actor;
use serde::{Deserialize, Serialize};

/// A struct parameter, through serde.
#[derive(Debug, Deserialize, Serialize)]
pub(crate) struct Point {
    x: f64,
    y: f64,
    label: Option<String>,
}

/// An enum parameter, through serde.
#[derive(Debug, Deserialize, Serialize)]
pub(crate) enum Shape {
    /// No payload.
    Empty,
    /// A newtype.
    Circle(f64),
    /// Fields.
    Rect {
        /// Width.
        w: u32,
        /// Height.
        h: u32,
    },
}

/// Integers of several widths and an optional one.
#[dq::actor]
pub(crate) fn ints(a: i64, b: u8, c: Option<u32>, d: i128) -> i64 {
    a.wrapping_add(i64::from(b))
        .wrapping_add(i64::from(c.unwrap_or(0)))
        .wrapping_add(d as i64)
}

/// Strings, a list of them and an optional one.
#[dq::actor]
pub(crate) fn texts(s: String, v: Vec<String>, tag: Option<String>) -> usize {
    s.len() + v.len() + tag.map_or(0, |t| t.len())
}

/// Structs, enums, maps and nested containers.
#[dq::actor]
pub(crate) fn shaped(
    p: Point,
    shapes: Vec<Shape>,
    weights: BTreeMap<String, f64>,
    nested: Option<Vec<Option<(u16, bool)>>>,
) -> Result<usize, String> {
    if p.x.is_nan() {
        return Err("not a number".to_owned());
    }
    Ok(shapes.len()
        + weights.len()
        + nested.map_or(0, |n| n.len())
        + usize::from(p.label.is_some()))
}

/// Any JSON value, and floats.
#[dq::actor]
pub(crate) fn loose(value: serde_json::Value, f: f32, g: Option<f64>) -> bool {
    value.is_null() && f.is_finite() && g.is_none()
}

/// No parameters at all.
#[dq::actor]
pub(crate) fn nothing() {}

/// An async actor: its handler decodes the arguments; the future is dropped unpolled.
#[dq::actor]
pub(crate) async fn later(n: u64, flags: Vec<bool>, name: Option<String>) -> u64 {
    n.wrapping_add(flags.len() as u64)
        .wrapping_add(name.map_or(0, |s| s.len() as u64))
}

/// Every actor above.
pub(crate) fn all() -> Vec<Actor> {
    vec![
        ints::actor(),
        texts::actor(),
        shaped::actor(),
        loose::actor(),
        nothing::actor(),
        later::actor(),
    ]
}
