//! The OTTL grammar: statements (`editor(args) where condition`) and conditions, parsed
//! into the syntax tree below. Names are not resolved here; [`super::compile`] does that
//! against a context.

use std::fmt;

/// A parse error: where in the statement (a 0-based character offset) and what to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub at: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at character {}: {}", self.at + 1, self.message)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Nil,
    Bool(bool),
    Int(i64),
    Double(f64),
    Str(String),
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Key {
    Str(String),
    Int(i64),
}

/// `resource.attributes["k"]`: dotted names, then keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    pub names: Vec<String>,
    pub keys: Vec<Key>,
    pub at: usize,
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names.join("."))?;
        for k in &self.keys {
            match k {
                Key::Str(s) => write!(f, "[{s:?}]")?,
                Key::Int(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub name: String,
    pub args: Vec<Arg>,
    /// Keys after a converter: `Split(s, ",")[0]`.
    pub keys: Vec<Key>,
    pub at: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    pub name: Option<String>,
    pub value: Expr,
    pub at: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MathOp {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Literal(Literal),
    /// An upper-case name without arguments: `SPAN_KIND_SERVER`.
    Enum(String, usize),
    Path(Path),
    Call(Call),
    List(Vec<Expr>),
    Map(Vec<(String, Expr)>),
    Math(Box<Expr>, MathOp, Box<Expr>),
    /// A condition used as a value (an argument to a converter, a `set` value).
    Condition(Box<Condition>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Or(Vec<Condition>),
    And(Vec<Condition>),
    Not(Box<Condition>),
    Compare(Expr, CmpOp, Expr),
    /// A value that must be a bool: `true`, a path, `IsMatch(...)`.
    Value(Expr),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub editor: Call,
    pub condition: Option<Condition>,
}

pub fn statement(text: &str) -> Result<Statement, ParseError> {
    let mut p = Parser::new(text)?;
    let editor = match p.peek().clone() {
        Tok::Ident(name) if starts_lower(&name) => {
            let at = p.pos();
            p.next();
            if !matches!(p.peek(), Tok::LParen) {
                return Err(p.error(format!(
                    "a statement starts with an editor call, e.g. set(attributes[\"k\"], \"v\"); `{name}` is not followed by ("
                )));
            }
            p.call(name, at)?
        }
        Tok::Ident(name) => {
            return Err(p.error(format!(
                "a statement starts with an editor (lower case, e.g. set or delete_key); `{name}` is a converter, which only gives a value"
            )))
        }
        _ => return Err(p.error("a statement starts with an editor call, e.g. set(attributes[\"k\"], \"v\")".into())),
    };
    let condition = if p.keyword("where") {
        p.next();
        Some(p.or()?)
    } else {
        None
    };
    p.end("a statement is one editor call, optionally followed by `where` and a condition")?;
    Ok(Statement { editor, condition })
}

pub fn condition(text: &str) -> Result<Condition, ParseError> {
    let mut p = Parser::new(text)?;
    let c = p.or()?;
    p.end("a condition is comparisons and values joined by `and`, `or`, `not`")?;
    Ok(c)
}

fn starts_lower(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Int(i64),
    Double(f64),
    Bytes(Vec<u8>),
    LParen,
    RParen,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    Comma,
    Colon,
    Dot,
    Assign,
    Cmp(CmpOp),
    Math(MathOp),
    End,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Str(s) => format!("{s:?}"),
            Tok::Int(i) => i.to_string(),
            Tok::Double(d) => d.to_string(),
            Tok::Bytes(_) => "a bytes literal".into(),
            Tok::End => "the end of the statement".into(),
            other => format!("`{}`", symbol(other)),
        }
    }
}

fn symbol(t: &Tok) -> &'static str {
    match t {
        Tok::LParen => "(",
        Tok::RParen => ")",
        Tok::LBracket => "[",
        Tok::RBracket => "]",
        Tok::LBrace => "{",
        Tok::RBrace => "}",
        Tok::Comma => ",",
        Tok::Colon => ":",
        Tok::Dot => ".",
        Tok::Assign => "=",
        Tok::Cmp(CmpOp::Eq) => "==",
        Tok::Cmp(CmpOp::Ne) => "!=",
        Tok::Cmp(CmpOp::Lt) => "<",
        Tok::Cmp(CmpOp::Le) => "<=",
        Tok::Cmp(CmpOp::Gt) => ">",
        Tok::Cmp(CmpOp::Ge) => ">=",
        Tok::Math(MathOp::Add) => "+",
        Tok::Math(MathOp::Sub) => "-",
        Tok::Math(MathOp::Mul) => "*",
        Tok::Math(MathOp::Div) => "/",
        _ => "?",
    }
}

/// Statements are short; nesting deeper than this is refused rather than risking the
/// stack on a hostile config.
const MAX_DEPTH: usize = 64;

struct Parser {
    toks: Vec<(Tok, usize)>,
    i: usize,
    depth: usize,
}

impl Parser {
    fn new(text: &str) -> Result<Self, ParseError> {
        Ok(Parser {
            toks: lex(text)?,
            i: 0,
            depth: 0,
        })
    }

    fn peek(&self) -> &Tok {
        &self.toks[self.i].0
    }

    fn peek_at(&self, n: usize) -> &Tok {
        &self.toks[(self.i + n).min(self.toks.len() - 1)].0
    }

    fn pos(&self) -> usize {
        self.toks[self.i].1
    }

    fn next(&mut self) -> Tok {
        let t = self.toks[self.i].0.clone();
        if self.i + 1 < self.toks.len() {
            self.i += 1;
        }
        t
    }

    fn error(&self, message: String) -> ParseError {
        ParseError {
            at: self.pos(),
            message,
        }
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Tok::Ident(w) if w == word)
    }

    fn expect(&mut self, want: Tok) -> Result<(), ParseError> {
        if *self.peek() == want {
            self.next();
            Ok(())
        } else {
            Err(self.error(format!(
                "expected `{}`, found {}",
                symbol(&want),
                self.peek().describe()
            )))
        }
    }

    fn end(&self, what: &str) -> Result<(), ParseError> {
        match self.peek() {
            Tok::End => Ok(()),
            Tok::Assign => Err(self.error("unexpected `=`: write `==` to compare".into())),
            t => Err(self.error(format!("unexpected {} ({what})", t.describe()))),
        }
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error("nested too deeply".into()));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Condition, ParseError> {
        self.enter()?;
        let mut terms = vec![self.and()?];
        while self.keyword("or") {
            self.next();
            terms.push(self.and()?);
        }
        self.depth -= 1;
        Ok(if terms.len() == 1 {
            terms.pop().expect("one term")
        } else {
            Condition::Or(terms)
        })
    }

    fn and(&mut self) -> Result<Condition, ParseError> {
        let mut terms = vec![self.not()?];
        while self.keyword("and") {
            self.next();
            terms.push(self.not()?);
        }
        Ok(if terms.len() == 1 {
            terms.pop().expect("one term")
        } else {
            Condition::And(terms)
        })
    }

    fn not(&mut self) -> Result<Condition, ParseError> {
        if self.keyword("not") {
            self.next();
            self.enter()?;
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Condition::Not(Box::new(inner)));
        }
        // A parenthesised condition, or parentheses grouping a math expression
        // (`(a + b) > 2`): parsed as a condition, which then continues as a value.
        let left = if matches!(self.peek(), Tok::LParen) {
            let at = self.pos();
            self.next();
            let inner = self.or()?;
            self.expect(Tok::RParen)?;
            if !matches!(self.peek(), Tok::Cmp(_) | Tok::Math(_)) {
                return Ok(inner);
            }
            match inner {
                Condition::Value(e) => self.expr_after(e)?,
                _ => {
                    return Err(ParseError {
                        at,
                        message: "a condition in parentheses cannot be compared or computed with"
                            .into(),
                    })
                }
            }
        } else {
            self.expr()?
        };
        if let Tok::Cmp(op) = *self.peek() {
            self.next();
            let right = self.expr()?;
            return Ok(Condition::Compare(left, op, right));
        }
        Ok(Condition::Value(left))
    }

    /// A value: math over terms.
    fn expr(&mut self) -> Result<Expr, ParseError> {
        self.enter()?;
        let mut left = self.product()?;
        while let Tok::Math(op @ (MathOp::Add | MathOp::Sub)) = *self.peek() {
            self.next();
            let right = self.product()?;
            left = Expr::Math(Box::new(left), op, Box::new(right));
        }
        self.depth -= 1;
        Ok(left)
    }

    /// The rest of a value whose first term is `first`.
    fn expr_after(&mut self, first: Expr) -> Result<Expr, ParseError> {
        let mut left = self.product_after(first)?;
        while let Tok::Math(op @ (MathOp::Add | MathOp::Sub)) = *self.peek() {
            self.next();
            let right = self.product()?;
            left = Expr::Math(Box::new(left), op, Box::new(right));
        }
        Ok(left)
    }

    fn product(&mut self) -> Result<Expr, ParseError> {
        let first = self.term()?;
        self.product_after(first)
    }

    fn product_after(&mut self, first: Expr) -> Result<Expr, ParseError> {
        let mut left = first;
        while let Tok::Math(op @ (MathOp::Mul | MathOp::Div)) = *self.peek() {
            self.next();
            let right = self.term()?;
            left = Expr::Math(Box::new(left), op, Box::new(right));
        }
        Ok(left)
    }

    fn term(&mut self) -> Result<Expr, ParseError> {
        let at = self.pos();
        match self.next() {
            Tok::Str(s) => Ok(Expr::Literal(Literal::Str(s))),
            Tok::Int(i) => Ok(Expr::Literal(Literal::Int(i))),
            Tok::Double(d) => Ok(Expr::Literal(Literal::Double(d))),
            Tok::Bytes(b) => Ok(Expr::Literal(Literal::Bytes(b))),
            Tok::Math(MathOp::Sub) => match self.next() {
                Tok::Int(i) => Ok(Expr::Literal(Literal::Int(-i))),
                Tok::Double(d) => Ok(Expr::Literal(Literal::Double(-d))),
                _ => Err(ParseError {
                    at,
                    message: "`-` must be followed by a number here".into(),
                }),
            },
            Tok::LParen => {
                let inner = self.expr()?;
                self.expect(Tok::RParen)?;
                Ok(inner)
            }
            Tok::LBracket => {
                let mut items = Vec::new();
                while !matches!(self.peek(), Tok::RBracket) {
                    items.push(self.expr()?);
                    if !matches!(self.peek(), Tok::RBracket) {
                        self.expect(Tok::Comma)?;
                    }
                }
                self.next();
                Ok(Expr::List(items))
            }
            Tok::LBrace => {
                let mut entries = Vec::new();
                while !matches!(self.peek(), Tok::RBrace) {
                    let key = match self.next() {
                        Tok::Str(s) => s,
                        t => {
                            return Err(self.error(format!(
                                "a map key is a quoted string, found {}",
                                t.describe()
                            )))
                        }
                    };
                    self.expect(Tok::Colon)?;
                    entries.push((key, self.expr()?));
                    if !matches!(self.peek(), Tok::RBrace) {
                        self.expect(Tok::Comma)?;
                    }
                }
                self.next();
                Ok(Expr::Map(entries))
            }
            Tok::Ident(name) => match name.as_str() {
                "true" => Ok(Expr::Literal(Literal::Bool(true))),
                "false" => Ok(Expr::Literal(Literal::Bool(false))),
                "nil" => Ok(Expr::Literal(Literal::Nil)),
                _ if matches!(self.peek(), Tok::LParen) => {
                    if starts_lower(&name) {
                        return Err(ParseError {
                            at,
                            message: format!(
                                "`{name}` is an editor: editors only start a statement; a value comes from a converter (upper case, e.g. Concat)"
                            ),
                        });
                    }
                    let mut call = self.call(name, at)?;
                    call.keys = self.keys()?;
                    Ok(Expr::Call(call))
                }
                _ if starts_lower(&name) => {
                    let mut names = vec![name];
                    while matches!(self.peek(), Tok::Dot) {
                        self.next();
                        match self.next() {
                            Tok::Ident(n) => names.push(n),
                            t => {
                                return Err(self.error(format!(
                                    "expected a name after `.`, found {}",
                                    t.describe()
                                )))
                            }
                        }
                    }
                    let keys = self.keys()?;
                    Ok(Expr::Path(Path { names, keys, at }))
                }
                _ => Ok(Expr::Enum(name, at)),
            },
            t => Err(ParseError {
                at,
                message: format!("expected a value, found {}", t.describe()),
            }),
        }
    }

    fn keys(&mut self) -> Result<Vec<Key>, ParseError> {
        let mut keys = Vec::new();
        while matches!(self.peek(), Tok::LBracket) {
            self.next();
            match self.next() {
                Tok::Str(s) => keys.push(Key::Str(s)),
                Tok::Int(i) => keys.push(Key::Int(i)),
                t => {
                    return Err(self.error(format!(
                        "a key is a quoted string or an index, found {}",
                        t.describe()
                    )))
                }
            }
            self.expect(Tok::RBracket)?;
        }
        Ok(keys)
    }

    /// Arguments after the name, from the `(`.
    fn call(&mut self, name: String, at: usize) -> Result<Call, ParseError> {
        self.expect(Tok::LParen)?;
        self.enter()?;
        let mut args = Vec::new();
        while !matches!(self.peek(), Tok::RParen) {
            let arg_at = self.pos();
            let arg_name = match (self.peek().clone(), self.peek_at(1)) {
                (Tok::Ident(n), Tok::Assign) => {
                    self.next();
                    self.next();
                    Some(n)
                }
                _ => None,
            };
            if arg_name.is_none() && args.iter().any(|a: &Arg| a.name.is_some()) {
                return Err(self.error("a positional argument cannot follow a named one".into()));
            }
            // An argument may be a condition (`set(attributes["slow"], duration > 5)`).
            let value = match self.not_or_expr()? {
                Condition::Value(e) => e,
                c => Expr::Condition(Box::new(c)),
            };
            args.push(Arg {
                name: arg_name,
                value,
                at: arg_at,
            });
            if !matches!(self.peek(), Tok::RParen) {
                if !matches!(self.peek(), Tok::Comma) {
                    return Err(self.error(format!(
                        "expected `,` or `)` in the arguments of {name}, found {}",
                        self.peek().describe()
                    )));
                }
                self.next();
            }
        }
        self.next();
        self.depth -= 1;
        Ok(Call {
            name,
            args,
            keys: Vec::new(),
            at,
        })
    }

    fn not_or_expr(&mut self) -> Result<Condition, ParseError> {
        self.or()
    }
}

fn lex(text: &str) -> Result<Vec<(Tok, usize)>, ParseError> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |at: usize, message: &str| ParseError {
        at,
        message: message.to_string(),
    };
    while i < chars.len() {
        let (at, c) = chars[i];
        let peek = chars.get(i + 1).map(|&(_, c)| c);
        let single = match c {
            '(' => Some(Tok::LParen),
            ')' => Some(Tok::RParen),
            '[' => Some(Tok::LBracket),
            ']' => Some(Tok::RBracket),
            '{' => Some(Tok::LBrace),
            '}' => Some(Tok::RBrace),
            ',' => Some(Tok::Comma),
            ':' => Some(Tok::Colon),
            '.' if !peek.is_some_and(|p| p.is_ascii_digit()) => Some(Tok::Dot),
            '+' => Some(Tok::Math(MathOp::Add)),
            '*' => Some(Tok::Math(MathOp::Mul)),
            '/' => Some(Tok::Math(MathOp::Div)),
            _ => None,
        };
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if let Some(t) = single {
            out.push((t, at));
            i += 1;
            continue;
        }
        match (c, peek) {
            ('=', Some('=')) => {
                out.push((Tok::Cmp(CmpOp::Eq), at));
                i += 2;
            }
            ('=', _) => {
                out.push((Tok::Assign, at));
                i += 1;
            }
            ('!', Some('=')) => {
                out.push((Tok::Cmp(CmpOp::Ne), at));
                i += 2;
            }
            ('<', Some('=')) => {
                out.push((Tok::Cmp(CmpOp::Le), at));
                i += 2;
            }
            ('>', Some('=')) => {
                out.push((Tok::Cmp(CmpOp::Ge), at));
                i += 2;
            }
            ('<', _) => {
                out.push((Tok::Cmp(CmpOp::Lt), at));
                i += 1;
            }
            ('>', _) => {
                out.push((Tok::Cmp(CmpOp::Gt), at));
                i += 1;
            }
            ('-', _) => {
                out.push((Tok::Math(MathOp::Sub), at));
                i += 1;
            }
            ('"', _) => {
                let mut s = String::new();
                i += 1;
                loop {
                    let Some(&(_, c)) = chars.get(i) else {
                        return Err(err(at, "this string has no closing \""));
                    };
                    i += 1;
                    match c {
                        '"' => break,
                        '\\' => {
                            let Some(&(_, e)) = chars.get(i) else {
                                return Err(err(at, "this string has no closing \""));
                            };
                            i += 1;
                            let unescaped = match e {
                                'n' => '\n',
                                't' => '\t',
                                'r' => '\r',
                                '"' => '"',
                                '\\' => '\\',
                                // Kept as written, so regexes like "\\d" and "\d" both work.
                                other => {
                                    s.push('\\');
                                    other
                                }
                            };
                            s.push(unescaped);
                        }
                        c => s.push(c),
                    }
                }
                out.push((Tok::Str(s), at));
            }
            ('0', Some('x' | 'X')) => {
                let start = i + 2;
                let mut end = start;
                while chars.get(end).is_some_and(|&(_, c)| c.is_ascii_hexdigit()) {
                    end += 1;
                }
                let hex: String = chars[start..end].iter().map(|&(_, c)| c).collect();
                if hex.is_empty() || hex.len() % 2 == 1 {
                    return Err(err(
                        at,
                        "a bytes literal is 0x followed by an even number of hex digits",
                    ));
                }
                let bytes = (0..hex.len())
                    .step_by(2)
                    .map(|k| u8::from_str_radix(&hex[k..k + 2], 16).unwrap_or(0))
                    .collect();
                out.push((Tok::Bytes(bytes), at));
                i = end;
            }
            (c, _) if c.is_ascii_digit() || c == '.' => {
                let mut end = i;
                let mut float = false;
                while let Some(&(_, d)) = chars.get(end) {
                    if d.is_ascii_digit() {
                        end += 1;
                    } else if d == '.' || d == 'e' || d == 'E' {
                        float = true;
                        end += 1;
                        if matches!(chars.get(end), Some((_, '-' | '+'))) && (d == 'e' || d == 'E')
                        {
                            end += 1;
                        }
                    } else {
                        break;
                    }
                }
                let text: String = chars[i..end].iter().map(|&(_, c)| c).collect();
                let tok = if float {
                    text.parse().map(Tok::Double).map_err(|_| ())
                } else {
                    text.parse().map(Tok::Int).map_err(|_| ())
                };
                out.push((
                    tok.map_err(|_| err(at, &format!("`{text}` is not a number")))?,
                    at,
                ));
                i = end;
            }
            (c, _) if c.is_alphabetic() || c == '_' => {
                let mut end = i;
                while chars
                    .get(end)
                    .is_some_and(|&(_, c)| c.is_alphanumeric() || c == '_')
                {
                    end += 1;
                }
                out.push((
                    Tok::Ident(chars[i..end].iter().map(|&(_, c)| c).collect()),
                    at,
                ));
                i = end;
            }
            (c, _) => return Err(err(at, &format!("unexpected character `{c}`"))),
        }
    }
    out.push((Tok::End, text.len()));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_parse_into_calls_and_conditions() {
        let s = statement(r#"set(attributes["env"], "prod") where resource.attributes["k8s.ns"] == "a" and not IsMatch(name, "^GET")"#).unwrap();
        assert_eq!(s.editor.name, "set");
        assert_eq!(s.editor.args.len(), 2);
        let Some(Condition::And(terms)) = s.condition else {
            panic!("expected and")
        };
        assert!(matches!(terms[1], Condition::Not(_)));
        let c = condition(
            r#"(kind == SPAN_KIND_SERVER or duration > 5) and attributes["x"][0] != nil"#,
        )
        .unwrap();
        assert!(matches!(c, Condition::And(_)));
        let c = condition("(attributes[\"a\"] + 2) * 3 >= -1.5").unwrap();
        assert!(matches!(
            c,
            Condition::Compare(Expr::Math(..), CmpOp::Ge, Expr::Literal(Literal::Double(_)))
        ));
        let s = statement(r#"limit(attributes, 10, priority_keys = ["a"])"#).unwrap();
        assert_eq!(s.editor.args[2].name.as_deref(), Some("priority_keys"));
        let c = condition(r#"Split(body, ",")[1] == "b""#).unwrap();
        let Condition::Compare(Expr::Call(call), ..) = c else {
            panic!()
        };
        assert_eq!(call.keys, vec![Key::Int(1)]);
    }

    #[test]
    fn errors_say_where_and_what_to_write() {
        let e = statement(r#"set(attributes["a"], "b""#).unwrap_err();
        assert!(e.message.contains("`,` or `)`"), "{e}");
        let e = statement(r#"Concat(["a"], "")"#).unwrap_err();
        assert!(e.message.contains("converter"), "{e}");
        let e = condition(r#"name == "a" "#).map(|_| ());
        assert!(e.is_ok());
        let e = condition(r#"name == "a"#).unwrap_err();
        assert_eq!(e.at, 8);
        let e = condition(r#"name == "a" extra"#).unwrap_err();
        assert!(e.message.contains("unexpected"), "{e}");
        let deep = "(".repeat(200) + "true" + &")".repeat(200);
        assert!(condition(&deep).is_err());
    }
}
