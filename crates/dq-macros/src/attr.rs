//! Parsing and checking the arguments of `#[dq::actor(...)]`.
//!
//! Every argument is `key = value`. Options `ActorOptions` knows get typed values: a literal is
//! checked here (so a bad queue name or a negative time limit is a compile error with its span),
//! anything else is left for rustc to type-check where the generated code uses it, so constants
//! and `60 * 1000` work too. Any other key is an option some middleware declares: its value must
//! be JSON-like (literals, `None`, arrays), and `AppBuilder::build` checks that a middleware knows
//! the key.

use crate::sig::Errors;
use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::{quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, ExprUnary, Ident, Lit, LitStr, Path, Token, UnOp};

/// One `key = value` argument, before its value is interpreted.
struct Arg {
    key: Ident,
    value: ArgValue,
}

enum ArgValue {
    /// `crate = path` is a path, not an expression (`crate = crate` is not a valid expression).
    Crate(Path),
    Expr(Expr),
}

impl Parse for Arg {
    fn parse(input: ParseStream<'_>) -> syn::Result<Arg> {
        // `parse_any` so that `crate = ...` parses: `crate` is a keyword.
        let key = Ident::parse_any(input)?;
        if !input.peek(Token![=]) {
            return Err(syn::Error::new(
                key.span(),
                format!("expected `{key} = <value>`"),
            ));
        }
        input.parse::<Token![=]>()?;
        let value = if key == "crate" {
            if input.peek(LitStr) {
                let s: LitStr = input.parse()?;
                ArgValue::Crate(s.parse_with(Path::parse_mod_style)?)
            } else {
                ArgValue::Crate(Path::parse_mod_style(input)?)
            }
        } else {
            ArgValue::Expr(input.parse()?)
        };
        Ok(Arg { key, value })
    }
}

/// A value that ends up typed in the generated code: checked here when it is a literal, handed
/// to rustc otherwise.
pub(crate) struct Value {
    pub(crate) tokens: TokenStream,
}

/// `max_retries`: a count, or `None` for unlimited (Dramatiq's `max_retries=None`).
pub(crate) enum MaxRetries {
    Unlimited,
    Limit(Value),
}

/// One entry of `throws`: an error type's name, given as a string or as the type itself.
pub(crate) enum Throw {
    Name(LitStr),
    Type(Box<Path>),
}

/// The interpreted arguments of `#[dq::actor(...)]`.
#[derive(Default)]
pub(crate) struct ActorArgs {
    pub(crate) krate: Option<Path>,
    pub(crate) actor_name: Option<Value>,
    pub(crate) queue_name: Option<Value>,
    pub(crate) priority: Option<Value>,
    pub(crate) broker_priority: Option<Value>,
    pub(crate) max_retries: Option<MaxRetries>,
    pub(crate) min_backoff: Option<Value>,
    pub(crate) max_backoff: Option<Value>,
    pub(crate) max_age: Option<Value>,
    pub(crate) time_limit: Option<Value>,
    pub(crate) store_results: Option<Value>,
    pub(crate) result_ttl: Option<Value>,
    pub(crate) notify_shutdown: Option<Value>,
    pub(crate) throws: Option<Vec<Throw>>,
    pub(crate) retry_when: Option<Expr>,
    pub(crate) on_retry_exhausted: Option<Value>,
    /// Middleware-declared options: the key, and an expression building its JSON value.
    pub(crate) extra: Vec<(String, TokenStream)>,
}

impl ActorArgs {
    /// The path generated code reaches dq through: `::dq` unless `crate = ...` says otherwise.
    pub(crate) fn krate(&self) -> TokenStream {
        match &self.krate {
            Some(p) => p.to_token_stream(),
            None => quote!(::dq),
        }
    }
}

/// Parses the attribute's arguments, collecting every error rather than stopping at the first.
pub(crate) fn parse(attr: TokenStream) -> Result<ActorArgs, syn::Error> {
    let args = syn::parse::Parser::parse2(Punctuated::<Arg, Token![,]>::parse_terminated, attr)?;
    let mut out = ActorArgs::default();
    let mut errors = Errors::default();
    let mut seen: Vec<String> = Vec::new();
    for arg in args {
        let name = arg.key.unraw().to_string();
        if seen.contains(&name) {
            errors.push(&arg.key, format!("duplicate option `{name}`"));
            continue;
        }
        seen.push(name.clone());
        if let Err(e) = interpret(&mut out, &name, arg) {
            errors.add(e);
        }
    }
    errors.finish()?;
    Ok(out)
}

fn interpret(out: &mut ActorArgs, name: &str, arg: Arg) -> syn::Result<()> {
    let expr = match arg.value {
        ArgValue::Crate(path) => {
            out.krate = Some(path);
            return Ok(());
        }
        ArgValue::Expr(e) => e,
    };
    match name {
        "actor_name" => out.actor_name = Some(string(name, expr, check_actor_name)?),
        "queue_name" => out.queue_name = Some(string(name, expr, check_queue_name)?),
        "on_retry_exhausted" => {
            out.on_retry_exhausted = Some(string(name, expr, check_actor_name)?);
        }
        "priority" => out.priority = Some(integer(name, expr, IntKind::I32)?),
        "broker_priority" => out.broker_priority = Some(integer(name, expr, IntKind::U8)?),
        "max_retries" => {
            out.max_retries = Some(if is_none(&expr) {
                MaxRetries::Unlimited
            } else {
                MaxRetries::Limit(integer(name, expr, IntKind::U32)?)
            });
        }
        "min_backoff" => out.min_backoff = Some(integer(name, expr, IntKind::Millis)?),
        "max_backoff" => out.max_backoff = Some(integer(name, expr, IntKind::Millis)?),
        "max_age" => out.max_age = Some(integer(name, expr, IntKind::Millis)?),
        "time_limit" => out.time_limit = Some(integer(name, expr, IntKind::Millis)?),
        "result_ttl" => out.result_ttl = Some(integer(name, expr, IntKind::Millis)?),
        "store_results" => out.store_results = Some(boolean(name, expr)?),
        "notify_shutdown" => out.notify_shutdown = Some(boolean(name, expr)?),
        "throws" => out.throws = Some(throws(expr)?),
        "retry_when" => {
            if let Expr::Lit(lit) = &expr {
                return Err(syn::Error::new(
                    lit.span(),
                    "`retry_when` expects a fn(u32, &ActorError) -> bool, such as the name of a fn",
                ));
            }
            out.retry_when = Some(expr);
        }
        _ => {
            let value = json(name, &expr)?;
            out.extra.push((name.to_owned(), value));
        }
    }
    Ok(())
}

fn is_none(expr: &Expr) -> bool {
    matches!(expr, Expr::Path(p) if p.qself.is_none() && p.path.is_ident("None"))
}

fn string(name: &str, expr: Expr, check: fn(&str) -> Result<(), String>) -> syn::Result<Value> {
    match &expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => {
            check(&s.value()).map_err(|msg| syn::Error::new(s.span(), msg))?;
            Ok(Value {
                tokens: s.to_token_stream(),
            })
        }
        Expr::Lit(lit) => Err(syn::Error::new(
            lit.span(),
            format!("`{name}` expects a string"),
        )),
        _ => Ok(Value {
            tokens: typed(&expr, quote!(&'static str)),
        }),
    }
}

fn check_actor_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        Err("an actor name cannot be empty".to_owned())
    } else {
        Ok(())
    }
}

/// Mirrors `dq_core::is_valid_queue_name`, so a bad literal fails at compile time rather than when
/// the registry is built.
fn check_queue_name(s: &str) -> Result<(), String> {
    let mut chars = s.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        Ok(())
    } else {
        Err(format!(
            "invalid queue name {s:?}: queue names match [a-zA-Z_][a-zA-Z0-9._-]*"
        ))
    }
}

#[derive(Clone, Copy)]
enum IntKind {
    I32,
    U8,
    U32,
    Millis,
}

impl IntKind {
    fn rust_type(self) -> TokenStream {
        match self {
            IntKind::I32 => quote!(i32),
            IntKind::U8 => quote!(u8),
            IntKind::U32 => quote!(u32),
            IntKind::Millis => quote!(u64),
        }
    }
}

/// A non-literal option value, bound to its type first so that a mismatch reads "expected `u64`,
/// found `&str`" at the value, rather than an error about the generated struct literal.
pub(crate) fn typed(expr: &Expr, ty: TokenStream) -> TokenStream {
    let ty = respan(ty, expr.span());
    quote_spanned! {expr.span()=>
        {
            let __dq_value: #ty = #expr;
            __dq_value
        }
    }
}

fn integer(name: &str, expr: Expr, kind: IntKind) -> syn::Result<Value> {
    let (negative, lit) = match &expr {
        Expr::Lit(ExprLit { lit, .. }) => (false, lit),
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_),
            expr: inner,
            ..
        }) => match &**inner {
            Expr::Lit(ExprLit { lit, .. }) => (true, lit),
            _ => {
                return Ok(Value {
                    tokens: typed(&expr, kind.rust_type()),
                })
            }
        },
        _ => {
            return Ok(Value {
                tokens: typed(&expr, kind.rust_type()),
            })
        }
    };
    let what = match kind {
        IntKind::I32 => "an integer",
        IntKind::U8 => "an integer from 0 to 255",
        IntKind::U32 => "a non-negative integer or `None` (unlimited)",
        IntKind::Millis => "a non-negative integer number of milliseconds",
    };
    let Lit::Int(int) = lit else {
        return Err(syn::Error::new_spanned(
            &expr,
            format!("`{name}` expects {what}"),
        ));
    };
    let span = expr.span();
    let tokens = match kind {
        IntKind::I32 => {
            let v: i64 = int.base10_parse()?;
            let v = if negative { -v } else { v };
            let v = i32::try_from(v).map_err(|_| {
                syn::Error::new_spanned(&expr, format!("`{name}` must fit in an i32, {v} does not"))
            })?;
            quote_spanned!(span=> #v)
        }
        IntKind::U8 | IntKind::U32 | IntKind::Millis if negative => {
            return Err(syn::Error::new_spanned(
                &expr,
                format!("`{name}` cannot be negative"),
            ));
        }
        IntKind::U8 => {
            let v: u64 = int.base10_parse()?;
            let v = u8::try_from(v).map_err(|_| {
                syn::Error::new_spanned(&expr, format!("`{name}` must be from 0 to 255, not {v}"))
            })?;
            quote_spanned!(span=> #v)
        }
        IntKind::U32 => {
            let v: u32 = int.base10_parse()?;
            quote_spanned!(span=> #v)
        }
        IntKind::Millis => {
            let v: u64 = int.base10_parse()?;
            quote_spanned!(span=> #v)
        }
    };
    Ok(Value { tokens })
}

fn boolean(name: &str, expr: Expr) -> syn::Result<Value> {
    let tokens = match &expr {
        Expr::Lit(ExprLit {
            lit: Lit::Bool(b), ..
        }) => b.to_token_stream(),
        Expr::Lit(lit) => {
            return Err(syn::Error::new(
                lit.span(),
                format!("`{name}` expects `true` or `false`"),
            ))
        }
        _ => typed(&expr, quote!(bool)),
    };
    Ok(Value { tokens })
}

fn throws(expr: Expr) -> syn::Result<Vec<Throw>> {
    fn one(e: Expr) -> syn::Result<Throw> {
        match e {
            Expr::Lit(ExprLit {
                lit: Lit::Str(s), ..
            }) => {
                check_actor_name(&s.value())
                    .map_err(|_| syn::Error::new(s.span(), "an error type name cannot be empty"))?;
                Ok(Throw::Name(s))
            }
            Expr::Path(p) if p.qself.is_none() => Ok(Throw::Type(Box::new(p.path))),
            other => Err(syn::Error::new_spanned(
                other,
                "`throws` lists error types, as types (`BadInput`) or names (`\"BadInput\"`)",
            )),
        }
    }
    match expr {
        Expr::Array(a) => a.elems.into_iter().map(one).collect(),
        other => Ok(vec![one(other)?]),
    }
}

/// Gives every token of `tokens` the span `span`, so that rustc points at the user's value
/// rather than at the whole attribute.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|tt| match tt {
            TokenTree::Group(g) => {
                let mut group = Group::new(g.delimiter(), respan(g.stream(), span));
                group.set_span(span);
                TokenTree::Group(group)
            }
            mut other => {
                other.set_span(span);
                other
            }
        })
        .collect()
}

/// Builds an expression of type `serde_json::Value` for a middleware-declared option.
fn json(name: &str, expr: &Expr) -> syn::Result<TokenStream> {
    let bad = || {
        syn::Error::new_spanned(
            expr,
            format!(
                "`{name}` is not an option dq knows, so it is passed to middleware as JSON: \
                 its value must be a literal, `None`, or an array of these"
            ),
        )
    };
    let value = quote!(__dq_serde_json::Value);
    Ok(match expr {
        Expr::Lit(ExprLit { lit, .. }) => json_lit(&value, lit, false).ok_or_else(bad)?,
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_),
            expr: inner,
            ..
        }) => match &**inner {
            Expr::Lit(ExprLit { lit, .. }) => json_lit(&value, lit, true).ok_or_else(bad)?,
            _ => return Err(bad()),
        },
        Expr::Path(_) if is_none(expr) => quote!(#value::Null),
        Expr::Array(a) => {
            let items = a
                .elems
                .iter()
                .map(|e| json(name, e))
                .collect::<syn::Result<Vec<_>>>()?;
            quote!(#value::Array(::std::vec![#(#items),*]))
        }
        Expr::Group(g) => json(name, &g.expr)?,
        Expr::Paren(p) => json(name, &p.expr)?,
        _ => return Err(bad()),
    })
}

fn json_lit(value: &TokenStream, lit: &Lit, negative: bool) -> Option<TokenStream> {
    Some(match lit {
        Lit::Str(s) if !negative => quote!(#value::String(::std::string::String::from(#s))),
        Lit::Bool(b) if !negative => quote!(#value::Bool(#b)),
        Lit::Int(i) => {
            // Suffixed literals so that large numbers are not read as an overflowing i32.
            if negative {
                let v: i64 = i.base10_parse().ok()?;
                let v = -v;
                quote!(#value::from(#v))
            } else {
                let v: u64 = i.base10_parse().ok()?;
                quote!(#value::from(#v))
            }
        }
        Lit::Float(f) => {
            let v: f64 = f.base10_parse().ok()?;
            let v = if negative { -v } else { v };
            quote!(#value::from(#v))
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> syn::Result<ActorArgs> {
        parse(s.parse().unwrap())
    }

    #[test]
    fn queue_names_follow_dramatiq() {
        for ok in ["default", "_q", "reports.high", "a-b_c.9"] {
            assert!(check_queue_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "9lives", "has space", "-x", "é"] {
            assert!(check_queue_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn builtin_and_extra_options() {
        let a = parse_str(
            r#"queue_name = "q", max_retries = None, crate = crate::dq, rate = [1, "x"], r#priority = 2"#,
        )
        .unwrap();
        assert!(a.queue_name.is_some());
        assert!(matches!(a.max_retries, Some(MaxRetries::Unlimited)));
        assert!(a.priority.is_some());
        assert_eq!(a.krate().to_string(), "crate :: dq");
        assert_eq!(a.extra.len(), 1);
        assert_eq!(a.extra[0].0, "rate");
        assert_eq!(parse_str("").unwrap().krate().to_string(), ":: dq");
    }

    #[test]
    fn every_error_is_reported() {
        let e = parse_str(r#"priority = "x", priority = 1, time_limit = -1, other = f()"#)
            .err()
            .unwrap();
        assert_eq!(e.into_iter().count(), 4);
    }
}
