//! Label selectors (`-l`), with the Kubernetes grammar: `a=b`, `a==b`, `a!=b`, `a in (x,y)`,
//! `a notin (x)`, `a`, `!a`, `a>1`, `a<1`, comma-separated, all of which must match. The agent
//! serves every pod of the node, so selecting is done here.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub op: Op,
    pub values: Vec<String>,
}

/// A parsed selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    pub requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Comma,
    Not,
    NotEquals,
    Equals,
    DoubleEquals,
    Greater,
    Less,
    Open,
    Close,
    In,
    NotIn,
    End,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Ident(s) => s.clone(),
            Token::Comma => ",".into(),
            Token::Not => "!".into(),
            Token::NotEquals => "!=".into(),
            Token::Equals => "=".into(),
            Token::DoubleEquals => "==".into(),
            Token::Greater => ">".into(),
            Token::Less => "<".into(),
            Token::Open => "(".into(),
            Token::Close => ")".into(),
            Token::In => "in".into(),
            Token::NotIn => "notin".into(),
            Token::End => String::new(),
        }
    }
}

const SPECIAL: &[char] = &['!', '=', '>', '<', '(', ')', ','];

fn lex(input: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if SPECIAL.contains(&c) {
            chars.next();
            let two = chars.peek() == Some(&'=');
            let tok = match (c, two) {
                ('!', true) => Token::NotEquals,
                ('=', true) => Token::DoubleEquals,
                ('!', false) => Token::Not,
                ('=', false) => Token::Equals,
                ('>', _) => Token::Greater,
                ('<', _) => Token::Less,
                ('(', _) => Token::Open,
                (')', _) => Token::Close,
                _ => Token::Comma,
            };
            if matches!(tok, Token::NotEquals | Token::DoubleEquals) {
                chars.next();
            }
            tokens.push(tok);
            continue;
        }
        let mut word = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() || SPECIAL.contains(&c) {
                break;
            }
            word.push(c);
            chars.next();
        }
        tokens.push(match word.as_str() {
            "in" => Token::In,
            "notin" => Token::NotIn,
            _ => Token::Ident(word),
        });
    }
    tokens.push(Token::End);
    tokens
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        self.tokens.get(self.pos).unwrap_or(&Token::End)
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        self.pos += 1;
        t
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        let negated = if *self.peek() == Token::Not {
            self.next();
            true
        } else {
            false
        };
        let key = match self.next() {
            Token::Ident(k) => k,
            t => return Err(format!("found '{}', expected: identifier", t.describe())),
        };
        validate_key(&key)?;
        if negated {
            return Ok(Requirement {
                key,
                op: Op::DoesNotExist,
                values: vec![],
            });
        }
        if matches!(self.peek(), Token::End | Token::Comma) {
            return Ok(Requirement {
                key,
                op: Op::Exists,
                values: vec![],
            });
        }
        let op = match self.next() {
            Token::Equals | Token::DoubleEquals => Op::Equals,
            Token::NotEquals => Op::NotEquals,
            Token::In => Op::In,
            Token::NotIn => Op::NotIn,
            Token::Greater => Op::GreaterThan,
            Token::Less => Op::LessThan,
            t => {
                return Err(format!(
                    "found '{}', expected: '=', '!=', '==', 'in', notin'",
                    t.describe()
                ));
            }
        };
        let values = if matches!(op, Op::In | Op::NotIn) {
            self.set()?
        } else {
            // `a=` selects the empty value.
            match self.peek().clone() {
                Token::End | Token::Comma => vec![String::new()],
                Token::Ident(v) => {
                    self.next();
                    vec![v]
                }
                t => return Err(format!("found '{}', expected: identifier", t.describe())),
            }
        };
        for v in &values {
            validate_value(v)?;
        }
        if matches!(op, Op::GreaterThan | Op::LessThan) && values.iter().any(|v| v.parse::<i64>().is_err()) {
            return Err(format!(
                "for 'Gt', 'Lt' operators, the value must be an integer: {values:?}"
            ));
        }
        Ok(Requirement { key, op, values })
    }

    fn set(&mut self) -> Result<Vec<String>, String> {
        match self.next() {
            Token::Open => {}
            t => return Err(format!("found '{}', expected: '('", t.describe())),
        }
        let mut values = Vec::new();
        loop {
            match self.next() {
                Token::Ident(v) => {
                    values.push(v);
                    match self.next() {
                        Token::Comma => continue,
                        Token::Close => break,
                        t => return Err(format!("found '{}', expected: ',' or ')'", t.describe())),
                    }
                }
                // `in ()` and `in (a,)`: an empty value.
                Token::Close => {
                    values.push(String::new());
                    break;
                }
                Token::Comma => values.push(String::new()),
                t => return Err(format!("found '{}', expected: ',', ')' or identifier", t.describe())),
            }
        }
        values.dedup();
        Ok(values)
    }
}

fn valid_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn validate_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                let b = l.as_bytes();
                !b.is_empty()
                    && b.len() <= 63
                    && b[0].is_ascii_alphanumeric()
                    && b[b.len() - 1].is_ascii_alphanumeric()
                    && b.iter()
                        .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
            })
    });
    if prefix_ok && valid_name_part(name) {
        Ok(())
    } else {
        Err(format!(
            "invalid label key \"{key}\": name part must consist of alphanumeric characters, '-', '_' or '.', \
             and must start and end with an alphanumeric character"
        ))
    }
}

fn validate_value(v: &str) -> Result<(), String> {
    if v.is_empty() || valid_name_part(v) {
        Ok(())
    } else {
        Err(format!(
            "invalid label value: \"{v}\": a valid label must be an empty string or consist of alphanumeric \
             characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        ))
    }
}

impl Selector {
    /// The `-l` flag: absent selects everything.
    pub fn from_flag(flag: Option<&str>) -> anyhow::Result<Self> {
        flag.map_or_else(
            || Ok(Selector::default()),
            |s| Selector::parse(s).map_err(anyhow::Error::msg),
        )
    }

    /// Parse a selector, with errors worded as kubectl's (`unable to parse requirement: …`).
    pub fn parse(input: &str) -> Result<Self, String> {
        let mut p = Parser {
            tokens: lex(input),
            pos: 0,
        };
        let mut requirements = Vec::new();
        if *p.peek() == Token::End {
            return Ok(Selector::default());
        }
        loop {
            let r = p
                .requirement()
                .map_err(|e| format!("unable to parse requirement: {e}"))?;
            requirements.push(r);
            match p.next() {
                Token::End => break,
                Token::Comma => {
                    if *p.peek() == Token::End {
                        return Err("found '', expected: identifier after ','".into());
                    }
                }
                t => return Err(format!("found '{}', expected: ',' or 'end of string'", t.describe())),
            }
        }
        Ok(Selector { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        let empty = BTreeMap::new();
        let labels = labels.unwrap_or(&empty);
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        let in_set = || value.is_some_and(|v| self.values.contains(v));
        let number = || value.and_then(|v| v.parse::<i64>().ok());
        let bound = || self.values.first().and_then(|v| v.parse::<i64>().ok());
        match self.op {
            Op::Equals | Op::In => in_set(),
            Op::NotEquals | Op::NotIn => !in_set(),
            Op::Exists => value.is_some(),
            Op::DoesNotExist => value.is_none(),
            Op::GreaterThan => matches!((number(), bound()), (Some(n), Some(b)) if n > b),
            Op::LessThan => matches!((number(), bound()), (Some(n), Some(b)) if n < b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn sel(s: &str) -> Selector {
        Selector::parse(s).unwrap()
    }

    #[test]
    fn parses_every_operator() {
        let s = sel("app=web, tier==front,env!=prod,zone in (a, b),track notin (canary),ready,!legacy,gen>3");
        let ops: Vec<_> = s.requirements.iter().map(|r| r.op.clone()).collect();
        assert_eq!(
            ops,
            vec![
                Op::Equals,
                Op::Equals,
                Op::NotEquals,
                Op::In,
                Op::NotIn,
                Op::Exists,
                Op::DoesNotExist,
                Op::GreaterThan
            ]
        );
        assert_eq!(s.requirements[3].values, vec!["a", "b"]);
        assert_eq!(sel("example.com/app=x").requirements[0].key, "example.com/app");
        assert_eq!(sel("a=").requirements[0].values, vec![""]);
        assert!(sel("").is_empty());
    }

    #[test]
    fn rejects_malformed_selectors() {
        for bad in [
            "a in",
            "a in (x",
            "=b",
            "a=b,",
            "a b",
            "a=(b)",
            "-a=b",
            "a=b c",
            "a>x",
            "Bad.Prefix/a=b",
        ] {
            let err = Selector::parse(bad).unwrap_err();
            assert!(!err.is_empty(), "{bad}");
        }
        assert!(
            Selector::parse("a in")
                .unwrap_err()
                .starts_with("unable to parse requirement: found '', expected: '('")
        );
    }

    #[test]
    fn matching() {
        let l = labels(&[("app", "web"), ("env", "dev"), ("gen", "5")]);
        let yes = [
            "app=web",
            "app==web",
            "env!=prod",
            "missing!=x",
            "app in (web,api)",
            "env notin (prod)",
            "missing notin (x)",
            "app",
            "!missing",
            "gen>4",
            "gen<6",
            "app=web,env=dev",
        ];
        for s in yes {
            assert!(sel(s).matches(Some(&l)), "{s}");
        }
        let no = [
            "app=api",
            "env!=dev",
            "app in (api)",
            "env notin (dev)",
            "missing",
            "!app",
            "gen>5",
            "app=web,env=prod",
        ];
        for s in no {
            assert!(!sel(s).matches(Some(&l)), "{s}");
        }
        assert!(sel("!app").matches(None));
        assert!(!sel("app").matches(None));
    }
}
