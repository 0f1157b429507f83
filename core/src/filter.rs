//! `--filter EXPR`: a small tcpdump-like language over ICMP events, parsed
//! by recursive descent. The same compiled filter decides which events
//! reach the aggregator, the CSV/JSONL rows and the dashboard.
//!
//! ```text
//! expr    := and ( "or" and )*
//! and     := unary ( "and" unary )*
//! unary   := "not" unary | "(" expr ")" | match
//! match   := ("host" | "src" | "dst") ADDR[/LEN]
//!          | "type" NAME|NUM | "code" NUM | "family" 4|6 | "dir" in|out
//! ```
//! `&&`, `||` and `!` are accepted for `and`, `or` and `not`.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::event::{kind_name, Direction, Family, IcmpEvent};

/// A parse error, with the byte offset of the offending token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at column {}\n  {expr}\n  {caret:>width$}", .pos + 1, caret = "^", width = .pos + 1)]
pub struct FilterError {
    pub pos: usize,
    pub message: String,
    pub expr: String,
}

/// ICMP type names (either family) accepted by `type NAME`.
const TYPE_NAMES: &[(&str, &[(Family, u8)])] = &[
    ("echo-request", &[(Family::V4, 8), (Family::V6, 128)]),
    ("echo-reply", &[(Family::V4, 0), (Family::V6, 129)]),
    ("unreachable", &[(Family::V4, 3), (Family::V6, 1)]),
    ("time-exceeded", &[(Family::V4, 11), (Family::V6, 3)]),
    ("redirect", &[(Family::V4, 5), (Family::V6, 137)]),
    ("parameter-problem", &[(Family::V4, 12), (Family::V6, 4)]),
    ("packet-too-big", &[(Family::V6, 2)]),
    ("source-quench", &[(Family::V4, 4)]),
    (
        "router-advertisement",
        &[(Family::V4, 9), (Family::V6, 134)],
    ),
    (
        "router-solicitation",
        &[(Family::V4, 10), (Family::V6, 133)],
    ),
    ("neighbor-solicitation", &[(Family::V6, 135)]),
    ("neighbor-advertisement", &[(Family::V6, 136)]),
    ("timestamp", &[(Family::V4, 13)]),
    ("timestamp-reply", &[(Family::V4, 14)]),
];

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Or(Box<Node>, Box<Node>),
    And(Box<Node>, Box<Node>),
    Not(Box<Node>),
    Host(IpNet),
    Src(IpNet),
    Dst(IpNet),
    TypeNum(u8),
    TypeName(&'static [(Family, u8)]),
    /// A `kind` name such as `port-unreachable` (type and code together).
    Kind(String),
    Code(u8),
    Family(Family),
    Dir(Direction),
}

/// Bounds that keep parsing, matching and dropping a filter off the end of
/// any thread's stack: nesting of `not` and parentheses, and words in all
/// (a chain of `and`/`or` nests one level per word).
const MAX_NESTING: usize = 64;
const MAX_TOKENS: usize = 1024;

/// A compiled filter; `Filter::default()` lets everything through.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Filter {
    root: Option<Node>,
    text: String,
}

impl Filter {
    pub fn parse(expr: &str) -> Result<Self, FilterError> {
        let tokens = tokenize(expr);
        if tokens.is_empty() {
            return Ok(Self::default());
        }
        if let Some(t) = tokens.get(MAX_TOKENS) {
            return Err(FilterError {
                pos: t.pos,
                message: format!("a filter has at most {MAX_TOKENS} words"),
                expr: expr.to_string(),
            });
        }
        let mut p = Parser {
            expr,
            tokens,
            at: 0,
            depth: 0,
        };
        let root = p.or()?;
        if let Some(t) = p.peek() {
            return Err(p.error_at(t.pos, format!("unexpected '{}'", t.text)));
        }
        Ok(Self {
            root: Some(root),
            text: expr.trim().to_string(),
        })
    }

    /// The expression as given (empty when it matches everything).
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn matches(&self, ev: &IcmpEvent) -> bool {
        self.root.as_ref().is_none_or(|n| eval(n, ev))
    }
}

fn eval(node: &Node, ev: &IcmpEvent) -> bool {
    match node {
        Node::Or(a, b) => eval(a, ev) || eval(b, ev),
        Node::And(a, b) => eval(a, ev) && eval(b, ev),
        Node::Not(a) => !eval(a, ev),
        Node::Host(net) => net.contains(&ev.src) || net.contains(&ev.dst),
        Node::Src(net) => net.contains(&ev.src),
        Node::Dst(net) => net.contains(&ev.dst),
        Node::TypeNum(t) => ev.icmp_type == *t,
        Node::TypeName(set) => set.contains(&(ev.family, ev.icmp_type)),
        Node::Kind(k) => kind_name(ev.family, ev.icmp_type, ev.icmp_code) == k.as_str(),
        Node::Code(c) => ev.icmp_code == *c,
        Node::Family(f) => ev.family == *f,
        Node::Dir(d) => ev.direction == *d,
    }
}

#[derive(Debug, Clone)]
struct Token<'a> {
    text: &'a str,
    pos: usize,
}

fn tokenize(expr: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut chars = expr.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if matches!(c, '(' | ')' | '!') {
            chars.next();
            out.push(Token {
                text: &expr[i..i + 1],
                pos: i,
            });
        } else {
            let mut end = i;
            while let Some(&(j, c)) = chars.peek() {
                if c.is_whitespace() || matches!(c, '(' | ')' | '!') {
                    break;
                }
                end = j + c.len_utf8();
                chars.next();
            }
            out.push(Token {
                text: &expr[i..end],
                pos: i,
            });
        }
    }
    out
}

struct Parser<'a> {
    expr: &'a str,
    tokens: Vec<Token<'a>>,
    at: usize,
    /// `not` and parentheses open around the current word.
    depth: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<Token<'a>> {
        self.tokens.get(self.at).cloned()
    }

    fn next(&mut self) -> Option<Token<'a>> {
        let t = self.peek();
        self.at += 1;
        t
    }

    fn eat(&mut self, words: &[&str]) -> bool {
        match self.peek() {
            Some(t) if words.iter().any(|w| t.text.eq_ignore_ascii_case(w)) => {
                self.at += 1;
                true
            }
            _ => false,
        }
    }

    fn error_at(&self, pos: usize, message: String) -> FilterError {
        FilterError {
            pos,
            message,
            expr: self.expr.to_string(),
        }
    }

    fn end_pos(&self) -> usize {
        self.expr.trim_end().len()
    }

    fn or(&mut self) -> Result<Node, FilterError> {
        let mut left = self.and()?;
        while self.eat(&["or", "||"]) {
            left = Node::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Node, FilterError> {
        let mut left = self.unary()?;
        while self.eat(&["and", "&&"]) {
            left = Node::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    /// Parses what follows a `not` or `(`, one level deeper.
    fn nested<T>(
        &mut self,
        pos: usize,
        parse: impl FnOnce(&mut Self) -> Result<T, FilterError>,
    ) -> Result<T, FilterError> {
        if self.depth == MAX_NESTING {
            return Err(self.error_at(
                pos,
                format!("'not' and parentheses nest at most {MAX_NESTING} deep"),
            ));
        }
        self.depth += 1;
        let r = parse(self);
        self.depth -= 1;
        r
    }

    fn unary(&mut self) -> Result<Node, FilterError> {
        let pos = self.peek().map_or(0, |t| t.pos);
        if self.eat(&["not", "!"]) {
            return Ok(Node::Not(Box::new(self.nested(pos, Self::unary)?)));
        }
        let Some(t) = self.next() else {
            return Err(self.error_at(self.end_pos(), "expected a match, 'not' or '('".into()));
        };
        if t.text == "(" {
            let inner = self.nested(t.pos, Self::or)?;
            return match self.next() {
                Some(c) if c.text == ")" => Ok(inner),
                Some(c) => Err(self.error_at(c.pos, format!("expected ')', found '{}'", c.text))),
                None => Err(self.error_at(self.end_pos(), "missing ')'".into())),
            };
        }
        let word = t.text.to_ascii_lowercase();
        let arg = |p: &mut Self, what: &str| {
            p.next().ok_or_else(|| {
                p.error_at(p.end_pos(), format!("expected {what} after '{}'", t.text))
            })
        };
        Ok(match word.as_str() {
            "host" | "src" | "dst" => {
                let a = arg(self, "an address or CIDR")?;
                let net = parse_net(a.text).ok_or_else(|| {
                    self.error_at(a.pos, format!("'{}' is not an address or CIDR", a.text))
                })?;
                match word.as_str() {
                    "host" => Node::Host(net),
                    "src" => Node::Src(net),
                    _ => Node::Dst(net),
                }
            }
            "type" => {
                let a = arg(self, "a type name or number")?;
                type_node(a.text).ok_or_else(|| {
                    let names: Vec<_> = TYPE_NAMES.iter().map(|(n, _)| *n).collect();
                    self.error_at(
                        a.pos,
                        format!(
                            "unknown ICMP type '{}' (a number, a kind such as port-unreachable, or one of: {})",
                            a.text,
                            names.join(", ")
                        ),
                    )
                })?
            }
            "code" => {
                let a = arg(self, "a number")?;
                Node::Code(a.text.parse().map_err(|_| {
                    self.error_at(a.pos, format!("'{}' is not a code (0-255)", a.text))
                })?)
            }
            "family" => {
                let a = arg(self, "4 or 6")?;
                Node::Family(match a.text {
                    "4" | "ipv4" | "ip" => Family::V4,
                    "6" | "ipv6" | "ip6" => Family::V6,
                    _ => return Err(self.error_at(a.pos, format!("family is 4 or 6, not '{}'", a.text))),
                })
            }
            "dir" => {
                let a = arg(self, "in, out or drop")?;
                Node::Dir(match a.text {
                    "in" => Direction::In,
                    "out" => Direction::Out,
                    "drop" => Direction::Drop,
                    _ => return Err(self.error_at(a.pos, format!("dir is in, out or drop, not '{}'", a.text))),
                })
            }
            _ => {
                return Err(self.error_at(
                    t.pos,
                    format!(
                        "unknown word '{}' (expected host, src, dst, type, code, family, dir, not or '(')",
                        t.text
                    ),
                ))
            }
        })
    }
}

fn parse_net(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .map(|n| n.trunc())
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

fn type_node(text: &str) -> Option<Node> {
    if let Ok(n) = text.parse::<u8>() {
        return Some(Node::TypeNum(n));
    }
    let lower = text.to_ascii_lowercase();
    if let Some((_, set)) = TYPE_NAMES.iter().find(|(n, _)| *n == lower) {
        return Some(Node::TypeName(set));
    }
    // A kind name (type and code), if any type/code carries it.
    let known = [Family::V4, Family::V6]
        .iter()
        .any(|&f| (0..=255u8).any(|t| (0..=16u8).any(|c| kind_name(f, t, c) == lower.as_str())));
    known.then_some(Node::Kind(lower))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Echo, Quoted};

    fn ev(src: &str, dst: &str, t: u8, code: u8, dir: Direction) -> IcmpEvent {
        let src: IpAddr = src.parse().unwrap();
        IcmpEvent {
            drop: None,
            mono_ns: None,
            ts_ns: 0,
            direction: dir,
            ifindex: 0,
            family: if src.is_ipv4() {
                Family::V4
            } else {
                Family::V6
            },
            src,
            dst: dst.parse().unwrap(),
            ttl: 64,
            length: 84,
            icmp_type: t,
            icmp_code: code,
            echo: None::<Echo>,
            quoted: None::<Quoted>,
            info: None,
        }
    }

    fn m(expr: &str, e: &IcmpEvent) -> bool {
        Filter::parse(expr).unwrap().matches(e)
    }

    #[test]
    fn matches_each_primitive() {
        let e = ev("10.0.0.1", "192.168.1.9", 3, 3, Direction::In);
        assert!(m("", &e));
        assert!(m("host 192.168.1.9", &e));
        assert!(m("src 10.0.0.0/8", &e));
        assert!(!m("dst 10.0.0.0/8", &e));
        assert!(m("dst 192.168.1.0/24", &e));
        assert!(m("type 3", &e));
        assert!(m("type unreachable", &e));
        assert!(m("type port-unreachable", &e));
        assert!(!m("type host-unreachable", &e));
        assert!(m("code 3", &e));
        assert!(m("family 4", &e));
        assert!(!m("family 6", &e));
        assert!(m("dir in", &e));
        assert!(!m("dir out", &e));
        let e6 = ev("fd00::1", "fd00::2", 128, 0, Direction::Out);
        assert!(m("type echo-request and family 6 and host fd00::/64", &e6));
    }

    #[test]
    fn precedence_and_parentheses() {
        let e = ev("10.0.0.1", "10.0.0.2", 8, 0, Direction::Out);
        // and binds tighter than or.
        assert!(m("type 0 or type 8 and dir out", &e));
        assert!(!m("(type 0 or type 8) and dir in", &e));
        assert!(m("not (type 0 or dir in)", &e));
        assert!(m("! type 0 && (dir out || dir in)", &e));
        assert!(!m("not not type 0", &e));
    }

    #[test]
    fn errors_point_at_the_offending_token() {
        // Bounded, so that no thread's stack runs out on a deep filter.
        let deep_not = format!("{}type 3", "not ".repeat(100));
        let deep_parens = format!("{}type 3", "(".repeat(100));
        // "type 3 or " is 10 characters and 3 words: word 1024 is the "3"
        // of the 342nd term.
        let long_chain = vec!["type 3"; 100_000].join(" or ");
        let cases: [(&str, usize, &str); 13] = [
            ("host", 4, "expected an address or CIDR after 'host'"),
            ("host 10.0.0.300", 5, "'10.0.0.300' is not an address"),
            ("type bogus", 5, "unknown ICMP type 'bogus'"),
            ("type 3 and", 10, "expected a match"),
            ("(type 3", 7, "missing ')'"),
            ("type 3 type 4", 7, "unexpected 'type'"),
            ("family 5", 7, "family is 4 or 6"),
            ("dir sideways", 4, "dir is in, out or drop"),
            ("code 300", 5, "is not a code"),
            ("port 80", 0, "unknown word 'port'"),
            (&deep_not, 64 * 4, "nest at most 64 deep"),
            (&deep_parens, 64, "nest at most 64 deep"),
            (&long_chain, 341 * 10 + 5, "at most 1024 words"),
        ];
        for (expr, pos, msg) in cases {
            let e = Filter::parse(expr).unwrap_err();
            assert_eq!(e.pos, pos, "{expr}: {e}");
            assert!(e.message.contains(msg), "{expr}: {}", e.message);
            let shown = e.to_string();
            let caret_line = shown.lines().last().unwrap();
            assert_eq!(caret_line.find('^'), Some(pos + 2), "{shown}");
        }
    }
}
