//! The expression language of pipeline files: filters and values over an event, derived
//! features over other features, and formula models.
//!
//! ```text
//! expr    := or
//! or      := and ("||" and)*            and := cmp ("&&" cmp)*
//! cmp     := sum (("=="|"!="|"<"|"<="|">"|">=") sum)?
//! sum     := product (("+"|"-") product)*   product := unary (("*"|"/") unary)*
//! unary   := ("-"|"!") unary | atom
//! atom    := number | 'string' | name | name "(" expr ("," expr)* ")" | "(" expr ")"
//! ```
//!
//! Names are dotted (`stats.yards_gained`, `points_5m.home`). Values are numbers (booleans are
//! 1 and 0) or, for some event fields, strings, which only `==` and `!=` accept. Every function
//! is total, so a feature never becomes NaN: `x / 0 = 0`, `sqrt` and `ln` of a non-positive
//! number are 0, `exp` saturates.

use std::ops::Range;

/// A parse or type error, at a byte range of the expression text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExprError {
    pub span: Range<usize>,
    pub message: String,
    pub hint: Option<String>,
}

impl ExprError {
    fn new(span: Range<usize>, message: impl Into<String>) -> Self {
        ExprError {
            span,
            message: message.into(),
            hint: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    Abs,
    Sqrt,
    Ln,
    Exp,
    Min,
    Max,
    Clamp,
    Sign,
    If,
    Sigmoid,
    Floor,
    Ceil,
    Round,
}

impl Func {
    const ALL: [(&'static str, Func, usize, usize); 14] = [
        ("abs", Func::Abs, 1, 1),
        ("sqrt", Func::Sqrt, 1, 1),
        ("ln", Func::Ln, 1, 1),
        ("log", Func::Ln, 1, 1),
        ("exp", Func::Exp, 1, 1),
        ("min", Func::Min, 2, usize::MAX),
        ("max", Func::Max, 2, usize::MAX),
        ("clamp", Func::Clamp, 3, 3),
        ("sign", Func::Sign, 1, 1),
        ("if", Func::If, 3, 3),
        ("sigmoid", Func::Sigmoid, 1, 1),
        ("floor", Func::Floor, 1, 1),
        ("ceil", Func::Ceil, 1, 1),
        ("round", Func::Round, 1, 1),
    ];

    fn lookup(name: &str) -> Option<(Func, usize, usize)> {
        Func::ALL
            .iter()
            .find(|(n, ..)| *n == name)
            .map(|(_, f, lo, hi)| (*f, *lo, *hi))
    }

    pub fn names() -> impl Iterator<Item = &'static str> {
        Func::ALL.iter().map(|(n, ..)| *n)
    }
}

/// A parsed expression; names are not resolved yet.
#[derive(Clone, Debug, PartialEq)]
pub enum Ast {
    Num(f64),
    Str(String),
    Name(String, Range<usize>),
    Neg(Box<Ast>),
    Not(Box<Ast>),
    Bin(BinOp, Box<Ast>, Box<Ast>, Range<usize>),
    Call(Func, Vec<Ast>, Range<usize>),
}

impl Ast {
    /// Every name the expression reads, with its span.
    pub fn names(&self, out: &mut Vec<(String, Range<usize>)>) {
        match self {
            Ast::Name(n, s) => out.push((n.clone(), s.clone())),
            Ast::Neg(a) | Ast::Not(a) => a.names(out),
            Ast::Bin(_, a, b, _) => {
                a.names(out);
                b.names(out);
            }
            Ast::Call(_, args, _) => args.iter().for_each(|a| a.names(out)),
            Ast::Num(_) | Ast::Str(_) => {}
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Num(f64),
    Str(String),
    Name(String),
    Op(&'static str),
    End,
}

struct Lexer<'a> {
    text: &'a str,
    pos: usize,
}

const OPS: [&str; 17] = [
    "||", "&&", "==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "!", "(", ")", ",", "=",
];

impl<'a> Lexer<'a> {
    fn next(&mut self) -> Result<(Tok, Range<usize>), ExprError> {
        let bytes = self.text.as_bytes();
        while self.pos < bytes.len() && bytes[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
        let start = self.pos;
        let Some(&c) = bytes.get(self.pos) else {
            return Ok((Tok::End, start..start));
        };
        if c.is_ascii_digit() || (c == b'.' && bytes.get(start + 1).is_some_and(u8::is_ascii_digit))
        {
            while self.pos < bytes.len()
                && (bytes[self.pos].is_ascii_digit()
                    || bytes[self.pos] == b'.'
                    || bytes[self.pos] == b'_'
                    || ((bytes[self.pos] == b'e' || bytes[self.pos] == b'E')
                        && bytes
                            .get(self.pos + 1)
                            .is_some_and(|b| b.is_ascii_digit() || *b == b'-' || *b == b'+'))
                    || ((bytes[self.pos] == b'-' || bytes[self.pos] == b'+')
                        && matches!(bytes[self.pos - 1], b'e' | b'E')))
            {
                self.pos += 1;
            }
            let s = self.text[start..self.pos].replace('_', "");
            return s
                .parse::<f64>()
                .map(|n| (Tok::Num(n), start..self.pos))
                .map_err(|_| ExprError::new(start..self.pos, format!("`{s}` is not a number")));
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            while self.pos < bytes.len()
                && (bytes[self.pos].is_ascii_alphanumeric()
                    || bytes[self.pos] == b'_'
                    || bytes[self.pos] == b'.')
            {
                self.pos += 1;
            }
            return Ok((
                Tok::Name(self.text[start..self.pos].to_string()),
                start..self.pos,
            ));
        }
        if c == b'\'' || c == b'"' {
            let end = self.text[start + 1..]
                .find(c as char)
                .ok_or_else(|| ExprError::new(start..start + 1, "unterminated string"))?;
            self.pos = start + 1 + end + 1;
            return Ok((
                Tok::Str(self.text[start + 1..start + 1 + end].to_string()),
                start..self.pos,
            ));
        }
        for op in OPS {
            if self.text[start..].starts_with(op) {
                self.pos += op.len();
                if op == "=" {
                    return Err(ExprError {
                        span: start..self.pos,
                        message: "`=` is not an operator".into(),
                        hint: Some("compare with `==`".into()),
                    });
                }
                return Ok((Tok::Op(op), start..self.pos));
            }
        }
        let ch = self.text[start..].chars().next().unwrap_or(' ');
        Err(ExprError::new(
            start..start + ch.len_utf8(),
            format!("unexpected character `{ch}`"),
        ))
    }
}

struct Parser<'a> {
    lexer: Lexer<'a>,
    tok: Tok,
    span: Range<usize>,
}

/// Parses an expression.
pub fn parse(text: &str) -> Result<Ast, ExprError> {
    let mut lexer = Lexer { text, pos: 0 };
    let (tok, span) = lexer.next()?;
    let mut p = Parser { lexer, tok, span };
    if p.tok == Tok::End {
        return Err(ExprError::new(0..0, "empty expression"));
    }
    let ast = p.expr(0)?;
    if p.tok != Tok::End {
        return Err(ExprError::new(
            p.span.clone(),
            format!(
                "expected an operator or the end, found {}",
                describe(&p.tok)
            ),
        ));
    }
    Ok(ast)
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Num(n) => format!("number {n}"),
        Tok::Str(s) => format!("string '{s}'"),
        Tok::Name(n) => format!("`{n}`"),
        Tok::Op(o) => format!("`{o}`"),
        Tok::End => "the end of the expression".into(),
    }
}

fn binop(t: &Tok) -> Option<(BinOp, u8)> {
    let Tok::Op(o) = t else { return None };
    Some(match *o {
        "||" => (BinOp::Or, 1),
        "&&" => (BinOp::And, 2),
        "==" => (BinOp::Eq, 3),
        "!=" => (BinOp::Ne, 3),
        "<" => (BinOp::Lt, 4),
        "<=" => (BinOp::Le, 4),
        ">" => (BinOp::Gt, 4),
        ">=" => (BinOp::Ge, 4),
        "+" => (BinOp::Add, 5),
        "-" => (BinOp::Sub, 5),
        "*" => (BinOp::Mul, 6),
        "/" => (BinOp::Div, 6),
        _ => return None,
    })
}

impl Parser<'_> {
    fn bump(&mut self) -> Result<(Tok, Range<usize>), ExprError> {
        let (tok, span) = self.lexer.next()?;
        Ok((
            std::mem::replace(&mut self.tok, tok),
            std::mem::replace(&mut self.span, span),
        ))
    }

    fn expect(&mut self, op: &'static str) -> Result<(), ExprError> {
        if self.tok == Tok::Op(op) {
            self.bump()?;
            Ok(())
        } else {
            Err(ExprError::new(
                self.span.clone(),
                format!("expected `{op}`, found {}", describe(&self.tok)),
            ))
        }
    }

    fn expr(&mut self, min: u8) -> Result<Ast, ExprError> {
        let mut lhs = self.unary()?;
        while let Some((op, prec)) = binop(&self.tok) {
            if prec <= min {
                break;
            }
            let (_, span) = self.bump()?;
            let rhs = self.expr(prec)?;
            lhs = Ast::Bin(op, Box::new(lhs), Box::new(rhs), span);
        }
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<Ast, ExprError> {
        match self.tok {
            Tok::Op("-") => {
                self.bump()?;
                Ok(Ast::Neg(Box::new(self.unary()?)))
            }
            Tok::Op("!") => {
                self.bump()?;
                Ok(Ast::Not(Box::new(self.unary()?)))
            }
            _ => self.atom(),
        }
    }

    fn atom(&mut self) -> Result<Ast, ExprError> {
        let (tok, span) = self.bump()?;
        match tok {
            Tok::Num(n) => Ok(Ast::Num(n)),
            Tok::Str(s) => Ok(Ast::Str(s)),
            Tok::Op("(") => {
                let e = self.expr(0)?;
                self.expect(")")?;
                Ok(e)
            }
            Tok::Name(name) if self.tok == Tok::Op("(") => {
                let Some((func, lo, hi)) = Func::lookup(&name) else {
                    let mut e = ExprError::new(span, format!("unknown function `{name}`"));
                    e.hint = Some(match super::diag::closest(&name, Func::names()) {
                        Some(c) => format!("did you mean `{c}`?"),
                        None => format!(
                            "functions are {}",
                            Func::names().collect::<Vec<_>>().join(", ")
                        ),
                    });
                    return Err(e);
                };
                self.bump()?;
                let mut args = vec![self.expr(0)?];
                while self.tok == Tok::Op(",") {
                    self.bump()?;
                    args.push(self.expr(0)?);
                }
                let close = self.span.clone();
                self.expect(")")?;
                if args.len() < lo || args.len() > hi {
                    let want = if lo == hi {
                        format!("{lo}")
                    } else {
                        format!("at least {lo}")
                    };
                    return Err(ExprError::new(
                        span.start..close.end,
                        format!("`{name}` takes {want} arguments, got {}", args.len()),
                    ));
                }
                Ok(Ast::Call(func, args, span))
            }
            Tok::Name(name) => Ok(Ast::Name(name, span)),
            other => Err(ExprError::new(
                span,
                format!("expected a value, found {}", describe(&other)),
            )),
        }
    }
}

/// What a name resolves to: a slot in the evaluation context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    Num,
    Str,
}

/// A resolved, type-checked expression over a context whose variables are numbered.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Num(f64),
    Str(String),
    Var(usize),
    /// A string variable.
    SVar(usize),
    Neg(Box<Expr>),
    Not(Box<Expr>),
    Bin(BinOp, Box<Expr>, Box<Expr>),
    StrEq(bool, Box<Expr>, Box<Expr>),
    Call(Func, Vec<Expr>),
}

/// Resolves a name at a span to a variable index and its type.
pub type Lookup<'a> = dyn FnMut(&str, &Range<usize>) -> Result<(usize, Type), ExprError> + 'a;

/// Resolves names with `lookup` (name → variable index and type) and checks types.
pub fn resolve(ast: &Ast, lookup: &mut Lookup<'_>) -> Result<(Expr, Type), ExprError> {
    Ok(match ast {
        Ast::Num(n) => (Expr::Num(*n), Type::Num),
        Ast::Str(s) => (Expr::Str(s.clone()), Type::Str),
        Ast::Name(n, span) => match lookup(n, span)? {
            (i, Type::Num) => (Expr::Var(i), Type::Num),
            (i, Type::Str) => (Expr::SVar(i), Type::Str),
        },
        Ast::Neg(a) => (Expr::Neg(Box::new(num(a, lookup)?)), Type::Num),
        Ast::Not(a) => (Expr::Not(Box::new(num(a, lookup)?)), Type::Num),
        Ast::Bin(op, a, b, span) => {
            let (ea, ta) = resolve(a, lookup)?;
            let (eb, tb) = resolve(b, lookup)?;
            match (op, ta, tb) {
                (BinOp::Eq | BinOp::Ne, Type::Str, Type::Str) => (
                    Expr::StrEq(*op == BinOp::Eq, Box::new(ea), Box::new(eb)),
                    Type::Num,
                ),
                (_, Type::Num, Type::Num) => (Expr::Bin(*op, Box::new(ea), Box::new(eb)), Type::Num),
                (BinOp::Eq | BinOp::Ne, _, _) => {
                    return Err(ExprError {
                        span: span.clone(),
                        message: format!(
                            "`{}` compares a string with a number",
                            op_text(*op)
                        ),
                        hint: Some("quote string constants: kind == 'play'".into()),
                    })
                }
                _ => {
                    return Err(ExprError {
                        span: span.clone(),
                        message: format!(
                            "`{}` needs two numbers, found a string (strings only compare with `==` and `!=`)",
                            op_text(*op)
                        ),
                        hint: None,
                    })
                }
            }
        }
        Ast::Call(f, args, _) => (
            Expr::Call(
                *f,
                args.iter()
                    .map(|a| num(a, lookup))
                    .collect::<Result<_, _>>()?,
            ),
            Type::Num,
        ),
    })
}

fn op_text(op: BinOp) -> &'static str {
    match op {
        BinOp::Or => "||",
        BinOp::And => "&&",
        BinOp::Eq => "==",
        BinOp::Ne => "!=",
        BinOp::Lt => "<",
        BinOp::Le => "<=",
        BinOp::Gt => ">",
        BinOp::Ge => ">=",
        BinOp::Add => "+",
        BinOp::Sub => "-",
        BinOp::Mul => "*",
        BinOp::Div => "/",
    }
}

fn num(ast: &Ast, lookup: &mut Lookup<'_>) -> Result<Expr, ExprError> {
    match resolve(ast, lookup)? {
        (e, Type::Num) => Ok(e),
        (_, Type::Str) => Err(ExprError::new(
            span_of(ast).unwrap_or(0..0),
            "expected a number here, found a string",
        )),
    }
}

fn span_of(ast: &Ast) -> Option<Range<usize>> {
    match ast {
        Ast::Name(_, s) | Ast::Bin(_, _, _, s) | Ast::Call(_, _, s) => Some(s.clone()),
        Ast::Neg(a) | Ast::Not(a) => span_of(a),
        _ => None,
    }
}

fn truth(x: f64) -> bool {
    x != 0.0
}

fn b(x: bool) -> f64 {
    if x {
        1.0
    } else {
        0.0
    }
}

impl Expr {
    /// Evaluates with numeric variables `vars` and string variables `strs`.
    pub fn eval(&self, vars: &[f64], strs: &[&str]) -> f64 {
        match self {
            Expr::Num(n) => *n,
            Expr::Var(i) => vars[*i],
            Expr::Str(_) | Expr::SVar(_) => 0.0,
            Expr::Neg(a) => -a.eval(vars, strs),
            Expr::Not(a) => b(!truth(a.eval(vars, strs))),
            Expr::StrEq(eq, x, y) => b((x.str(strs) == y.str(strs)) == *eq),
            Expr::Bin(op, x, y) => {
                let l = x.eval(vars, strs);
                match op {
                    BinOp::And => return b(truth(l) && truth(y.eval(vars, strs))),
                    BinOp::Or => return b(truth(l) || truth(y.eval(vars, strs))),
                    _ => {}
                }
                let r = y.eval(vars, strs);
                match op {
                    BinOp::Eq => b(l == r),
                    BinOp::Ne => b(l != r),
                    BinOp::Lt => b(l < r),
                    BinOp::Le => b(l <= r),
                    BinOp::Gt => b(l > r),
                    BinOp::Ge => b(l >= r),
                    BinOp::Add => l + r,
                    BinOp::Sub => l - r,
                    BinOp::Mul => l * r,
                    BinOp::Div if r == 0.0 => 0.0,
                    BinOp::Div => l / r,
                    BinOp::And | BinOp::Or => unreachable!("handled above"),
                }
            }
            Expr::Call(f, args) => {
                let a = |i: usize| args[i].eval(vars, strs);
                match f {
                    Func::Abs => a(0).abs(),
                    Func::Sqrt => a(0).max(0.0).sqrt(),
                    Func::Ln => {
                        let x = a(0);
                        if x > 0.0 {
                            x.ln()
                        } else {
                            0.0
                        }
                    }
                    Func::Exp => a(0).clamp(-700.0, 700.0).exp(),
                    Func::Min => (1..args.len()).fold(a(0), |m, i| m.min(a(i))),
                    Func::Max => (1..args.len()).fold(a(0), |m, i| m.max(a(i))),
                    Func::Clamp => a(0).max(a(1)).min(a(2)),
                    Func::Sign => {
                        let x = a(0);
                        if x > 0.0 {
                            1.0
                        } else if x < 0.0 {
                            -1.0
                        } else {
                            0.0
                        }
                    }
                    Func::If => {
                        if truth(a(0)) {
                            a(1)
                        } else {
                            a(2)
                        }
                    }
                    Func::Sigmoid => 1.0 / (1.0 + (-a(0)).clamp(-700.0, 700.0).exp()),
                    Func::Floor => a(0).floor(),
                    Func::Ceil => a(0).ceil(),
                    Func::Round => a(0).round(),
                }
            }
        }
    }

    fn str<'s>(&'s self, strs: &[&'s str]) -> &'s str {
        match self {
            Expr::Str(s) => s,
            Expr::SVar(i) => strs[*i],
            _ => "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(text: &str, names: &[&str], vars: &[f64]) -> f64 {
        let ast = parse(text).unwrap();
        let (e, _) = resolve(&ast, &mut |n, s| {
            names
                .iter()
                .position(|x| *x == n)
                .map(|i| (i, Type::Num))
                .ok_or_else(|| ExprError::new(s.clone(), "unknown"))
        })
        .unwrap();
        e.eval(vars, &[])
    }

    #[test]
    fn precedence_and_functions() {
        assert_eq!(eval("1 + 2 * 3", &[], &[]), 7.0);
        assert_eq!(eval("(1 + 2) * 3", &[], &[]), 9.0);
        assert_eq!(eval("-x / 2", &["x"], &[4.0]), -2.0);
        assert_eq!(eval("x > 1 && x < 3", &["x"], &[2.0]), 1.0);
        assert_eq!(eval("if(x >= 3, 10, 20)", &["x"], &[2.0]), 20.0);
        assert_eq!(eval("clamp(x, -1, 1)", &["x"], &[5.0]), 1.0);
        assert_eq!(eval("max(1, x, 3)", &["x"], &[7.0]), 7.0);
        assert_eq!(eval("1 - 2 - 3", &[], &[]), -4.0);
        assert_eq!(
            eval("a.home - a.away", &["a.home", "a.away"], &[3.0, 1.0]),
            2.0
        );
        assert_eq!(eval("1.5e2 + 1_000", &[], &[]), 1150.0);
    }

    #[test]
    fn functions_are_total() {
        assert_eq!(eval("1 / 0", &[], &[]), 0.0);
        assert_eq!(eval("sqrt(-4)", &[], &[]), 0.0);
        assert_eq!(eval("ln(0)", &[], &[]), 0.0);
        assert!(eval("exp(10000)", &[], &[]).is_finite());
    }

    #[test]
    fn errors_point_at_the_offending_text() {
        let e = parse("1 + * 2").unwrap_err();
        assert_eq!(e.span, 4..5);
        let e = parse("sqr(2)").unwrap_err();
        assert_eq!(e.span, 0..3);
        assert_eq!(e.hint.as_deref(), Some("did you mean `sqrt`?"));
        let e = parse("clamp(1, 2)").unwrap_err();
        assert!(e.message.contains("takes 3 arguments"), "{}", e.message);
        let e = parse("a = 1").unwrap_err();
        assert_eq!(e.span, 2..3);
        let e = parse("(1 + 2").unwrap_err();
        assert!(e.message.contains("expected `)`"), "{}", e.message);
    }
}
