//! The determinism scan of `#[workflow]` bodies.
//!
//! A workflow is replayed from its history after every restart, so it must issue the same
//! commands each time it runs. Spawning, real timers, the clock and fresh randomness each answer
//! differently on replay. The context offers a recorded replacement for each, and this scan
//! names it at compile time, where the mistake is cheapest to fix.
//!
//! The scan is syntactic: it sees paths as written in the body (closures, async blocks, nested
//! items and macro arguments included), not what a `use` at module level or a called helper
//! brings in. It catches the usual spellings; the executor still refuses what slips past it.

use proc_macro2::{TokenStream, TokenTree};
use quote::{ToTokens, quote};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::visit::{self, Visit};
use syn::{Block, Error, Expr, ExprPath, ItemUse, Macro, Pat, Token, UseTree};

use crate::handle::path_text;

/// Returns one error per use of something that breaks replay in `body`, in source order.
pub(crate) fn scan(body: &Block) -> Vec<Error> {
    let mut scan = Scan { errors: Vec::new() };
    scan.visit_block(body);
    scan.errors
}

/// A family of forbidden paths, and what to use instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rule {
    Spawn,
    Timer,
    Clock,
    Random,
}

impl Rule {
    /// Finds the rule a path breaks, given its segments as written (`["tokio", "spawn"]`).
    fn of(segments: &[String]) -> Option<Rule> {
        let path: Vec<&str> = segments.iter().map(String::as_str).collect();
        let ends = |tail: &[&str]| path.ends_with(tail);
        let last = path.last().copied().unwrap_or_default();
        // Reading the clock goes first: `tokio::time::Instant::now` is better answered with
        // `ctx.now()` than with `ctx.sleep`.
        if ends(&["SystemTime", "now"])
            || ends(&["Instant", "now"])
            || ends(&["Utc", "now"])
            || ends(&["Local", "now"])
        {
            return Some(Rule::Clock);
        }
        let task_spawn = path.len() >= 2 && path[path.len() - 2] == "task";
        if path == ["tokio", "spawn"]
            || (task_spawn && last.starts_with("spawn"))
            || ends(&["thread", "spawn"])
        {
            return Some(Rule::Spawn);
        }
        // `tokio::time::Duration` is `std::time::Duration` re-exported, harmless.
        if (path.starts_with(&["tokio", "time"]) && path.get(2) != Some(&"Duration"))
            || ends(&["thread", "sleep"])
        {
            return Some(Rule::Timer);
        }
        if path == ["rand", "random"]
            || path == ["rand", "rng"]
            || last == "thread_rng"
            || path.contains(&"OsRng")
            || path.first() == Some(&"getrandom")
            || ends(&["Uuid", "new_v4"])
        {
            return Some(Rule::Random);
        }
        None
    }

    /// The part of the message after "`path` is not allowed in a workflow: ".
    fn reason(self) -> &'static str {
        match self {
            Rule::Spawn => {
                "workflow code must not spawn tasks or threads, because its futures run on \
                 durable's deterministic executor; use `futures::join!` or \
                 `futures::future::join_all` to run branches concurrently"
            }
            Rule::Timer => {
                "a real timer is lost on restart and replay cannot reproduce it; use \
                 `ctx.sleep(duration)`, a durable timer recorded in the history"
            }
            Rule::Clock => {
                "the clock reads differently on replay; use `ctx.now()`, the recorded time of \
                 the event being applied"
            }
            Rule::Random => {
                "fresh randomness differs on replay; use `ctx.random()` / `ctx.uuid()`, \
                 recorded for replay"
            }
        }
    }
}

struct Scan {
    errors: Vec<Error>,
}

impl Scan {
    /// Reports `segments` if a rule forbids them; `spanned` covers the path in the source.
    fn check(&mut self, segments: &[String], written: &str, spanned: impl ToTokens) {
        if let Some(rule) = Rule::of(segments) {
            let message = format!(
                "`{written}` is not allowed in a workflow: {}",
                rule.reason()
            );
            self.errors.push(Error::new_spanned(spanned, message));
        }
    }

    fn check_path(&mut self, path: &syn::Path) {
        let segments: Vec<String> = path
            .segments
            .iter()
            .map(|segment| segment.ident.unraw().to_string())
            .collect();
        self.check(&segments, &path_text(path), path);
    }

    /// Checks each path a `use` tree imports: `use tokio::time::{sleep, Duration}` imports
    /// `tokio::time::sleep`, which is reported, and `tokio::time::Duration`, which is not.
    fn check_use_tree(&mut self, tree: &UseTree, prefix: &mut Vec<syn::Ident>) {
        match tree {
            UseTree::Path(path) => {
                prefix.push(path.ident.clone());
                self.check_use_tree(&path.tree, prefix);
                prefix.pop();
            }
            UseTree::Name(name) => self.check_import(prefix, &name.ident, None),
            UseTree::Rename(rename) => self.check_import(prefix, &rename.ident, None),
            UseTree::Glob(glob) => {
                // The glob imports everything under the prefix, so judge the prefix itself.
                if let Some((last, init)) = prefix.split_last() {
                    let init = init.to_vec();
                    self.check_import(&init, last, Some(glob));
                }
            }
            UseTree::Group(group) => {
                for tree in &group.items {
                    self.check_use_tree(tree, prefix);
                }
            }
        }
    }

    fn check_import(
        &mut self,
        prefix: &[syn::Ident],
        last: &syn::Ident,
        glob: Option<&syn::UseGlob>,
    ) {
        let mut segments: Vec<String> = prefix
            .iter()
            .map(|ident| ident.unraw().to_string())
            .collect();
        segments.push(last.unraw().to_string());
        let mut written = segments.join("::");
        if glob.is_some() {
            written.push_str("::*");
        }
        let first = prefix.first().unwrap_or(last);
        self.check(&segments, &written, quote!(#first #last #glob));
    }

    /// Scans the tokens of a macro invocation as far as they parse as Rust.
    fn check_macro(&mut self, mac: &Macro) {
        let name = mac
            .path
            .segments
            .last()
            .map(|segment| segment.ident.unraw().to_string())
            .unwrap_or_default();
        match name.as_str() {
            "select" => {
                let tokens = match strip_biased(mac.tokens.clone()) {
                    Some(rest) => rest,
                    None => {
                        let path = &mac.path;
                        let bang = &mac.bang_token;
                        self.errors.push(Error::new_spanned(
                            quote!(#path #bang),
                            format!(
                                "`{}!` without `biased;` is not allowed in a workflow: `select!` \
                                 picks a random ready branch, which replay cannot reproduce; use \
                                 `futures::select_biased!` or `futures::future::select`, which \
                                 poll in order",
                                path_text(path)
                            ),
                        ));
                        mac.tokens.clone()
                    }
                };
                self.scan_select(tokens);
            }
            "select_biased" => self.scan_select(mac.tokens.clone()),
            _ => self.scan_tokens(mac.tokens.clone()),
        }
    }

    /// Scans macro arguments: a list of expressions (`println!`, `join!`), a list of statements
    /// (`vec![x; n]`), or failing both, whichever comma-separated pieces are expressions
    /// (`tracing::info!(%id, "msg {}", x)`). The rest is a language of its own, and skipped.
    fn scan_tokens(&mut self, tokens: TokenStream) {
        let exprs = Punctuated::<Expr, Token![,]>::parse_terminated;
        if let Ok(exprs) = exprs.parse2(tokens.clone()) {
            exprs.iter().for_each(|expr| self.visit_expr(expr));
        } else if let Ok(stmts) = Block::parse_within.parse2(tokens.clone()) {
            stmts.iter().for_each(|stmt| self.visit_stmt(stmt));
        } else {
            for piece in split_at_commas(tokens) {
                if let Ok(expr) = syn::parse2::<Expr>(piece) {
                    self.visit_expr(&expr);
                }
            }
        }
    }

    /// Scans the branches of a `select!`: `pattern = future => body`, with tokio's optional
    /// `, if condition` and the `default`, `complete` and `else` branches.
    fn scan_select(&mut self, tokens: TokenStream) {
        if let Ok(exprs) = parse_select_branches.parse2(tokens) {
            exprs.iter().for_each(|expr| self.visit_expr(expr));
        }
    }
}

impl<'ast> Visit<'ast> for Scan {
    fn visit_expr_path(&mut self, node: &'ast ExprPath) {
        // `<T as Trait>::f` names a trait method, which none of the rules is about.
        if node.qself.is_none() {
            self.check_path(&node.path);
        }
        visit::visit_expr_path(self, node);
    }

    fn visit_item_use(&mut self, node: &'ast ItemUse) {
        let mut prefix = Vec::new();
        self.check_use_tree(&node.tree, &mut prefix);
    }

    fn visit_macro(&mut self, node: &'ast Macro) {
        self.check_macro(node);
    }
}

/// The tokens after a leading `biased;`, or `None` if there is none.
fn strip_biased(tokens: TokenStream) -> Option<TokenStream> {
    let mut iter = tokens.into_iter();
    match (iter.next(), iter.next()) {
        (Some(TokenTree::Ident(ident)), Some(TokenTree::Punct(punct)))
            if ident == "biased" && punct.as_char() == ';' =>
        {
            Some(iter.collect())
        }
        _ => None,
    }
}

/// Splits `tokens` at the commas outside any group.
fn split_at_commas(tokens: TokenStream) -> Vec<TokenStream> {
    let mut pieces = vec![TokenStream::new()];
    for token in tokens {
        match &token {
            TokenTree::Punct(punct) if punct.as_char() == ',' => pieces.push(TokenStream::new()),
            _ => pieces
                .last_mut()
                .expect("pieces starts with one and only grows")
                .extend([token]),
        }
    }
    pieces.retain(|piece| !piece.is_empty());
    pieces
}

/// Parses `select!` branches into the expressions they contain.
fn parse_select_branches(input: ParseStream<'_>) -> syn::Result<Vec<Expr>> {
    let mut exprs = Vec::new();
    while !input.is_empty() {
        if input.peek(Token![else]) {
            input.parse::<Token![else]>()?;
        } else if input.peek(syn::Ident) && input.peek2(Token![=>]) {
            // `default => ...` and `complete => ...`.
            input.parse::<syn::Ident>()?;
        } else {
            Pat::parse_multi_with_leading_vert(input)?;
            input.parse::<Token![=]>()?;
            exprs.push(input.parse()?);
            if input.peek(Token![,]) && input.peek2(Token![if]) {
                input.parse::<Token![,]>()?;
                input.parse::<Token![if]>()?;
                exprs.push(input.parse()?);
            }
        }
        input.parse::<Token![=>]>()?;
        exprs.push(Expr::parse_with_earlier_boundary_rule(input)?);
        if !input.is_empty() {
            // A block body may stand without its comma, as in a `match`.
            if input.peek(Token![,]) || !matches!(exprs.last(), Some(expr) if is_block_like(expr)) {
                input.parse::<Token![,]>()?;
            }
        }
    }
    Ok(exprs)
}

fn is_block_like(expr: &Expr) -> bool {
    matches!(
        expr,
        Expr::Block(_)
            | Expr::Unsafe(_)
            | Expr::If(_)
            | Expr::Match(_)
            | Expr::Loop(_)
            | Expr::While(_)
            | Expr::ForLoop(_)
            | Expr::TryBlock(_)
            | Expr::Const(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    fn messages(body: Block) -> Vec<String> {
        scan(&body).iter().map(ToString::to_string).collect()
    }

    /// The forbidden thing each message begins with.
    fn culprits(body: Block) -> Vec<String> {
        messages(body)
            .iter()
            .map(|message| {
                let end = message.find(" is not allowed").unwrap_or(message.len());
                message[..end].to_string()
            })
            .collect()
    }

    #[test]
    fn context_methods_and_plain_code_pass() {
        let body: Block = parse_quote!({
            let deadline = ctx.now() + Duration::from_secs(3600);
            let coupon: u32 = ctx.random();
            ctx.sleep(tokio::time::Duration::from_secs(60)).await;
            let (a, b) = futures::join!(ctx.activity(reserve, 1), ctx.activity(reserve, 2));
            let first = futures::select_biased! { x = a => x, y = b => y };
            let started = instant.elapsed();
            let rng = self.thread_rng;
            println!("{} {:?}", deadline, started);
            Ok(())
        });
        assert_eq!(messages(body), Vec::<String>::new());
    }

    #[test]
    fn spawning_is_reported_with_join_as_the_alternative() {
        let body: Block = parse_quote!({
            tokio::spawn(work());
            tokio::task::spawn_blocking(|| ());
            ::tokio::task::spawn_local(work());
            std::thread::spawn(|| ());
            thread::spawn(|| ());
        });
        let found = messages(body);
        assert_eq!(found.len(), 5, "{found:#?}");
        assert_eq!(
            found[0],
            "`tokio::spawn` is not allowed in a workflow: workflow code must not spawn tasks or \
             threads, because its futures run on durable's deterministic executor; use \
             `futures::join!` or `futures::future::join_all` to run branches concurrently"
        );
        assert!(found[2].starts_with("`::tokio::task::spawn_local` is not allowed"));
    }

    #[test]
    fn timers_are_reported_with_ctx_sleep_as_the_alternative() {
        let body: Block = parse_quote!({
            tokio::time::sleep(d).await;
            tokio::time::timeout(d, work()).await;
            let mut every = tokio::time::interval(d);
            std::thread::sleep(d);
        });
        let found = messages(body);
        assert_eq!(found.len(), 4, "{found:#?}");
        assert!(
            found
                .iter()
                .all(|message| message.contains("use `ctx.sleep(duration)`"))
        );
    }

    #[test]
    fn clock_reads_are_reported_with_ctx_now_as_the_alternative() {
        let body: Block = parse_quote!({
            let a = SystemTime::now();
            let b = std::time::Instant::now();
            let c = tokio::time::Instant::now();
            let d = chrono::Utc::now();
            let e = Local::now();
        });
        let found = messages(body);
        assert_eq!(found.len(), 5, "{found:#?}");
        assert!(
            found
                .iter()
                .all(|message| message.contains("use `ctx.now()`"))
        );
    }

    #[test]
    fn randomness_is_reported_with_ctx_random_as_the_alternative() {
        let body: Block = parse_quote!({
            let a: u32 = rand::random();
            let b = rand::thread_rng().gen::<u8>();
            let c = rand::rng().random::<u8>();
            let d = thread_rng();
            let e = rand::rngs::OsRng.next_u32();
            getrandom::fill(&mut buf)?;
            let f = uuid::Uuid::new_v4();
        });
        let found = culprits(body);
        let expected = [
            "`rand::random`",
            "`rand::thread_rng`",
            "`rand::rng`",
            "`thread_rng`",
            "`rand::rngs::OsRng`",
            "`getrandom::fill`",
            "`uuid::Uuid::new_v4`",
        ];
        assert_eq!(found, expected);
    }

    #[test]
    fn imports_in_the_body_are_checked_per_path() {
        let body: Block = parse_quote!({
            use rand::{Rng, random as r};
            use std::time::Instant;
            use tokio::time::*;
            use tokio::time::{Duration, sleep};
        });
        assert_eq!(
            culprits(body),
            ["`rand::random`", "`tokio::time::*`", "`tokio::time::sleep`"]
        );
    }

    #[test]
    fn closures_async_blocks_and_nested_items_are_scanned() {
        let body: Block = parse_quote!({
            let f = || SystemTime::now();
            let g = async move { tokio::time::sleep(d).await };
            fn helper() {
                std::thread::spawn(|| ());
            }
            items
                .iter()
                .map(|_| rand::random::<u8>())
                .collect::<Vec<_>>();
        });
        assert_eq!(
            culprits(body),
            [
                "`SystemTime::now`",
                "`tokio::time::sleep`",
                "`std::thread::spawn`",
                "`rand::random`"
            ]
        );
    }

    #[test]
    fn macro_arguments_are_scanned_when_they_parse() {
        let body: Block = parse_quote!({
            println!("{:?}", SystemTime::now());
            let v = vec![rand::random::<u8>(); 4];
            futures::join!(tokio::time::sleep(d), work());
            tracing::info!(%id, ?x, "at {:?}", Instant::now());
            assert!(matches!(x, Some(_)), "{}", thread_rng().r#gen::<u8>());
            macro_rules! m {
                ($x:expr) => {
                    tokio::spawn($x)
                };
            }
        });
        assert_eq!(
            culprits(body),
            [
                "`SystemTime::now`",
                "`rand::random`",
                "`tokio::time::sleep`",
                "`Instant::now`",
                "`thread_rng`",
            ]
        );
    }

    #[test]
    fn select_needs_biased() {
        let body: Block = parse_quote!({
            futures::select! { a = one => a, b = two => b };
            select! { a = one => a, complete => 0 };
            tokio::select! { biased; a = one => a, b = two => b }
            tokio::select! { a = one => a }
        });
        let found = messages(body);
        assert_eq!(found.len(), 3, "{found:#?}");
        assert_eq!(
            found[0],
            "`futures::select!` without `biased;` is not allowed in a workflow: `select!` picks \
             a random ready branch, which replay cannot reproduce; use \
             `futures::select_biased!` or `futures::future::select`, which poll in order"
        );
        assert!(found[1].starts_with("`select!` without `biased;`"));
        assert!(found[2].starts_with("`tokio::select!` without `biased;`"));
    }

    #[test]
    fn select_branches_are_scanned() {
        let body: Block = parse_quote!({
            tokio::select! {
                biased;
                Some(x) = rx.recv(), if SystemTime::now() > t => { x }
                _ = tokio::time::sleep(d) => { tokio::spawn(work()); 0 }
                else => rand::random(),
            }
            futures::select_biased! { x = a => x, default => Instant::now() }
        });
        assert_eq!(
            culprits(body),
            [
                "`SystemTime::now`",
                "`tokio::time::sleep`",
                "`tokio::spawn`",
                "`rand::random`",
                "`Instant::now`",
            ]
        );
    }
}
