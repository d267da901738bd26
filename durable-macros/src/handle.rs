//! What `#[workflow]` and `#[activity]` share: the checks on the function's signature and the
//! handle both generate, an uninhabited enum named like the function.
//!
//! The two macros accept the same shape, `async fn name(ctx: Context, a: A, b: B) -> Result<T, E>`,
//! and differ only in the context, the error type, the trait and the words of their messages,
//! which [`Kind`] carries.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::visit::Visit;
use syn::{
    Attribute, Error, FnArg, GenericArgument, Ident, Item, ItemFn, LitStr, PathArguments,
    ReturnType, Signature, Token, Type,
};

/// The words and names that differ between `#[workflow]` and `#[activity]`.
pub(crate) struct Kind {
    /// The attribute as users write it: "#[activity]".
    pub(crate) attr: &'static str,
    /// The article before `attr` in a sentence: "an".
    pub(crate) article: &'static str,
    /// What the function becomes: "activity".
    pub(crate) noun: &'static str,
    /// The context type's name, matched against the first argument's last path segment.
    pub(crate) context: &'static str,
    /// The other macro's attribute and context, to explain a swapped context.
    pub(crate) other_attr: &'static str,
    pub(crate) other_context: &'static str,
    /// The error type the function's error converts into: "ActivityError".
    pub(crate) error: &'static str,
    /// Why the function must be `async`.
    pub(crate) why_async: &'static str,
    /// What becomes of the `Ok` and `Err` values, which is why the return type is a `Result`.
    pub(crate) why_result: &'static str,
}

/// A function that passed validation, split into the parts the expansion needs.
pub(crate) struct Handle<'a> {
    item: &'a ItemFn,
    /// The argument types after the context, in order.
    inputs: Vec<&'a Type>,
    /// `T` of `Result<T, E>`.
    output: &'a Type,
    /// `E` of `Result<T, E>`.
    error: &'a Type,
}

/// Parses the annotated item as a function.
///
/// # Errors
///
/// Anything else comes back as the tokens to emit: the item unchanged and the error beside it.
pub(crate) fn parse_item(kind: &Kind, item: TokenStream) -> Result<ItemFn, TokenStream> {
    match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Fn(function)) => Ok(function),
        Ok(other) => {
            let error = Error::new_spanned(
                &other,
                format!(
                    "`{}` goes on an `async fn`: it defines {} {} handle beside the function",
                    kind.attr, kind.article, kind.noun
                ),
            );
            Err(with_errors(item, vec![error]))
        }
        Err(error) => Err(with_errors(item, vec![error])),
    }
}

/// Checks `item` against the shape both macros accept, pushing one error per problem.
///
/// Returns `None` when the shape is wrong, since there is then nothing sound to expand.
pub(crate) fn validate<'a>(
    kind: &Kind,
    item: &'a ItemFn,
    errors: &mut Vec<Error>,
) -> Option<Handle<'a>> {
    let before = errors.len();
    let sig = &item.sig;
    let attr = kind.attr;

    if sig.asyncness.is_none() {
        errors.push(Error::new_spanned(
            sig.fn_token,
            format!("`{attr}` functions must be `async`: {}", kind.why_async),
        ));
    }
    if let Some(token) = &sig.unsafety {
        errors.push(Error::new_spanned(
            token,
            format!(
                "`{attr}` functions cannot be `unsafe`: durable calls them through a safe trait"
            ),
        ));
    }
    if let Some(abi) = &sig.abi {
        errors.push(Error::new_spanned(
            abi,
            format!(
                "`{attr}` functions cannot declare an ABI: durable calls them as Rust functions"
            ),
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        let generics = &sig.generics;
        let where_clause = &sig.generics.where_clause;
        errors.push(Error::new_spanned(
            quote!(#generics #where_clause),
            format!(
                "`{attr}` functions cannot be generic: durable decodes the input and output \
                 from the history into one concrete type"
            ),
        ));
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(Error::new_spanned(
            variadic,
            format!("`{attr}` functions cannot be variadic: their arguments become one input"),
        ));
    }

    let mut args = sig.inputs.iter();
    let context_message = format!(
        "the first argument of {} `{attr}` is its `{}`, which durable passes in",
        kind.article, kind.context
    );
    match args.next() {
        None => errors.push(Error::new(
            sig.paren_token.span.join(),
            format!("{context_message}; add `ctx: {}`", kind.context),
        )),
        Some(FnArg::Receiver(receiver)) => errors.push(receiver_error(kind, receiver)),
        Some(FnArg::Typed(arg)) => {
            if let Some(error) = context_error(kind, &arg.ty, &context_message) {
                errors.push(error);
            }
        }
    }

    let mut inputs = Vec::new();
    for arg in args {
        match arg {
            FnArg::Receiver(receiver) => errors.push(receiver_error(kind, receiver)),
            FnArg::Typed(arg) => {
                errors.extend(ownership_errors(
                    &arg.ty,
                    &format!(
                        "{} arguments must be owned values: the future outlives the call",
                        kind.noun
                    ),
                    &format!(
                        "{} arguments need a concrete type, not `impl Trait`: durable decodes \
                         them from the history",
                        kind.noun
                    ),
                ));
                inputs.push(&*arg.ty);
            }
        }
    }

    let (output, error) = match result_types(kind, sig) {
        Ok(types) => types,
        Err(error) => {
            errors.push(error);
            return None;
        }
    };
    errors.extend(ownership_errors(
        output,
        &format!(
            "the output of {} {} must be an owned value: it is recorded in the history",
            kind.article, kind.noun
        ),
        &format!(
            "the output of {} {} needs a concrete type, not `impl Trait`: durable decodes it \
             from the history",
            kind.article, kind.noun
        ),
    ));

    (errors.len() == before).then_some(Handle {
        item,
        inputs,
        output,
        error,
    })
}

fn receiver_error(kind: &Kind, receiver: &syn::Receiver) -> Error {
    Error::new_spanned(
        receiver,
        format!(
            "`{}` goes on a free function, not a method: it defines a handle type of the same \
             name beside the function",
            kind.attr
        ),
    )
}

/// Checks that `ty` names the context by value; the last path segment is all a macro can see.
fn context_error(kind: &Kind, ty: &Type, message: &str) -> Option<Error> {
    let last = match ty {
        Type::Path(path) if path.qself.is_none() => path.path.segments.last(),
        Type::Reference(reference) => {
            let message = format!("{message}, taken by value");
            return Some(Error::new_spanned(reference, message));
        }
        _ => None,
    };
    match last.map(|segment| segment.ident.to_string()) {
        Some(name) if name == kind.context => None,
        Some(name) if name == kind.other_context => Some(Error::new_spanned(
            ty,
            format!(
                "{message}; `{}` belongs to `{}` functions",
                kind.other_context, kind.other_attr
            ),
        )),
        _ => Some(Error::new_spanned(ty, message)),
    }
}

/// Splits a `Result<T, E>` return type into `T` and `E`.
fn result_types<'a>(kind: &Kind, sig: &'a Signature) -> Result<(&'a Type, &'a Type), Error> {
    let expected = format!(
        "`{}` functions must return `Result<T, E>` with `E: Into<{}>`: {}",
        kind.attr, kind.error, kind.why_result
    );
    let ty = match &sig.output {
        ReturnType::Type(_, ty) => ty,
        // There is no type to point at, so point where it belongs: after the arguments.
        ReturnType::Default => return Err(Error::new(sig.paren_token.span.close(), expected)),
    };
    let Type::Path(path) = &**ty else {
        return Err(Error::new_spanned(ty, expected));
    };
    let segment = match path.path.segments.last() {
        Some(segment) if path.qself.is_none() && segment.ident == "Result" => segment,
        _ => return Err(Error::new_spanned(ty, expected)),
    };
    let PathArguments::AngleBracketed(generics) = &segment.arguments else {
        return Err(Error::new_spanned(ty, expected));
    };
    let types: Vec<&Type> = generics
        .args
        .iter()
        .filter_map(|arg| match arg {
            GenericArgument::Type(ty) => Some(ty),
            _ => None,
        })
        .collect();
    match types[..] {
        [output, error] if generics.args.len() == 2 => Ok((output, error)),
        [_] if generics.args.len() == 1 => {
            let written = path_text(&path.path);
            Err(Error::new_spanned(
                ty,
                format!(
                    "`{written}` with one argument hides the error type from the macro: write \
                     both, `Result<T, E>` with `E: Into<{}>`, so it can name the output and \
                     convert the error",
                    kind.error
                ),
            ))
        }
        _ => Err(Error::new_spanned(ty, expected)),
    }
}

/// The path as written, without generic arguments: `anyhow::Result`.
pub(crate) fn path_text(path: &syn::Path) -> String {
    let segments: Vec<String> = path
        .segments
        .iter()
        .map(|segment| segment.ident.unraw().to_string())
        .collect();
    let prefix = if path.leading_colon.is_some() {
        "::"
    } else {
        ""
    };
    format!("{prefix}{}", segments.join("::"))
}

/// Finds the parts of `ty` that are not owned: references and non-`'static` lifetimes, reported
/// with `borrowed`, and `impl Trait`, reported with `opaque`.
///
/// Serde's `DeserializeOwned` would reject them too, but with a message about lifetimes that
/// doesn't say why a durable input can't borrow.
fn ownership_errors(ty: &Type, borrowed: &str, opaque: &str) -> Vec<Error> {
    struct Borrows<'m> {
        borrowed: &'m str,
        opaque: &'m str,
        errors: Vec<Error>,
    }
    impl<'ast> Visit<'ast> for Borrows<'_> {
        fn visit_type_reference(&mut self, node: &'ast syn::TypeReference) {
            // One error for the reference, none more for its lifetime or referent.
            self.errors.push(Error::new_spanned(node, self.borrowed));
        }
        fn visit_lifetime(&mut self, node: &'ast syn::Lifetime) {
            if node.ident != "static" {
                self.errors.push(Error::new_spanned(node, self.borrowed));
            }
        }
        fn visit_type_impl_trait(&mut self, node: &'ast syn::TypeImplTrait) {
            self.errors.push(Error::new_spanned(node, self.opaque));
        }
    }
    let mut borrows = Borrows {
        borrowed,
        opaque,
        errors: Vec::new(),
    };
    borrows.visit_type(ty);
    borrows.errors
}

impl Handle<'_> {
    /// The function's name, which the handle shares.
    pub(crate) fn ident(&self) -> &Ident {
        &self.item.sig.ident
    }

    /// `T` of the function's `Result<T, E>`.
    pub(crate) fn output(&self) -> &Type {
        self.output
    }

    /// The name recorded in the history when no `name = "..."` overrides it: the function's.
    pub(crate) fn default_name(&self) -> LitStr {
        let ident = self.ident();
        LitStr::new(&ident.unraw().to_string(), ident.span())
    }

    /// The input type: `()`, the one argument's type, or a tuple of them.
    pub(crate) fn input_type(&self) -> TokenStream {
        match &self.inputs[..] {
            [one] => one.to_token_stream(),
            many => quote!((#(#many),*)),
        }
    }

    /// The pattern of `run`'s input parameter and the expression that calls the function with it.
    ///
    /// The pattern uses generated names, since the user's own may be `_` or `mut x`.
    pub(crate) fn call_with(&self, ctx: &Ident) -> (TokenStream, TokenStream) {
        let names: Vec<Ident> = (0..self.inputs.len())
            .map(|index| format_ident!("arg{}", index, span = Span::mixed_site()))
            .collect();
        let pattern = match &names[..] {
            [one] => quote!(#one),
            many => quote!((#(#many),*)),
        };
        let ident = self.ident();
        (pattern, quote!(#ident(#ctx #(, #names)*)))
    }

    /// A closure converting the body's error into `target`.
    ///
    /// The conversion's path is spanned on `E`, so a missing `Into` impl is reported once, on
    /// the user's error type; passing the path itself to `map_err` would report it twice.
    pub(crate) fn error_conversion(&self, target: TokenStream) -> TokenStream {
        let error = self.error;
        let into = quote_spanned!(error.span()=> <#error as ::core::convert::Into<#target>>::into);
        let value = Ident::new("error", Span::mixed_site());
        quote!(|#value| #into(#value))
    }

    /// `#[cfg]` attributes of the function, repeated on every generated item.
    pub(crate) fn cfg_attrs(&self) -> Vec<&Attribute> {
        self.item
            .attrs
            .iter()
            .filter(|attr| attr.path().is_ident("cfg"))
            .collect()
    }

    /// The function, unchanged, and its handle: an uninhabited enum of the same name.
    ///
    /// The enum lives only in the type namespace, so the function keeps its name as a value
    /// (callable directly in unit tests), and a binding such as `order: Order` inside a
    /// `#[workflow] async fn order` still binds instead of naming the handle, which a unit
    /// struct would do.
    pub(crate) fn function_and_handle(&self) -> TokenStream {
        let item = self.item;
        let ident = &item.sig.ident;
        let vis = &item.vis;
        let docs = item.attrs.iter().filter(|attr| attr.path().is_ident("doc"));
        let cfgs = self.cfg_attrs();
        quote! {
            #item

            #(#docs)*
            #(#cfgs)*
            #[allow(non_camel_case_types, reason = "the handle keeps the function's name")]
            #vis enum #ident {}
        }
    }
}

/// The user's function as written, with the errors beside it: one real error for the user to
/// read instead of a cascade from whatever refers to the function.
///
/// A missing `async` is added, as if the fix were applied, so that the body's `.await`s don't
/// each report that they need one.
pub(crate) fn fallback(item: &ItemFn, errors: Vec<Error>) -> TokenStream {
    let mut item = item.clone();
    if item.sig.asyncness.is_none() && item.sig.constness.is_none() {
        item.sig.asyncness = Some(<Token![async]>::default());
    }
    with_errors(item.into_token_stream(), errors)
}

/// `tokens` followed by one `compile_error!` per error.
pub(crate) fn with_errors(mut tokens: TokenStream, errors: Vec<Error>) -> TokenStream {
    tokens.extend(errors.into_iter().map(|error| error.into_compile_error()));
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activity::ACTIVITY;
    use crate::workflow::WORKFLOW;
    use syn::parse_quote;

    fn messages(kind: &Kind, item: &ItemFn) -> Vec<String> {
        let mut errors = Vec::new();
        let handle = validate(kind, item, &mut errors);
        assert_eq!(handle.is_some(), errors.is_empty());
        errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn valid_activity_splits_inputs_and_result() -> Result<(), String> {
        let item: ItemFn = parse_quote! {
            async fn check(ctx: ActivityContext, items: Vec<Item>, mut n: u32)
                -> Result<Reservation, ActivityError> { Ok(Reservation::default()) }
        };
        let mut errors = Vec::new();
        let handle = validate(&ACTIVITY, &item, &mut errors).ok_or(format!("{errors:?}"))?;
        assert_eq!(handle.input_type().to_string(), "(Vec < Item > , u32)");
        assert_eq!(handle.output().to_token_stream().to_string(), "Reservation");
        assert_eq!(handle.error.to_token_stream().to_string(), "ActivityError");
        assert_eq!(handle.default_name().value(), "check");
        Ok(())
    }

    #[test]
    fn input_is_unit_without_arguments_and_the_type_with_one() -> Result<(), String> {
        let none: ItemFn = parse_quote! {
            async fn nightly(ctx: durable::WorkflowContext) -> std::result::Result<(), E> {
                Ok(())
            }
        };
        let one: ItemFn = parse_quote! {
            async fn greet(_: WorkflowContext, _: String) -> Result<u8, E> { Ok(0) }
        };
        let mut errors = Vec::new();
        let none = validate(&WORKFLOW, &none, &mut errors).ok_or(format!("{errors:?}"))?;
        let one = validate(&WORKFLOW, &one, &mut errors).ok_or(format!("{errors:?}"))?;
        assert_eq!(none.input_type().to_string(), "()");
        assert_eq!(one.input_type().to_string(), "String");
        let ctx = Ident::new("ctx", Span::call_site());
        let (pattern, call) = none.call_with(&ctx);
        assert_eq!(
            (pattern.to_string(), call.to_string()),
            ("()".into(), "nightly (ctx)".into())
        );
        let (pattern, call) = one.call_with(&ctx);
        assert_eq!(pattern.to_string(), "arg0");
        assert_eq!(call.to_string(), "greet (ctx , arg0)");
        Ok(())
    }

    #[test]
    fn raw_identifiers_lose_their_prefix_in_the_name() -> Result<(), String> {
        let item: ItemFn = parse_quote! {
            async fn r#move(ctx: ActivityContext) -> Result<(), ActivityError> { Ok(Default::default()) }
        };
        let mut errors = Vec::new();
        let handle = validate(&ACTIVITY, &item, &mut errors).ok_or(format!("{errors:?}"))?;
        assert_eq!(handle.default_name().value(), "move");
        Ok(())
    }

    #[test]
    fn every_problem_is_reported_together() {
        let item: ItemFn = parse_quote! {
            fn check<T>(ctx: String, name: &str) -> u32 { 0 }
        };
        let found = messages(&ACTIVITY, &item);
        assert_eq!(found.len(), 5, "{found:#?}");
        assert!(found[0].starts_with("`#[activity]` functions must be `async`: the worker"));
        assert!(found[1].starts_with("`#[activity]` functions cannot be generic"));
        assert!(found[2].starts_with("the first argument of an `#[activity]` is its"));
        assert!(found[3].starts_with("activity arguments must be owned values"));
        assert!(found[4].starts_with("`#[activity]` functions must return `Result<T, E>`"));
    }

    #[test]
    fn methods_are_rejected_on_their_receiver() {
        let item: ItemFn = parse_quote! {
            async fn check(&self, ctx: ActivityContext) -> Result<(), ActivityError> { Ok(Default::default()) }
        };
        let found = messages(&ACTIVITY, &item);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].starts_with("`#[activity]` goes on a free function, not a method"));
    }

    #[test]
    fn missing_context_is_reported_on_the_parentheses() {
        let item: ItemFn = parse_quote!(
            async fn greet() -> Result<(), WorkflowError> {
                Ok(Default::default())
            }
        );
        assert_eq!(
            messages(&WORKFLOW, &item),
            [
                "the first argument of a `#[workflow]` is its `WorkflowContext`, which durable \
              passes in; add `ctx: WorkflowContext`"
            ]
        );
    }

    #[test]
    fn context_must_be_the_right_one_and_owned() {
        let swapped: ItemFn = parse_quote! {
            async fn greet(ctx: ActivityContext) -> Result<(), WorkflowError> { Ok(Default::default()) }
        };
        let borrowed: ItemFn = parse_quote! {
            async fn greet(ctx: &WorkflowContext) -> Result<(), WorkflowError> { Ok(Default::default()) }
        };
        assert!(
            messages(&WORKFLOW, &swapped)[0]
                .ends_with("; `ActivityContext` belongs to `#[activity]` functions")
        );
        assert!(messages(&WORKFLOW, &borrowed)[0].ends_with(", taken by value"));
    }

    #[test]
    fn borrowed_and_opaque_types_are_rejected_wherever_they_nest() {
        let item: ItemFn = parse_quote! {
            async fn f(
                ctx: ActivityContext,
                a: Vec<&'static str>,
                b: Cow<'a, str>,
                c: impl Serialize,
                d: Box<dyn Any + 'static>,
            ) -> Result<&str, ActivityError> { Ok(Default::default()) }
        };
        let found = messages(&ACTIVITY, &item);
        assert_eq!(found.len(), 4, "{found:#?}");
        assert!(found[0].starts_with("activity arguments must be owned values"));
        assert!(found[1].starts_with("activity arguments must be owned values"));
        assert!(found[2].starts_with("activity arguments need a concrete type, not `impl"));
        assert!(found[3].starts_with("the output of an activity must be an owned value"));
    }

    #[test]
    fn return_type_must_be_a_two_argument_result() {
        let cases: [ItemFn; 4] = [
            parse_quote!(
                async fn f(ctx: ActivityContext) {}
            ),
            parse_quote!(
                async fn f(ctx: ActivityContext) -> u32 {
                    0
                }
            ),
            parse_quote!(
                async fn f(ctx: ActivityContext) -> Option<u32> {
                    None
                }
            ),
            parse_quote!(
                async fn f(ctx: ActivityContext) -> Result<u32, E, F> {
                    Ok(Default::default())
                }
            ),
        ];
        for item in &cases {
            let found = messages(&ACTIVITY, item);
            assert_eq!(found.len(), 1, "{found:#?}");
            assert!(
                found[0].starts_with("`#[activity]` functions must return `Result<T, E>` with")
            );
        }
        let alias: ItemFn = parse_quote!(
            async fn f(ctx: ActivityContext) -> anyhow::Result<u32> {
                Ok(Default::default())
            }
        );
        assert!(
            messages(&ACTIVITY, &alias)[0]
                .starts_with("`anyhow::Result` with one argument hides the error type")
        );
    }

    #[test]
    fn fallback_keeps_the_function_and_adds_a_missing_async() {
        let item: ItemFn = parse_quote!(
            fn f(ctx: ActivityContext) {}
        );
        let tokens = fallback(&item, vec![Error::new(Span::call_site(), "nope")]).to_string();
        assert!(
            tokens.starts_with("async fn f (ctx : ActivityContext) { }"),
            "{tokens}"
        );
        assert!(tokens.contains("compile_error"), "{tokens}");
    }
}
