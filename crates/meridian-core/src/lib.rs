//! Meridian's pure DNS core: domain names, record data, zone files in and out, compiled zones, the
//! catalog of zones an edge serves, and the authoritative answer algorithm writing into a
//! caller's buffer.
//!
//! Boundary: no I/O, no threads, no clocks, no async. Everything here is a function of its
//! inputs, so it can be tested exhaustively and fuzzed; the edge and the control plane call in.

pub mod answer;
pub mod catalog;
pub mod change;
pub mod health;
pub mod name;
pub mod policy;
pub mod query;
pub mod rdata;
pub mod routed;
pub mod writer;
pub mod zone;
pub mod zonefile;

pub use answer::{Outcome, Scratch, ServerConfig, Transport, respond};
pub use catalog::Catalog;
pub use name::Name;
pub use rdata::RType;
pub use zone::Zone;
pub use zonefile::Record;

/// Everything that can go wrong building names, records and zones.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("invalid domain name")]
    NameInvalid,
    #[error("domain name longer than 255 octets")]
    NameTooLong,
    #[error("label longer than 63 octets")]
    LabelTooLong,
    #[error("relative name without an origin")]
    NameRelativeWithoutOrigin,
    #[error("invalid escape sequence")]
    EscapeInvalid,
    #[error("invalid record data: {0}")]
    RdataInvalid(&'static str),
    #[error("record data longer than 65535 octets")]
    RdataTooLong,
    #[error("no text format for TYPE{0}; use RFC 3597 \\# generic form")]
    RdataTypeUnsupported(u16),
    #[error("unknown record type {0:?}")]
    TypeUnknown(String),
    #[error("TYPE{0} is a meta type, not zone data")]
    TypeNotData(u16),
    #[error("record type missing")]
    TypeMissing,
    #[error("class {0} not supported; zones are class IN")]
    ClassUnsupported(u16),
    #[error("invalid TTL")]
    TtlInvalid,
    #[error("no TTL: give one or set $TTL")]
    TtlMissing,
    #[error("no owner name to inherit")]
    OwnerMissing,
    #[error("{0}")]
    Directive(&'static str),
    #[error("$INCLUDE is not allowed here")]
    IncludeRefused,
    #[error("$INCLUDE failed: {0}")]
    IncludeFailed(String),
    #[error("unbalanced ')'")]
    ParenthesisUnbalanced,
    #[error("'(' not closed")]
    ParenthesisUnclosed,
    #[error("quoted string not closed")]
    QuoteUnclosed,
    #[error("record has too many fields")]
    RecordTooLong,
    #[error("file is not UTF-8")]
    NotUtf8,
    #[error("no SOA record at the zone apex")]
    SoaMissing,
    #[error("more than one SOA record at the apex")]
    SoaMultiple,
    #[error("SOA record at {0}, which is not the zone apex")]
    SoaNotAtApex(String),
    #[error("{0} is outside the zone")]
    OutOfZone(String),
    #[error("CNAME and other data at {0}")]
    CnameAndOtherData(String),
    #[error("more than one CNAME at {0}")]
    CnameMultiple(String),
    #[error("more than one DNAME at {0}")]
    DnameMultiple(String),
    #[error("names exist below the DNAME at {0}")]
    DnameHasChildren(String),
    #[error("limit exceeded: {0} (max {1})")]
    LimitExceeded(&'static str, usize),
}
