//! Checking the actor fn's signature, and reading its parameters and return type.
//!
//! Every check here corresponds to something the worker cannot do: call a fn whose parameter types
//! it does not know (generics, `impl Trait`), decode JSON into a borrowed value, bind a message's
//! arguments to a pattern, or call an `unsafe` or foreign fn on data from the network.

use proc_macro2::Span;
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{
    FnArg, GenericArgument, Ident, ItemFn, Pat, PatIdent, PathArguments, ReturnType, Type, TypePath,
};

/// The most parameters an actor can take: serde serializes tuples of up to 16 elements, and the
/// arguments are sent as one tuple so that a message costs one serialization.
const MAX_PARAMS: usize = 16;

/// One parameter, ready for generated code.
pub(crate) struct Param {
    /// The binding, without `mut`.
    pub(crate) ident: Ident,
    /// The keyword-argument name (`r#type` is `type`).
    pub(crate) name: String,
    /// The type, rewritten to mean the same inside the companion module.
    pub(crate) ty: Type,
    /// For a `State<T>` parameter, `T`: taken from the app, not from the message.
    pub(crate) state: Option<Type>,
}

/// How the fn's return value becomes an actor result.
pub(crate) enum Returns {
    /// No return type or `()`: the result is `null`.
    Unit,
    /// `Result<T, E>`: `Ok` is serialized, `Err` is a failure.
    Result(Span),
    /// Anything else: serialized as is.
    Value(Span),
}

/// What the generated code needs to know about the fn.
pub(crate) struct ActorSig {
    pub(crate) params: Vec<Param>,
    pub(crate) is_async: bool,
    pub(crate) returns: Returns,
    /// The return type as written (`None` for none), rewritten to mean the same inside the
    /// companion module, for its `Output` alias.
    pub(crate) ret_ty: Option<Type>,
}

/// Checks the signature, reporting every problem at once.
pub(crate) fn check(f: &ItemFn) -> syn::Result<ActorSig> {
    let sig = &f.sig;
    let mut errors = Errors::default();
    if let Some(c) = &sig.constness {
        errors.push(c, "an actor cannot be a `const fn`");
    }
    if let Some(u) = &sig.unsafety {
        errors.push(
            u,
            "an actor cannot be an `unsafe fn`: the worker calls it with arguments from a \
             message, so nothing can uphold its safety contract",
        );
    }
    if let Some(abi) = &sig.abi {
        errors.push(abi, "an actor cannot be an `extern` fn");
    }
    if !sig.generics.params.is_empty() {
        errors.push(
            &sig.generics,
            "an actor cannot be generic: the worker decodes arguments into concrete types",
        );
    }
    if let Some(w) = &sig.generics.where_clause {
        errors.push(w, "an actor cannot have a `where` clause");
    }
    if let Some(v) = &sig.variadic {
        errors.push(v, "an actor cannot be variadic");
    }
    if sig.inputs.len() > MAX_PARAMS {
        errors.push(
            &sig.inputs,
            format!("an actor takes at most {MAX_PARAMS} parameters; group some into a struct"),
        );
    }
    let mut params = Vec::with_capacity(sig.inputs.len());
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => errors.push(
                r,
                "an actor cannot take `self`: make it a free fn (it may call the method)",
            ),
            FnArg::Typed(pt) => {
                let ident = match &*pt.pat {
                    Pat::Ident(PatIdent {
                        by_ref: None,
                        subpat: None,
                        ident,
                        ..
                    }) => Some(ident.clone()),
                    Pat::Wild(w) => {
                        errors.push(
                            w,
                            "actor parameters need names: the name is the parameter's keyword \
                             argument name",
                        );
                        None
                    }
                    other => {
                        errors.push(
                            other,
                            "actor parameters must be plain names such as `email: String`, not \
                             patterns",
                        );
                        None
                    }
                };
                let mut ty = (*pt.ty).clone();
                check_type(&mut ty, &mut errors);
                let state = state_type(&ty);
                if let Some(ident) = ident {
                    params.push(Param {
                        name: ident.unraw().to_string(),
                        ident,
                        ty,
                        state,
                    });
                }
            }
        }
    }
    let returns = match &sig.output {
        ReturnType::Default => Returns::Unit,
        ReturnType::Type(_, ty) if matches!(&**ty, Type::Tuple(t) if t.elems.is_empty()) => {
            Returns::Unit
        }
        ReturnType::Type(_, ty) if is_result(ty) => Returns::Result(ty.span()),
        ReturnType::Type(_, ty) => Returns::Value(ty.span()),
    };
    let ret_ty = match &sig.output {
        ReturnType::Default => None,
        ReturnType::Type(_, ty) => {
            let mut ty = (**ty).clone();
            // Only the rewriting is wanted here: a return type may be borrowed (`&'static str`
            // serializes fine), so what check_type says against parameters does not apply.
            check_type(&mut ty, &mut Errors::default());
            Some(ty)
        }
    };
    errors.finish()?;
    Ok(ActorSig {
        params,
        is_async: sig.asyncness.is_some(),
        returns,
        ret_ty,
    })
}

/// Whether `ty` has an `impl Trait` anywhere: such a type cannot be named by a type alias.
pub(crate) fn has_impl_trait(ty: &Type) -> bool {
    fn walk(tokens: proc_macro2::TokenStream) -> bool {
        tokens.into_iter().any(|t| match t {
            proc_macro2::TokenTree::Ident(i) => i == "impl",
            proc_macro2::TokenTree::Group(g) => walk(g.stream()),
            _ => false,
        })
    }
    walk(ty.to_token_stream())
}

/// `T` of a `State<T>` parameter, recognised by the last path segment (`State`, `dq::State`,
/// an import under another path), as `Result` is below: a macro cannot resolve names.
fn state_type(ty: &Type) -> Option<Type> {
    match ty {
        Type::Path(TypePath { qself: None, path }) => {
            let last = path.segments.last()?;
            if last.ident != "State" {
                return None;
            }
            match &last.arguments {
                PathArguments::AngleBracketed(a) if a.args.len() == 1 => match &a.args[0] {
                    GenericArgument::Type(t) => Some(t.clone()),
                    _ => None,
                },
                _ => None,
            }
        }
        Type::Group(g) => state_type(&g.elem),
        Type::Paren(p) => state_type(&p.elem),
        _ => None,
    }
}

/// `Result<..>` by its last path segment, whatever its path (`std::io::Result`, `anyhow::Result`,
/// a crate's own alias): a macro cannot see through type aliases, and these names are the
/// convention for "may fail".
fn is_result(ty: &Type) -> bool {
    match ty {
        Type::Path(TypePath { qself: None, path }) => {
            path.segments.last().is_some_and(|s| s.ident == "Result")
        }
        Type::Group(g) => is_result(&g.elem),
        Type::Paren(p) => is_result(&p.elem),
        _ => false,
    }
}

/// Rejects parameter types that cannot be decoded into, and rewrites a leading `super::` to
/// `super::super::`, since the type is also written inside the companion module, one level down.
/// A leading `Output` becomes `super::Output`: inside the module, `Output` is the generated alias
/// of the actor's return type, which would shadow the user's own `Output` type.
fn check_type(ty: &mut Type, errors: &mut Errors) {
    match ty {
        Type::Reference(r) => {
            let hint = match &*r.elem {
                Type::Path(p) if p.qself.is_none() && p.path.is_ident("str") => {
                    "use `String` instead of `&str`".to_owned()
                }
                Type::Slice(_) => "use `Vec<T>` instead of `&[T]`".to_owned(),
                _ => "use `T` instead of `&T`".to_owned(),
            };
            errors.push(
                r,
                format!(
                    "actor parameters must be owned types, since they are decoded from the \
                     message: {hint}"
                ),
            );
        }
        Type::ImplTrait(t) => errors.push(
            t,
            "an actor parameter cannot be `impl Trait`: the worker decodes arguments into \
             concrete types",
        ),
        Type::Path(p) => {
            if let Some(q) = &mut p.qself {
                check_type(&mut q.ty, errors);
            }
            check_path(&mut p.path, p.qself.is_none(), errors);
        }
        Type::Array(a) => check_type(&mut a.elem, errors),
        Type::Slice(s) => check_type(&mut s.elem, errors),
        Type::Group(g) => check_type(&mut g.elem, errors),
        Type::Paren(p) => check_type(&mut p.elem, errors),
        Type::Ptr(p) => check_type(&mut p.elem, errors),
        Type::Tuple(t) => {
            for e in t.elems.iter_mut() {
                check_type(e, errors);
            }
        }
        // Function pointers, trait objects, `!` and macros cannot be decoded either, but rustc's
        // "`Deserialize` is not implemented" says so as well as we could.
        _ => {}
    }
}

fn check_path(path: &mut syn::Path, rewrite_super: bool, errors: &mut Errors) {
    if rewrite_super
        && path.leading_colon.is_none()
        && path
            .segments
            .first()
            .is_some_and(|s| s.ident == "super" || s.ident == "Output")
    {
        let span = path.segments[0].ident.span();
        path.segments.insert(0, Ident::new("super", span).into());
    }
    for seg in path.segments.iter_mut() {
        match &mut seg.arguments {
            PathArguments::None => {}
            PathArguments::AngleBracketed(a) => {
                for arg in a.args.iter_mut() {
                    match arg {
                        GenericArgument::Type(t) => check_type(t, errors),
                        GenericArgument::AssocType(a) => check_type(&mut a.ty, errors),
                        _ => {}
                    }
                }
            }
            PathArguments::Parenthesized(p) => {
                for t in p.inputs.iter_mut() {
                    check_type(t, errors);
                }
                if let ReturnType::Type(_, t) = &mut p.output {
                    check_type(t, errors);
                }
            }
        }
    }
}

/// Collects errors so that one compile shows all of them.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    /// An error covering all of `node`'s tokens.
    pub(crate) fn push(&mut self, node: impl ToTokens, msg: impl std::fmt::Display) {
        self.add(syn::Error::new_spanned(node, msg));
    }

    /// Adds an error.
    pub(crate) fn add(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    /// `Err` with every error collected, if any.
    pub(crate) fn finish(self) -> syn::Result<()> {
        match self.0 {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors_of(item: &str) -> Vec<String> {
        let f: ItemFn = syn::parse_str(item).unwrap();
        match check(&f) {
            Ok(_) => Vec::new(),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    // C-variadic fns are unstable, so rustc's own errors would swamp a trybuild test of this.
    #[test]
    fn variadic_fns_are_rejected() {
        let errors = errors_of(r#"fn f(x: u8, ...) {}"#);
        assert_eq!(errors, ["an actor cannot be variadic"]);
    }

    #[test]
    fn too_many_parameters() {
        let params: Vec<String> = (0..17).map(|i| format!("p{i}: u8")).collect();
        let errors = errors_of(&format!("fn f({}) {{}}", params.join(", ")));
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("at most 16"), "{errors:?}");
    }

    #[test]
    fn parameters_and_return_kinds() {
        let f: ItemFn = syn::parse_str(
            "async fn f(mut a: u8, r#type: String, p: super::Point) -> io::Result<()> { Ok(()) }",
        )
        .unwrap();
        let sig = check(&f).unwrap();
        assert!(sig.is_async);
        assert!(matches!(sig.returns, Returns::Result(_)));
        let names: Vec<&str> = sig.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "type", "p"]);
        assert!(sig.params.iter().all(|p| p.state.is_none()));
        // One level deeper in the companion module.
        let ty = &sig.params[2].ty;
        assert_eq!(quote::quote!(#ty).to_string(), "super :: super :: Point");

        let with_state: ItemFn =
            syn::parse_str("fn s(a: u8, db: dq::State<super::Db>, c: State<u8>) {}").unwrap();
        let states: Vec<String> = check(&with_state)
            .unwrap()
            .params
            .iter()
            .map(|p| {
                p.state
                    .as_ref()
                    .map(|t| quote::quote!(#t).to_string())
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(states, ["", "super :: super :: Db", "u8"]);

        let ret = check(&f).unwrap().ret_ty.unwrap();
        assert_eq!(quote::quote!(#ret).to_string(), "io :: Result < () >");

        // `Output` is the companion module's alias, so the user's own is reached through super.
        let output: ItemFn =
            syn::parse_str("fn o(a: Output, b: Vec<Output>) -> Output { a }").unwrap();
        let sig = check(&output).unwrap();
        let tys: Vec<String> = sig
            .params
            .iter()
            .map(|p| {
                let ty = &p.ty;
                quote::quote!(#ty).to_string()
            })
            .collect();
        assert_eq!(tys, ["super :: Output", "Vec < super :: Output >"]);
        let ret = sig.ret_ty.unwrap();
        assert_eq!(quote::quote!(#ret).to_string(), "super :: Output");

        let unit: ItemFn = syn::parse_str("fn g() -> () {}").unwrap();
        assert!(matches!(check(&unit).unwrap().returns, Returns::Unit));
        let value: ItemFn = syn::parse_str("fn h() -> Vec<u8> { vec![] }").unwrap();
        assert!(matches!(check(&value).unwrap().returns, Returns::Value(_)));
        let none: ItemFn = syn::parse_str("fn n() {}").unwrap();
        assert!(check(&none).unwrap().ret_ty.is_none());
    }

    #[test]
    fn impl_trait_anywhere_is_found() {
        let has = |s: &str| has_impl_trait(&syn::parse_str(s).unwrap());
        assert!(has("impl serde::Serialize"));
        assert!(has("Result<Vec<impl Sized>, E>"));
        assert!(!has("Result<Vec<u8>, E>"));
    }
}
