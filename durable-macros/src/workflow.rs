//! `#[workflow]`: parse the function, validate its signature, scan its body for code that
//! breaks replay, expand it into a handle that implements `Workflow`.
//!
//! The expansion mirrors `#[activity]`'s, with `WorkflowContext`, `WorkflowError` and a
//! `LocalBoxFuture`: workflow futures run on durable's single-threaded deterministic executor,
//! so they need not be `Send`.

use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;

use crate::handle::{self, Kind};
use crate::{attr, check};

pub(crate) const WORKFLOW: Kind = Kind {
    attr: "#[workflow]",
    article: "a",
    noun: "workflow",
    context: "WorkflowContext",
    other_attr: "#[activity]",
    other_context: "ActivityContext",
    error: "WorkflowError",
    why_async: "durable's executor polls them, and replays them after a restart",
    why_result: "`Ok` is recorded as the run's result, `Err` as its failure",
};

/// Expands `#[workflow(args)] item`.
pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let item = match handle::parse_item(&WORKFLOW, item) {
        Ok(item) => item,
        Err(tokens) => return tokens,
    };
    let mut errors = Vec::new();
    let args = attr::parse(&WORKFLOW, args, &mut errors);
    let handle = handle::validate(&WORKFLOW, &item, &mut errors);
    // The scan runs whatever the signature, so that all problems are reported at once.
    errors.extend(check::scan(&item.block));
    let Some(handle) = handle else {
        return handle::fallback(&item, errors);
    };

    // A valid signature expands even beside argument or scan errors: code that uses the handle
    // then compiles, and the errors above are the only ones the user sees.
    let ident = handle.ident();
    let name = args.name.unwrap_or_else(|| handle.default_name());
    let input = handle.input_type();
    let output = handle.output();
    let convert = handle.error_conversion(quote!(::durable::__private::WorkflowError));
    let ctx = Ident::new("ctx", Span::mixed_site());
    let (pattern, call) = handle.call_with(&ctx);
    let cfgs = handle.cfg_attrs();

    let mut tokens = handle.function_and_handle();
    tokens.extend(quote! {
        #(#cfgs)*
        impl ::durable::__private::Workflow for #ident {
            type Input = #input;
            type Output = #output;
            const NAME: &'static str = #name;

            fn run(
                #ctx: ::durable::__private::WorkflowContext,
                #pattern: Self::Input
            ) -> ::durable::__private::LocalBoxFuture<
                'static,
                ::core::result::Result<Self::Output, ::durable::__private::WorkflowError>
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
    fn expansion_implements_workflow_with_a_local_future() -> syn::Result<()> {
        let tokens = expand(
            quote!(),
            quote! {
                async fn nightly(ctx: WorkflowContext) -> Result<(), WorkflowError> { Ok(()) }
            },
        );
        let file: syn::File = syn::parse2(tokens)?;
        let expanded = quote!(#file).to_string();
        for expected in [
            "async fn nightly (ctx : WorkflowContext)",
            "enum nightly { }",
            "impl :: durable :: __private :: Workflow for nightly",
            "type Input = () ;",
            "const NAME : & 'static str = \"nightly\" ;",
            "fn run (ctx : :: durable :: __private :: WorkflowContext , () : Self :: Input)",
            "-> :: durable :: __private :: LocalBoxFuture < 'static ,",
            "nightly (ctx) . await",
        ] {
            assert!(
                expanded.contains(expected),
                "missing {expected:?} in {expanded}"
            );
        }
        Ok(())
    }

    #[test]
    fn scan_errors_come_with_the_expansion() {
        let tokens = expand(
            quote!(),
            quote! {
                async fn nightly(ctx: WorkflowContext) -> Result<(), WorkflowError> {
                    tokio::time::sleep(DAY).await;
                    Ok(())
                }
            },
        );
        let expanded = tokens.to_string();
        assert!(expanded.contains("Workflow for nightly"), "{expanded}");
        assert_eq!(expanded.matches("compile_error").count(), 1, "{expanded}");
    }

    #[test]
    fn signature_and_scan_errors_are_reported_together() {
        let tokens = expand(
            quote!(),
            quote! {
                fn nightly(ctx: WorkflowContext) -> Result<(), WorkflowError> {
                    std::thread::sleep(DAY);
                    Ok(())
                }
            },
        );
        let expanded = tokens.to_string();
        assert!(!expanded.contains("Workflow for nightly"), "{expanded}");
        assert_eq!(expanded.matches("compile_error").count(), 2, "{expanded}");
    }
}
