//! The arguments inside `#[workflow(...)]` and `#[activity(...)]`.
//!
//! There is one: `name = "..."`, which replaces the function's name as the key the history
//! records and the worker looks the code up by. Renaming the Rust function then leaves
//! existing runs readable.

use proc_macro2::TokenStream;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Error, Expr, ExprLit, Lit, LitStr, Meta, Token};

use crate::handle::{Kind, path_text};

/// The parsed arguments of either macro.
#[derive(Debug, Default)]
pub(crate) struct Args {
    /// The `name = "..."` override, if given.
    pub(crate) name: Option<LitStr>,
}

/// Parses `args`, pushing one error per argument that is unknown, repeated or malformed.
///
/// What could be parsed is returned either way, so the expansion can go ahead beside the errors.
pub(crate) fn parse(kind: &Kind, args: TokenStream, errors: &mut Vec<Error>) -> Args {
    let mut parsed = Args::default();
    let metas = match Punctuated::<Meta, Token![,]>::parse_terminated.parse2(args) {
        Ok(metas) => metas,
        Err(error) => {
            errors.push(error);
            return parsed;
        }
    };
    let usage = format!(
        "`name = \"...\"`, which names the {} in the history instead of the function's name",
        kind.noun
    );
    for meta in metas {
        let path = meta.path();
        if !path.is_ident("name") {
            errors.push(Error::new_spanned(
                &meta,
                format!(
                    "unknown `{}` argument `{}`: the only argument is {usage}",
                    kind.attr,
                    path_text(path)
                ),
            ));
            continue;
        }
        let literal = match &meta {
            Meta::NameValue(pair) => match &pair.value {
                Expr::Lit(ExprLit {
                    lit: Lit::Str(literal),
                    attrs,
                }) if attrs.is_empty() => Some(literal),
                _ => None,
            },
            _ => None,
        };
        let Some(literal) = literal else {
            errors.push(Error::new_spanned(
                &meta,
                format!("`name` takes a string literal: {usage}"),
            ));
            continue;
        };
        if parsed.name.is_some() {
            errors.push(Error::new_spanned(&meta, "`name` is given more than once"));
        } else if literal.value().trim().is_empty() {
            errors.push(Error::new_spanned(
                literal,
                format!(
                    "the name of {} {} must not be empty: the worker looks it up by this name",
                    kind.article, kind.noun
                ),
            ));
        } else {
            parsed.name = Some(literal.clone());
        }
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activity::ACTIVITY;
    use crate::workflow::WORKFLOW;
    use quote::quote;

    fn parse_all(kind: &Kind, args: TokenStream) -> (Args, Vec<String>) {
        let mut errors = Vec::new();
        let args = parse(kind, args, &mut errors);
        (args, errors.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn no_arguments_keep_the_function_name() {
        let (args, errors) = parse_all(&ACTIVITY, quote!());
        assert!(args.name.is_none());
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn name_overrides_the_function_name() -> Result<(), String> {
        let (args, errors) = parse_all(&ACTIVITY, quote!(name = "inventory.check",));
        assert!(errors.is_empty(), "{errors:?}");
        let name = args.name.ok_or("no name parsed")?;
        assert_eq!(name.value(), "inventory.check");
        Ok(())
    }

    #[test]
    fn unknown_arguments_are_each_reported() {
        let (args, errors) = parse_all(
            &WORKFLOW,
            quote!(retries = 3, name = "order", queue("fast"), local),
        );
        assert_eq!(args.name.map(|name| name.value()).as_deref(), Some("order"));
        assert_eq!(errors.len(), 3, "{errors:#?}");
        assert!(errors[0].starts_with("unknown `#[workflow]` argument `retries`: the only"));
        assert!(errors[1].starts_with("unknown `#[workflow]` argument `queue`"));
        assert!(errors[2].starts_with("unknown `#[workflow]` argument `local`"));
    }

    #[test]
    fn name_must_be_one_non_empty_string_literal() {
        let (_, errors) = parse_all(
            &ACTIVITY,
            quote!(name = NAME, name(x), name = "", name = "a", name = "b"),
        );
        assert_eq!(errors.len(), 4, "{errors:#?}");
        assert!(errors[0].starts_with("`name` takes a string literal"));
        assert!(errors[1].starts_with("`name` takes a string literal"));
        assert!(errors[2].starts_with("the name of an activity must not be empty"));
        assert_eq!(errors[3], "`name` is given more than once");
    }

    #[test]
    fn unparsable_arguments_are_one_error() {
        let (_, errors) = parse_all(&ACTIVITY, quote!("inventory.check"));
        assert_eq!(errors.len(), 1, "{errors:#?}");
    }
}
