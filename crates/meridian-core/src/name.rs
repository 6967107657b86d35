//! Domain names in uncompressed wire format (RFC 1035 §3.1).
//!
//! A [`Name`] is always absolute and always valid: at most [`NAME_BYTES_MAX`] octets, labels of
//! at most [`LABEL_BYTES_MAX`] octets. It keeps the case it was written with; [`Name::to_lowercase`]
//! gives the canonical key used for lookups (RFC 4343: comparisons are case-insensitive).

use std::fmt;

use crate::Error;

/// RFC 1035 §2.3.4: a name is at most 255 octets on the wire.
pub const NAME_BYTES_MAX: usize = 255;
/// RFC 1035 §2.3.4: a label is at most 63 octets.
pub const LABEL_BYTES_MAX: usize = 63;
/// A 255-octet name holds at most 127 labels plus the root.
pub const NAME_LABELS_MAX: usize = 128;

/// An absolute domain name in uncompressed wire format.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name {
    /// Length-prefixed labels ending with the root label (a zero octet).
    wire: Box<[u8]>,
}

impl Name {
    /// The root name `.`.
    pub fn root() -> Name {
        Name {
            wire: Box::new([0]),
        }
    }

    /// Builds a name from uncompressed wire bytes, checking every limit.
    pub fn from_wire(wire: &[u8]) -> Result<Name, Error> {
        let len = wire_name_len(wire).ok_or(Error::NameInvalid)?;
        if len != wire.len() {
            return Err(Error::NameInvalid);
        }
        Ok(Name { wire: wire.into() })
    }

    /// Wire bytes, including the final root label.
    pub fn wire(&self) -> &[u8] {
        &self.wire
    }

    pub fn is_root(&self) -> bool {
        self.wire.len() == 1
    }

    /// Number of labels, not counting the root.
    pub fn label_count(&self) -> usize {
        labels(&self.wire).count()
    }

    pub fn to_lowercase(&self) -> Name {
        let mut wire = self.wire.clone();
        wire.make_ascii_lowercase_labels();
        Name { wire }
    }

    /// Whether `self` equals `ancestor` or lies below it (case-insensitive).
    pub fn is_subdomain_of(&self, ancestor: &Name) -> bool {
        is_subdomain(&self.wire, &ancestor.wire)
    }

    /// The name without its first label; `None` for the root.
    pub fn parent(&self) -> Option<Name> {
        if self.is_root() {
            return None;
        }
        let skip = 1 + self.wire[0] as usize;
        Some(Name {
            wire: self.wire[skip..].into(),
        })
    }

    /// `label` prepended to `self`.
    pub fn prepend(&self, label: &[u8]) -> Result<Name, Error> {
        if label.is_empty() || label.len() > LABEL_BYTES_MAX {
            return Err(Error::NameInvalid);
        }
        if self.wire.len() + 1 + label.len() > NAME_BYTES_MAX {
            return Err(Error::NameTooLong);
        }
        let mut wire = Vec::with_capacity(self.wire.len() + 1 + label.len());
        wire.push(label.len() as u8);
        wire.extend_from_slice(label);
        wire.extend_from_slice(&self.wire);
        Ok(Name { wire: wire.into() })
    }

    /// First label (empty for the root).
    pub fn first_label(&self) -> &[u8] {
        &self.wire[1..1 + self.wire[0] as usize]
    }

    /// Parses presentation format (RFC 1035 §5.1): `\.` and `\DDD` escapes, `@` for the origin,
    /// names without a final dot are relative to `origin`.
    pub fn parse(text: &str, origin: Option<&Name>) -> Result<Name, Error> {
        if text == "@" {
            return origin.cloned().ok_or(Error::NameRelativeWithoutOrigin);
        }
        if text == "." {
            return Ok(Name::root());
        }
        if text.is_empty() {
            return Err(Error::NameInvalid);
        }
        let bytes = text.as_bytes();
        let mut wire: Vec<u8> = Vec::with_capacity(bytes.len() + 2);
        let mut label_start = 0usize;
        wire.push(0);
        let mut i = 0;
        let mut absolute = false;
        while i < bytes.len() {
            let b = bytes[i];
            match b {
                b'.' => {
                    let label_len = wire.len() - label_start - 1;
                    if label_len == 0 {
                        return Err(Error::NameInvalid);
                    }
                    if label_len > LABEL_BYTES_MAX {
                        return Err(Error::LabelTooLong);
                    }
                    wire[label_start] = label_len as u8;
                    if i + 1 == bytes.len() {
                        absolute = true;
                    } else {
                        label_start = wire.len();
                        wire.push(0);
                    }
                    i += 1;
                }
                b'\\' => {
                    let (value, used) = parse_escape(&bytes[i + 1..])?;
                    wire.push(value);
                    i += 1 + used;
                }
                _ => {
                    wire.push(b);
                    i += 1;
                }
            }
        }
        if !absolute {
            let label_len = wire.len() - label_start - 1;
            if label_len == 0 {
                return Err(Error::NameInvalid);
            }
            if label_len > LABEL_BYTES_MAX {
                return Err(Error::LabelTooLong);
            }
            wire[label_start] = label_len as u8;
            let origin = origin.ok_or(Error::NameRelativeWithoutOrigin)?;
            wire.extend_from_slice(origin.wire());
        } else {
            wire.push(0);
        }
        if wire.len() > NAME_BYTES_MAX {
            return Err(Error::NameTooLong);
        }
        Ok(Name { wire: wire.into() })
    }
}

/// Parses the part after a backslash: `DDD` (decimal octet) or one literal character.
/// Returns the octet and the number of input bytes used.
pub(crate) fn parse_escape(rest: &[u8]) -> Result<(u8, usize), Error> {
    match rest {
        [a, b, c, ..] if a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit() => {
            let value = (a - b'0') as u32 * 100 + (b - b'0') as u32 * 10 + (c - b'0') as u32;
            if value > 255 {
                return Err(Error::EscapeInvalid);
            }
            Ok((value as u8, 3))
        }
        [a, ..] if a.is_ascii_digit() => Err(Error::EscapeInvalid),
        [a, ..] => Ok((*a, 1)),
        [] => Err(Error::EscapeInvalid),
    }
}

trait LowercaseLabels {
    fn make_ascii_lowercase_labels(&mut self);
}

impl LowercaseLabels for [u8] {
    fn make_ascii_lowercase_labels(&mut self) {
        // Length octets are < 64, never in 'A'..='Z' (65..=90), so lowercasing the whole buffer
        // only touches label bytes.
        self.make_ascii_lowercase();
    }
}

/// Length of a valid uncompressed wire name at the start of `wire`, or `None`.
pub fn wire_name_len(wire: &[u8]) -> Option<usize> {
    let mut pos = 0;
    loop {
        let len = *wire.get(pos)? as usize;
        if len > LABEL_BYTES_MAX {
            return None;
        }
        pos += 1 + len;
        if pos > NAME_BYTES_MAX {
            return None;
        }
        if len == 0 {
            return Some(pos);
        }
    }
}

/// Iterates the labels of an uncompressed wire name (without the root).
pub fn labels(wire: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        let len = *wire.get(pos)? as usize;
        if len == 0 {
            return None;
        }
        let label = &wire[pos + 1..pos + 1 + len];
        pos += 1 + len;
        Some(label)
    })
}

/// Offsets of every label start in an uncompressed wire name, root included; returns the count.
pub fn label_offsets(wire: &[u8], out: &mut [u8; NAME_LABELS_MAX]) -> usize {
    let mut count = 0;
    let mut pos = 0usize;
    loop {
        out[count] = pos as u8;
        count += 1;
        let len = wire[pos] as usize;
        if len == 0 {
            return count;
        }
        pos += 1 + len;
    }
}

/// Case-insensitive: `name` equals `ancestor` or is below it.
pub fn is_subdomain(name: &[u8], ancestor: &[u8]) -> bool {
    if ancestor.len() > name.len() {
        return false;
    }
    let tail = &name[name.len() - ancestor.len()..];
    if !tail.eq_ignore_ascii_case(ancestor) {
        return false;
    }
    // The tail must start on a label boundary of `name`.
    let mut pos = 0;
    let start = name.len() - ancestor.len();
    while pos < start {
        pos += 1 + name[pos] as usize;
    }
    pos == start
}

/// Writes one label in presentation format, escaping as RFC 4343 / RFC 1035 §5.1 ask.
pub fn write_label(out: &mut String, label: &[u8]) {
    for &b in label {
        match b {
            b'.' | b'\\' | b'"' | b'(' | b')' | b';' | b'@' | b'$' => {
                out.push('\\');
                out.push(b as char);
            }
            0x21..=0x7e => out.push(b as char),
            _ => {
                out.push('\\');
                out.push_str(&format!("{b:03}"));
            }
        }
    }
}

/// Presentation format of an uncompressed wire name, with the final dot.
pub fn wire_to_text(wire: &[u8]) -> String {
    let mut out = String::with_capacity(wire.len() + 1);
    for label in labels(wire) {
        write_label(&mut out, label);
        out.push('.');
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&wire_to_text(&self.wire))
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({self})")
    }
}

/// Presentation text (`www.example.com.`) in human-readable formats such as JSON, so stored and
/// logged changes read as DNS; uncompressed wire octets in binary formats. Both forms read back
/// only as an absolute, valid name.
impl serde::Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            serializer.serialize_bytes(&self.wire)
        }
    }
}

impl<'de> serde::Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Name, D::Error> {
        struct NameVisitor;

        impl<'de> serde::de::Visitor<'de> for NameVisitor {
            type Value = Name;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an absolute domain name")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Name, E> {
                Name::parse(text, None).map_err(|e| E::custom(format_args!("{text:?}: {e}")))
            }

            fn visit_bytes<E: serde::de::Error>(self, wire: &[u8]) -> Result<Name, E> {
                Name::from_wire(wire).map_err(E::custom)
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Name, A::Error> {
                let mut wire = Vec::with_capacity(NAME_BYTES_MAX);
                while let Some(b) = seq.next_element::<u8>()? {
                    if wire.len() == NAME_BYTES_MAX {
                        return Err(serde::de::Error::custom(Error::NameTooLong));
                    }
                    wire.push(b);
                }
                self.visit_bytes(&wire)
            }
        }

        if deserializer.is_human_readable() {
            deserializer.deserialize_str(NameVisitor)
        } else {
            deserializer.deserialize_bytes(NameVisitor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_relative_absolute_and_escapes() {
        let origin = Name::parse("example.com.", None).unwrap();
        assert_eq!(
            Name::parse("www", Some(&origin)).unwrap().to_string(),
            "www.example.com."
        );
        assert_eq!(Name::parse("@", Some(&origin)).unwrap(), origin);
        assert_eq!(Name::parse("a\\.b.c.", None).unwrap().label_count(), 2);
        assert_eq!(Name::parse("\\065.c.", None).unwrap().to_string(), "A.c.");
        assert!(Name::parse("a..b.", None).is_err());
        assert!(Name::parse(&format!("{}.", "x".repeat(64)), None).is_err());
        let long = format!("{}.", vec!["x".repeat(63); 4].join("."));
        assert!(Name::parse(&long, None).is_err(), "257 octets");
        assert!(Name::parse("\\256.", None).is_err());
    }

    #[test]
    fn serde_as_text() {
        let name = Name::parse("a\\.b.Example.", None).unwrap();
        let json = serde_json::to_string(&name).unwrap();
        assert_eq!(json, r#""a\\.b.Example.""#);
        assert_eq!(serde_json::from_str::<Name>(&json).unwrap(), name);
        assert!(serde_json::from_str::<Name>(r#""relative""#).is_err());
    }

    #[test]
    fn subdomain_is_label_aligned() {
        let a = Name::parse("foo.example.", None).unwrap();
        let b = Name::parse("oo.example.", None).unwrap();
        assert!(!a.is_subdomain_of(&b));
        assert!(a.is_subdomain_of(&Name::parse("EXAMPLE.", None).unwrap()));
        assert!(a.is_subdomain_of(&Name::root()));
    }
}
