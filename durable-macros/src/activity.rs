//! `#[activity]`: parse the function, validate its signature, expand it into a handle that
//! implements `Activity`.
//!
//! ```text
//! #[activity]
//! pub async fn check_inventory(ctx: ActivityContext, items: Vec<Item>)
//!     -> Result<Reservation, ActivityError> { body }
//! ```
//!
//! keeps the function as written and adds its handle, `pub enum check_inventory {}`, with
//! `impl Activity for check_inventory`: `Input = Vec<Item>`, `Output = Reservation`,
//! `NAME = "check_inventory"`, and a `run` that calls the function. Several arguments make a
//! tuple input, none makes `()`.

use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;

use crate::attr;
use crate::handle::{self, Kind};

pub(crate) const ACTIVITY: Kind = Kind {
    attr: "#[activity]",
    article: "an",
    noun: "activity",
    context: "ActivityContext",
    other_attr: "#[workflow]",
    other_context: "WorkflowContext",
    error: "ActivityError",
    why_async: "the worker awaits them",
    why_result: "`Ok` is recorded as the activity's output, `Err` as a failed attempt",
};

/// Expands `#[activity(args)] item`.
pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let item = match handle::parse_item(&ACTIVITY, item) {
        Ok(item) => item,
        Err(tokens) => return tokens,
    };
    let mut errors = Vec::new();
    let args = attr::parse(&ACTIVITY, args, &mut errors);
    let Some(handle) = handle::validate(&ACTIVITY, &item, &mut errors) else {
        return handle::fallback(&item, errors);
    };

    let ident = handle.ident();
    let name = args.name.unwrap_or_else(|| handle.default_name());
    let input = handle.input_type();
    let output = handle.output();
    let convert = handle.error_conversion(quote!(::durable::__private::ActivityError));
    let ctx = Ident::new("ctx", Span::mixed_site());
    let (pattern, call) = handle.call_with(&ctx);
    let cfgs = handle.cfg_attrs();

    let mut tokens = handle.function_and_handle();
    tokens.extend(quote! {
        #(#cfgs)*
        impl ::durable::__private::Activity for #ident {
            type Input = #input;
            type Output = #output;
            const NAME: &'static str = #name;

            fn run(
                #ctx: ::durable::__private::ActivityContext,
                #pattern: Self::Input
            ) -> ::durable::__private::BoxFuture<
                'static,
                ::core::result::Result<Self::Output, ::durable::__private::ActivityError>
            > {
                ::std::boxed::Box::pin(async move { #call.await.map_err(#convert) })
            }
        }
    });
    handle::with_errors(tokens, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_keeps_the_function_and_implements_activity_for_its_handle() -> syn::Result<()> {
        let tokens = expand(
            quote!(name = "inventory.check"),
            quote! {
                /// Checks stock.
                pub async fn check_inventory(ctx: ActivityContext, items: Vec<Item>, _: u8)
                    -> Result<Reservation, ActivityError> { Ok(Reservation::default()) }
            },
        );
        let file: syn::File = syn::parse2(tokens)?;
        let expanded = quote!(#file).to_string();
        for expected in [
            "# [doc = r\" Checks stock.\"]",
            "pub async fn check_inventory (ctx : ActivityContext , items : Vec < Item > , _ : u8)",
            "pub enum check_inventory { }",
            "impl :: durable :: __private :: Activity for check_inventory",
            "type Input = (Vec < Item > , u8) ;",
            "type Output = Reservation ;",
            "const NAME : & 'static str = \"inventory.check\" ;",
            "fn run (ctx : :: durable :: __private :: ActivityContext , (arg0 , arg1) : Self :: Input)",
            "-> :: durable :: __private :: BoxFuture < 'static ,",
            "check_inventory (ctx , arg0 , arg1) . await . map_err (| error | < ActivityError as \
             :: core :: convert :: Into < :: durable :: __private :: ActivityError > > :: into \
             (error))",
        ] {
            assert!(
                expanded.contains(expected),
                "missing {expected:?} in {expanded}"
            );
        }
        assert!(!expanded.contains("compile_error"), "{expanded}");
        Ok(())
    }

    #[test]
    fn invalid_function_is_kept_beside_the_errors() {
        let tokens = expand(
            quote!(retries = 3),
            quote!(
                fn check_inventory(ctx: ActivityContext) {}
            ),
        );
        let expanded = tokens.to_string();
        assert!(
            expanded.starts_with("async fn check_inventory"),
            "{expanded}"
        );
        assert_eq!(expanded.matches("compile_error").count(), 3, "{expanded}");
        assert!(!expanded.contains("Activity for"), "{expanded}");
    }
}
