//! RFC 1035 §5 master files in and out.
//!
//! Reading: `$ORIGIN`, `$TTL` (RFC 2308), relative names, `@`, escapes, parentheses, quoted
//! strings, comments, owner inheritance from the previous record, TTL and class in either order,
//! RFC 3597 `TYPEnnn` / `\#` generic data. `$INCLUDE` is refused unless the caller passes an
//! include reader: the core does no I/O, and an include is a file-system reach the operator must
//! opt into. Every error carries the line it was found on.

use crate::Error;
use crate::name::Name;
use crate::rdata::{self, RType, Token};

/// Nesting of `$INCLUDE`: deep enough for real layouts, shallow enough to stop include loops.
pub const INCLUDE_DEPTH_MAX: usize = 8;
/// Tokens in one record: a TXT of 64 KiB is ~260 strings; more is a malformed file.
pub const RECORD_TOKENS_MAX: usize = 4096;
/// RFC 1035 class IN; the only class zones are served in.
pub const CLASS_IN: u16 = 1;

/// One resource record read from a zone file, RDATA in uncompressed wire format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub owner: Name,
    pub rtype: RType,
    pub ttl: u32,
    pub rdata: Vec<u8>,
}

/// Where a zone-file error happened.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {error}")]
pub struct ParseError {
    pub line: usize,
    pub error: Error,
}

/// Reads the text of an `$INCLUDE`d file; supplied by the I/O layer.
pub type IncludeReader<'a> = &'a dyn Fn(&str) -> Result<String, String>;

/// Parses a whole zone file. `origin` is the zone's origin, the initial `$ORIGIN`.
pub fn parse(
    text: &str,
    origin: &Name,
    include: Option<IncludeReader>,
) -> Result<Vec<Record>, ParseError> {
    let mut state = State {
        origin: origin.clone(),
        default_ttl: None,
        last_ttl: None,
        last_owner: None,
        records: Vec::new(),
    };
    state.parse_text(text, include, 0)?;
    Ok(state.records)
}

struct State {
    origin: Name,
    default_ttl: Option<u32>,
    last_ttl: Option<u32>,
    last_owner: Option<Name>,
    records: Vec<Record>,
}

/// One logical line: tokens, whether it began with blank space (owner inherited), first line.
struct Entry {
    tokens: Vec<Token>,
    leading_blank: bool,
    line: usize,
}

impl State {
    fn parse_text(
        &mut self,
        text: &str,
        include: Option<IncludeReader>,
        depth: usize,
    ) -> Result<(), ParseError> {
        let mut lexer = Lexer {
            bytes: text.as_bytes(),
            pos: 0,
            line: 1,
            comments: true,
        };
        while let Some(entry) = lexer
            .next_entry()
            .map_err(|(line, error)| ParseError { line, error })?
        {
            let line = entry.line;
            self.entry(entry, include, depth)
                .map_err(|error| match error {
                    EntryError::Plain(error) => ParseError { line, error },
                    EntryError::Nested(e) => e,
                })?;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        entry: Entry,
        include: Option<IncludeReader>,
        depth: usize,
    ) -> Result<(), EntryError> {
        let tokens = &entry.tokens;
        let first = &tokens[0];
        if !entry.leading_blank && !first.quoted && first.text.starts_with('$') {
            let directive = first.text.to_ascii_uppercase();
            match directive.as_str() {
                "$ORIGIN" => {
                    let [_, name] = tokens.as_slice() else {
                        return Err(Error::Directive("$ORIGIN takes one name").into());
                    };
                    self.origin = Name::parse(&name.text, Some(&self.origin))?;
                }
                "$TTL" => {
                    let [_, ttl] = tokens.as_slice() else {
                        return Err(Error::Directive("$TTL takes one value").into());
                    };
                    self.default_ttl = Some(rdata::parse_ttl(&ttl.text).ok_or(Error::TtlInvalid)?);
                }
                "$INCLUDE" => {
                    let reader = include.ok_or(Error::IncludeRefused)?;
                    if depth >= INCLUDE_DEPTH_MAX {
                        return Err(Error::Directive("$INCLUDE nested too deeply").into());
                    }
                    let path = tokens
                        .get(1)
                        .ok_or(Error::Directive("$INCLUDE needs a file"))?;
                    let saved_origin = self.origin.clone();
                    if let Some(o) = tokens.get(2) {
                        self.origin = Name::parse(&o.text, Some(&self.origin))?;
                    }
                    let text = reader(&path.text).map_err(Error::IncludeFailed)?;
                    self.parse_text(&text, include, depth + 1)
                        .map_err(EntryError::Nested)?;
                    // RFC 1035 §5.1: the origin reverts after the included file.
                    self.origin = saved_origin;
                }
                _ => return Err(Error::Directive("unknown directive").into()),
            }
            return Ok(());
        }
        self.record(&entry).map_err(EntryError::from)
    }

    fn record(&mut self, entry: &Entry) -> Result<(), Error> {
        let tokens = &entry.tokens;
        let mut idx = 0;
        let owner = if entry.leading_blank {
            self.last_owner.clone().ok_or(Error::OwnerMissing)?
        } else {
            idx = 1;
            Name::parse(&tokens[0].text, Some(&self.origin))?
        };
        let mut ttl = None;
        let mut class_seen = false;
        let rtype = loop {
            let t = tokens.get(idx).ok_or(Error::TypeMissing)?;
            idx += 1;
            if t.quoted {
                return Err(Error::TypeMissing);
            }
            if ttl.is_none() && t.text.as_bytes()[0].is_ascii_digit() {
                ttl = Some(rdata::parse_ttl(&t.text).ok_or(Error::TtlInvalid)?);
                continue;
            }
            if !class_seen && let Some(class) = parse_class(&t.text) {
                if class != CLASS_IN {
                    return Err(Error::ClassUnsupported(class));
                }
                class_seen = true;
                continue;
            }
            break RType::from_text(&t.text).ok_or_else(|| Error::TypeUnknown(t.text.clone()))?;
        };
        if rtype.is_meta() {
            return Err(Error::TypeNotData(rtype.0));
        }
        // RFC 2308 §4: $TTL, else (RFC 1035) the last explicit TTL. Knot and BIND do the same.
        let ttl = match ttl {
            Some(v) => {
                self.last_ttl = Some(v);
                v
            }
            None => self
                .default_ttl
                .or(self.last_ttl)
                .ok_or(Error::TtlMissing)?,
        };
        let rdata = rdata::parse_rdata(rtype, &tokens[idx..], &self.origin)?;
        self.last_owner = Some(owner.clone());
        self.records.push(Record {
            owner,
            rtype,
            ttl,
            rdata,
        });
        Ok(())
    }
}

enum EntryError {
    Plain(Error),
    Nested(ParseError),
}

impl From<Error> for EntryError {
    fn from(e: Error) -> Self {
        EntryError::Plain(e)
    }
}

fn parse_class(text: &str) -> Option<u16> {
    match text.to_ascii_uppercase().as_str() {
        "IN" => Some(1),
        "CH" => Some(3),
        "HS" => Some(4),
        t => t.strip_prefix("CLASS").and_then(|d| d.parse().ok()),
    }
}

/// Splits the presentation-format text of one record's data (an API value such as
/// `10 mail.example.com.` or `"v=spf1" "-all"`) into tokens for [`rdata::parse_rdata`]: quoted
/// strings, escapes left in place, parentheses and line breaks as blank space. Unlike a zone
/// file, `;` starts no comment: a value is not a file line, and silently dropping what follows
/// an unquoted `;` would change the data.
pub fn tokenize(text: &str) -> Result<Vec<Token>, Error> {
    let mut lexer = Lexer {
        bytes: text.as_bytes(),
        pos: 0,
        line: 1,
        comments: false,
    };
    let mut tokens = Vec::new();
    while let Some(entry) = lexer.next_entry().map_err(|(_, error)| error)? {
        tokens.extend(entry.tokens);
        if tokens.len() > RECORD_TOKENS_MAX {
            return Err(Error::RecordTooLong);
        }
    }
    Ok(tokens)
}

struct Lexer<'a> {
    bytes: &'a [u8],
    pos: usize,
    line: usize,
    /// `;` starts a comment (zone files) or is an ordinary character ([`tokenize`]).
    comments: bool,
}

impl Lexer<'_> {
    /// Next non-empty logical line; parentheses join physical lines.
    fn next_entry(&mut self) -> Result<Option<Entry>, (usize, Error)> {
        loop {
            if self.pos >= self.bytes.len() {
                return Ok(None);
            }
            let start_line = self.line;
            let leading_blank = matches!(self.bytes[self.pos], b' ' | b'\t');
            let mut tokens = Vec::new();
            let mut depth = 0u32;
            loop {
                let Some(&b) = self.bytes.get(self.pos) else {
                    if depth > 0 {
                        return Err((start_line, Error::ParenthesisUnclosed));
                    }
                    break;
                };
                match b {
                    b' ' | b'\t' | b'\r' => self.pos += 1,
                    b'\n' => {
                        self.pos += 1;
                        self.line += 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    b';' if self.comments => {
                        while self.bytes.get(self.pos).is_some_and(|&c| c != b'\n') {
                            self.pos += 1;
                        }
                    }
                    b'(' => {
                        depth += 1;
                        self.pos += 1;
                    }
                    b')' => {
                        if depth == 0 {
                            return Err((self.line, Error::ParenthesisUnbalanced));
                        }
                        depth -= 1;
                        self.pos += 1;
                    }
                    b'"' => {
                        self.pos += 1;
                        let start = self.pos;
                        loop {
                            match self.bytes.get(self.pos) {
                                None => return Err((self.line, Error::QuoteUnclosed)),
                                Some(b'"') => break,
                                Some(b'\\') => self.pos += 2,
                                Some(b'\n') => {
                                    self.line += 1;
                                    self.pos += 1;
                                }
                                Some(_) => self.pos += 1,
                            }
                        }
                        let text = utf8(
                            &self.bytes[start..self.pos.min(self.bytes.len())],
                            self.line,
                        )?;
                        self.pos += 1;
                        tokens.push(Token { text, quoted: true });
                    }
                    _ => {
                        let start = self.pos;
                        while let Some(&c) = self.bytes.get(self.pos) {
                            if matches!(c, b' ' | b'\t' | b'\r' | b'\n' | b'(' | b')' | b'"')
                                || (c == b';' && self.comments)
                            {
                                break;
                            }
                            self.pos += if c == b'\\' { 2 } else { 1 };
                        }
                        let end = self.pos.min(self.bytes.len());
                        tokens.push(Token {
                            text: utf8(&self.bytes[start..end], self.line)?,
                            quoted: false,
                        });
                    }
                }
                if tokens.len() > RECORD_TOKENS_MAX {
                    return Err((start_line, Error::RecordTooLong));
                }
            }
            if !tokens.is_empty() {
                return Ok(Some(Entry {
                    tokens,
                    leading_blank,
                    line: start_line,
                }));
            }
        }
    }
}

fn utf8(bytes: &[u8], line: usize) -> Result<String, (usize, Error)> {
    String::from_utf8(bytes.to_vec()).map_err(|_| (line, Error::NotUtf8))
}

/// Writes records in master-file format, one per line, absolute names, every TTL explicit.
pub fn write(records: &[Record]) -> String {
    let mut out = String::new();
    for r in records {
        out.push_str(&format!(
            "{}\t{}\tIN\t{}\t{}\n",
            r.owner,
            r.ttl,
            r.rtype,
            rdata::rdata_to_text(r.rtype, &r.rdata)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Name {
        Name::parse("example.", None).unwrap()
    }

    #[test]
    fn directives_parentheses_and_inheritance() {
        let text = "$TTL 1h\n@ IN SOA ns1 host ( 1 ; serial\n 2 3 4 5 )\n  NS ns1\nwww 60 A 192.0.2.1\n\
                    $ORIGIN sub.example.\nx TXT \"a b\" c\n";
        let recs = parse(text, &origin(), None).unwrap();
        assert_eq!(recs.len(), 4);
        assert_eq!(recs[0].ttl, 3600);
        assert_eq!(recs[1].owner, origin());
        assert_eq!(recs[1].rtype, RType::NS);
        assert_eq!(recs[2].ttl, 60);
        assert_eq!(recs[3].owner.to_string(), "x.sub.example.");
        assert_eq!(recs[3].rdata, b"\x03a b\x01c");
    }

    #[test]
    fn errors_carry_their_line() {
        let err = parse(
            "$TTL 60\n@ SOA a b 1 2 3 4 5\nbad A 999.1.1.1\n",
            &origin(),
            None,
        )
        .unwrap_err();
        assert_eq!(err.line, 3);
        let err = parse("$INCLUDE other\n", &origin(), None).unwrap_err();
        assert_eq!(err.error, Error::IncludeRefused);
        let err = parse("@ 60 CH TXT x\n", &origin(), None).unwrap_err();
        assert_eq!(err.error, Error::ClassUnsupported(3));
    }

    #[test]
    fn include_when_allowed() {
        let reader = |path: &str| -> Result<String, String> {
            assert_eq!(path, "inc.zone");
            Ok("a 60 A 192.0.2.7\n".to_string())
        };
        let recs = parse(
            "$INCLUDE inc.zone sub\nb 60 A 192.0.2.8\n",
            &origin(),
            Some(&reader),
        )
        .unwrap();
        assert_eq!(recs[0].owner.to_string(), "a.sub.example.");
        assert_eq!(recs[1].owner.to_string(), "b.example.");
    }

    #[test]
    fn tokenize_values() {
        let tokens = tokenize("10 mail.example.com.").unwrap();
        assert_eq!(
            tokens,
            vec![Token::bare("10"), Token::bare("mail.example.com.")]
        );
        let tokens = tokenize("\"v=spf1 -all\" x\\ y \"a\\\"b\"").unwrap();
        assert_eq!(tokens.len(), 3);
        assert!(tokens[0].quoted);
        assert_eq!(tokens[0].text, "v=spf1 -all");
        assert_eq!(tokens[1], Token::bare("x\\ y"));
        assert_eq!(tokens[2].text, "a\\\"b");
        // No comments in a value: `;` is data.
        assert_eq!(
            tokenize("a;b ;c").unwrap(),
            vec![Token::bare("a;b"), Token::bare(";c")]
        );
        assert_eq!(tokenize("\"open").unwrap_err(), Error::QuoteUnclosed);
        assert_eq!(tokenize("  ").unwrap(), vec![]);
    }

    #[test]
    fn writes_what_it_reads() {
        let text = "$TTL 300\n@ SOA ns1 host 1 2 3 4 5\n@ NS ns1\nt TXT \"x\\\"y\" \"\\255\"\n\
                    u TYPE65280 \\# 3 010203\nm MX 10 mail\n";
        let recs = parse(text, &origin(), None).unwrap();
        let again = parse(&write(&recs), &origin(), None).unwrap();
        assert_eq!(recs, again);
    }
}
