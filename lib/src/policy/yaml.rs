//! A located YAML tree: every node keeps the line and column it starts at, so errors found after parsing
//! (unknown fields, unknown names, contradictions) still point into the file.
//!
//! Built from saphyr-parser's event stream. Only what a policy needs: one document of mappings, sequences and
//! scalars. Aliases are expanded under a node budget so an alias bomb is an error, not an OOM.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use super::schema::Loc;
use super::ErrorKind;

/// Deepest nesting accepted; policies need about six levels.
const MAX_DEPTH: usize = 64;
/// Most nodes a document may expand to, counting alias copies.
const MAX_NODES: usize = 200_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A scalar; `plain` is false for quoted and block scalars, which are always strings.
    Scalar {
        value: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    pub kind: Kind,
    pub loc: Loc,
}

impl Node {
    /// A short name of the node's type for "expected X, found Y" messages.
    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            Kind::Scalar { value, plain: true } if is_null(value) => "null",
            Kind::Scalar { .. } => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { value, plain: true } if is_null(value))
    }
}

fn is_null(s: &str) -> bool {
    matches!(s, "" | "~" | "null" | "Null" | "NULL")
}

fn loc_of(span: &Span) -> Loc {
    // saphyr lines are 1-based and columns 0-based; editors and compilers count both from 1.
    Loc {
        line: u32::try_from(span.start.line()).unwrap_or(u32::MAX),
        column: u32::try_from(span.start.col().saturating_add(1)).unwrap_or(u32::MAX),
    }
}

/// Parse `text` into one located tree. `Ok(None)` for an empty document.
pub(crate) fn parse(text: &str) -> Result<Option<Node>, (Loc, ErrorKind)> {
    let mut b = Builder { parser: Parser::new_from_str(text), anchors: HashMap::new(), nodes: 0 };
    let mut doc: Option<Node> = None;
    loop {
        let (ev, span) = b.next()?;
        match ev {
            Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
            Event::StreamEnd => break,
            Event::DocumentStart(_) => {
                let node = b.node(0)?;
                if doc.is_some() {
                    return Err((node.loc, ErrorKind::MultipleDocuments));
                }
                doc = Some(node);
            }
            _ => return Err((loc_of(&span), ErrorKind::Syntax { message: "unexpected YAML event".into() })),
        }
    }
    // A document holding only a null scalar (an empty or comment-only file) counts as empty.
    Ok(doc.filter(|d| !d.is_null()))
}

struct Builder<'a> {
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    /// Anchored nodes by anchor id (ids start at 1, one per anchor definition; 0 means no anchor), with their
    /// sizes in nodes.
    anchors: HashMap<usize, (Node, usize)>,
    nodes: usize,
}

impl<'a> Builder<'a> {
    fn next(&mut self) -> Result<(Event<'a>, Span), (Loc, ErrorKind)> {
        match self.parser.next_event() {
            Some(Ok(x)) => Ok(x),
            Some(Err(e)) => {
                let m = e.marker();
                let loc = Loc {
                    line: u32::try_from(m.line()).unwrap_or(u32::MAX),
                    column: u32::try_from(m.col().saturating_add(1)).unwrap_or(u32::MAX),
                };
                Err((loc, ErrorKind::Syntax { message: e.info().to_owned() }))
            }
            None => Err((Loc::default(), ErrorKind::Syntax { message: "unexpected end of input".into() })),
        }
    }

    fn count(&mut self, n: usize, loc: Loc) -> Result<(), (Loc, ErrorKind)> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err((loc, ErrorKind::TooLarge { max_nodes: MAX_NODES }));
        }
        Ok(())
    }

    /// Keeps a copy of an anchored node. The copy counts against the budget like an alias does: nested anchors
    /// would otherwise keep quadratically many nodes.
    fn anchor(&mut self, id: usize, node: &Node) -> Result<(), (Loc, ErrorKind)> {
        if id != 0 {
            let n = size(node);
            self.count(n, node.loc)?;
            self.anchors.insert(id, (node.clone(), n));
        }
        Ok(())
    }

    /// Read one node; `depth` guards against stack exhaustion on deeply nested input.
    fn node(&mut self, depth: usize) -> Result<Node, (Loc, ErrorKind)> {
        let (ev, span) = self.next()?;
        let loc = loc_of(&span);
        if depth > MAX_DEPTH {
            return Err((loc, ErrorKind::TooDeep { max_depth: MAX_DEPTH }));
        }
        self.count(1, loc)?;
        match ev {
            Event::Scalar(value, style, anchor, _) => {
                let node =
                    Node { kind: Kind::Scalar { value: value.into_owned(), plain: style == ScalarStyle::Plain }, loc };
                self.anchor(anchor, &node)?;
                Ok(node)
            }
            Event::Alias(id) => {
                match self.anchors.get(&id).map(|&(_, n_size)| n_size) {
                    Some(n_size) => {
                        self.count(n_size, loc)?;
                        let mut n = self.anchors[&id].0.clone();
                        // Point errors inside the copy at the alias, where the reader will look.
                        relocate(&mut n, loc);
                        Ok(n)
                    }
                    None => Err((loc, ErrorKind::Syntax { message: "alias to an unknown anchor".into() })),
                }
            }
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                loop {
                    if let Some(Ok((Event::SequenceEnd, _))) = self.parser.peek() {
                        self.next()?;
                        break;
                    }
                    items.push(self.node(depth + 1)?);
                }
                let node = Node { kind: Kind::Seq(items), loc };
                self.anchor(anchor, &node)?;
                Ok(node)
            }
            Event::MappingStart(anchor, _) => {
                let mut pairs = Vec::new();
                loop {
                    if let Some(Ok((Event::MappingEnd, _))) = self.parser.peek() {
                        self.next()?;
                        break;
                    }
                    let k = self.node(depth + 1)?;
                    let v = self.node(depth + 1)?;
                    pairs.push((k, v));
                }
                let node = Node { kind: Kind::Map(pairs), loc };
                self.anchor(anchor, &node)?;
                Ok(node)
            }
            _ => Err((loc, ErrorKind::Syntax { message: "unexpected YAML event".into() })),
        }
    }
}

fn size(n: &Node) -> usize {
    match &n.kind {
        Kind::Scalar { .. } => 1,
        Kind::Seq(v) => 1 + v.iter().map(size).sum::<usize>(),
        Kind::Map(v) => 1 + v.iter().map(|(k, v)| size(k) + size(v)).sum::<usize>(),
    }
}

fn relocate(n: &mut Node, loc: Loc) {
    n.loc = loc;
    match &mut n.kind {
        Kind::Scalar { .. } => {}
        Kind::Seq(v) => v.iter_mut().for_each(|x| relocate(x, loc)),
        Kind::Map(v) => v.iter_mut().for_each(|(k, x)| {
            relocate(k, loc);
            relocate(x, loc);
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar_at(n: &Node, key: &str) -> Option<Loc> {
        if let Kind::Map(pairs) = &n.kind {
            for (k, v) in pairs {
                if matches!(&k.kind, Kind::Scalar { value, .. } if value == key) {
                    return Some(v.loc);
                }
            }
        }
        None
    }

    #[test]
    fn locations_are_one_based() {
        let t = parse("a: 1\nbb:\n  - x\n  - 'y'\n").unwrap().unwrap();
        assert_eq!(t.loc, Loc { line: 1, column: 1 });
        assert_eq!(scalar_at(&t, "a"), Some(Loc { line: 1, column: 4 }));
        let Kind::Map(p) = &t.kind else { panic!() };
        let Kind::Seq(items) = &p[1].1.kind else { panic!() };
        assert_eq!(items[1].loc, Loc { line: 4, column: 5 });
        assert_eq!(items[1].kind, Kind::Scalar { value: "y".into(), plain: false });
    }

    #[test]
    fn empty_and_comment_only_are_none() {
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("# nothing\n").unwrap(), None);
    }

    #[test]
    fn syntax_error_has_location() {
        let (loc, e) = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(matches!(e, ErrorKind::Syntax { .. }));
        assert!(loc.line >= 1);
    }

    #[test]
    fn two_documents_rejected() {
        let (loc, e) = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert_eq!(e, ErrorKind::MultipleDocuments);
        assert_eq!(loc.line, 3);
    }

    #[test]
    fn aliases_expand_and_bombs_stop() {
        let t = parse("a: &x [1, 2]\nb: *x\n").unwrap().unwrap();
        let Kind::Map(p) = &t.kind else { panic!() };
        assert!(matches!(&p[1].1.kind, Kind::Seq(v) if v.len() == 2));
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let prev = i - 1;
            bomb.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let (_, e) = parse(&bomb).unwrap_err();
        assert!(matches!(e, ErrorKind::TooLarge { .. }));
    }

    #[test]
    fn deep_nesting_stops() {
        let s = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let (_, e) = parse(&s).unwrap_err();
        assert!(matches!(e, ErrorKind::TooDeep { .. }));
    }
}
