//! Bounds on a statement before it is planned. DataFusion guards its recursive passes by
//! growing the stack, but some (cloning an expression tree) recurse without that guard: a
//! statement such as `SELECT 1 + 1 + ... + 1` with 5,000 terms overflowed a 2 MB worker stack
//! and aborted the server. Planning time also grows with the square of a chain's length
//! (debug build, same run: 1,000 terms 2.2 s, 2,000 terms 8.5 s, 4,000 terms 29 s; the
//! release server took 6.7 s for 2,000), so the cap is 1,000.
//! Parenthesized nesting is already capped by the parser (depth 50); long operator chains are
//! capped here, counted on the token stream (no recursion).

use datafusion::error::{DataFusionError, Result};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// Most binary operators (arithmetic, comparison, `AND`, `OR`, `||`, ...) one statement may
/// hold. A chain of them is an expression tree as deep as the chain.
pub const MAX_OPERATORS: usize = 1_000;

/// Statements shorter than this cannot hold `MAX_OPERATORS` operators (each needs an operand
/// and an operator character), so they are not tokenized at all.
const SHORT_STATEMENT: usize = 2 * MAX_OPERATORS;

fn is_operator(t: &Token) -> bool {
    match t {
        Token::Word(w) => matches!(w.keyword, Keyword::AND | Keyword::OR),
        Token::Plus
        | Token::Minus
        | Token::Mul
        | Token::Div
        | Token::Mod
        | Token::Eq
        | Token::DoubleEq
        | Token::Neq
        | Token::Lt
        | Token::Gt
        | Token::LtEq
        | Token::GtEq
        | Token::StringConcat
        | Token::Ampersand
        | Token::Pipe
        | Token::Caret => true,
        _ => false,
    }
}

/// Refuse a statement with more than [`MAX_OPERATORS`] binary operators, naming the count.
/// Text the tokenizer cannot read is left for the parser to report.
pub fn check_statement(sql: &str) -> Result<()> {
    if sql.len() < SHORT_STATEMENT {
        return Ok(());
    }
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else { return Ok(()) };
    let operators = tokens.iter().filter(|t| is_operator(t)).count();
    if operators > MAX_OPERATORS {
        return Err(DataFusionError::Plan(format!(
            "the statement has {operators} operators; at most {MAX_OPERATORS} are accepted \
             (a long chain of OR or + nests as deep as it is long; use IN lists or split the statement)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_operator_chains_are_refused_and_everything_else_passes() {
        // `n` operators between `n + 1` operands.
        let chain = |n: usize, op: &str| format!("SELECT {}", vec!["1"; n + 1].join(op));
        assert!(check_statement(&chain(MAX_OPERATORS + 1, "+")).is_err());
        assert!(check_statement(&chain(MAX_OPERATORS + 1, " OR ")).is_err());
        let err = check_statement(&chain(MAX_OPERATORS + 1, " AND ")).expect_err("too many");
        assert!(err.to_string().contains(&format!("{} operators", MAX_OPERATORS + 1)), "{err}");
        assert!(check_statement(&chain(MAX_OPERATORS, "+")).is_ok());
        assert!(check_statement(&chain(MAX_OPERATORS, " OR ")).is_ok());
        // Long but flat: an IN list of 20,000 ids, and a long string literal full of `+`.
        let ids: Vec<String> = (0..20_000).map(|i| format!("'{i:032x}'")).collect();
        assert!(check_statement(&format!("SELECT * FROM events WHERE trace_id IN ({})", ids.join(","))).is_ok());
        assert!(check_statement(&format!("SELECT '{}'", "+".repeat(50_000))).is_ok());
    }
}
