//! Change batches: the domain model of a set of record-set changes to one zone, the Route 53
//! `ChangeResourceRecordSets` format they arrive in (JSON or YAML), and their validation.
//!
//! [`parse_change_batch`] turns text into a [`ChangeBatch`]; [`apply_batch`] checks a batch
//! against a zone's current record sets, seen through the [`ZoneState`] trait so that they may
//! live in a Raft state machine's store, and returns the [`Mutation`]s that carry it out. Both are
//! pure and deterministic: every node of a cluster validating the same batch against the same
//! state reaches the same verdict.
//!
//! All or nothing: either the whole batch is valid and every mutation is returned, or nothing is
//! and the first error says which change (its index in the batch) is at fault.
//!
//! Route 53 compatibility, and where this differs from a zone file:
//! - Names and values are absolute with or without their final dot, as in Route 53. A record
//!   name that does not end with the zone's origin is taken as relative to it, as in a zone file
//!   (`www` is `www.<origin>`), and `@` is the apex. Names inside values (MX, CNAME, SRV, …) are
//!   always absolute: `mail.example.net` means `mail.example.net.`, never
//!   `mail.example.net.<origin>` (that would silently break every CNAME to another domain).
//! - Route 53 writes `\ooo` escapes in **octal** (`\052` is `*`, as `list-resource-record-sets`
//!   prints wildcards); RFC 1035 zone files write them in decimal. This format follows Route 53.
//! - Routing policies: a set with a `SetIdentifier` (weighted, failover, multivalue, latency,
//!   geolocation, geoproximity, IP-based) or an `AliasTarget` is a *variant*; the variants of one
//!   name and type are stored together as one routed RRset (see [`crate::routed`]). A change
//!   addresses one variant by its set identifier; the group as the batch leaves it is validated
//!   whole (one policy kind, unique identifiers, ranges, known health checks, alias targets that
//!   exist, no alias cycles). `HostedZoneId` of an alias target is not checked: the target is
//!   found by name in whichever hosted zone holds it. `FailClosed: true` is our extension.
//! - `TrafficPolicyInstanceId` is refused: policy trees are ordinary aliased record sets here.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::name::{self, Name};
use crate::policy::{self, Candidate, Coordinates, FailoverRole, GeoKey, Policy, PolicyError};
use crate::rdata::{self, RType};
use crate::routed::{self, ROUTED_TTL};
use crate::{Error, zone, zonefile};

/// Changes in one batch. Route 53 takes 1,000 records per request; ten times that lets a tool
/// move a mid-size zone in one atomic batch, while bounding one validation to
/// O(changes × labels) state lookups.
pub const BATCH_CHANGES_MAX: usize = 10_000;
/// Bytes of batch text, checked before parsing, and bytes of record data in any batch however it
/// was built. A batch becomes one Raft log entry, replicated whole to every node and kept in the
/// log: a few MiB keeps one append quick and the log's growth bounded. (Route 53 takes 32,000
/// characters of values per request.)
pub const BATCH_BYTES_MAX: usize = 4 << 20;
/// Record sets in one zone. We promise at least 1M (Route 53's default quota is 10,000); a
/// 1M-name zone holds more sets than names (A and AAAA at one name are two sets, plus the apex
/// SOA and NS), so the cap sits at 4M: ~1 GB of control-plane memory at ~250 bytes a set.
/// A zone at the limit still takes batches that do not grow it.
pub const ZONE_RECORD_SETS_MAX: usize = 4_000_000;
/// Records in a set that a batch creates or upserts: Route 53's quota of values per record.
/// Larger pools are a job for routing policies (multivalue, weighted), and a large set rarely
/// fits a UDP answer. Stricter than [`zone::RRSET_RECORDS_MAX`], which bounds what a zone file may
/// hold; a DELETE may remove a larger set.
pub const RRSET_RECORDS_MAX: usize = 400;
/// Answer octets of a set that a batch writes (each record: 12 octets of owner pointer, type,
/// class, TTL and length, plus its RDATA). A set must fit one 65,535-octet TCP answer beside the
/// header, the question (≤ 259) and the OPT record, or no client can ever get it.
pub const RRSET_ANSWER_BYTES_MAX: usize = 64_000;
/// RFC 2181 §8: a TTL is 0..=2^31-1; Route 53 takes the same range.
pub const TTL_MAX: u32 = 2_147_483_647;
/// Route 53: a batch's `Comment` holds at most 256 characters.
pub const COMMENT_CHARS_MAX: usize = 256;

/// What a change does to the record set it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    /// Add a set that does not exist yet.
    Create,
    /// Remove a set; the change must give its current TTL and records exactly.
    Delete,
    /// Create the set, or replace it whole if it exists.
    Upsert,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Create => "CREATE",
            Action::Delete => "DELETE",
            Action::Upsert => "UPSERT",
        })
    }
}

/// All the records of one name and type (RFC 2181 §5: an RRset shares its TTL), or, with a set
/// identifier or an alias target, one variant of a routed group (Route 53's record set).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordSet {
    /// Owner name, absolute and lowercase: the key sets are stored and compared by.
    pub name: Name,
    pub rtype: RType,
    /// Seconds, 0..=[`TTL_MAX`].
    pub ttl: u32,
    /// Each record's RDATA in uncompressed wire format, as [`rdata::parse_rdata`] gives it.
    pub rdatas: Vec<Vec<u8>>,
    /// Route 53's `SetIdentifier`, which tells apart the sets of one name and type inside a
    /// routing policy.
    // No `skip_serializing_if`: binary encodings need every field present.
    #[serde(default)]
    pub set_identifier: Option<String>,
    /// The routing policy; present exactly when `set_identifier` is.
    #[serde(default)]
    pub policy: Option<Policy>,
    /// Route 53's `HealthCheckId`: the check whose verdict makes this variant usable.
    #[serde(default)]
    pub health_check: Option<String>,
    /// Route 53's `AliasTarget`: answer with the target's records (then `rdatas` is empty and
    /// `ttl` unused: the target's TTL applies).
    #[serde(default)]
    pub alias: Option<AliasTarget>,
    /// When every variant of the group is unhealthy, answer NODATA instead of failing open.
    #[serde(default)]
    pub fail_closed: bool,
}

/// Where an alias points: a name holding a set of the alias's type, in any hosted zone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasTarget {
    /// Absolute, lowercase.
    pub name: Name,
    /// Route 53's `EvaluateTargetHealth`: the alias is unhealthy when its target has no
    /// healthy answer.
    pub evaluate_target_health: bool,
}

/// One change of a batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub action: Action,
    pub record_set: RecordSet,
}

/// Changes to one zone, applied together or not at all.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeBatch {
    /// Free text from the operator, kept with the change (Route 53's `Comment`).
    pub comment: String,
    pub changes: Vec<Change>,
}

/// One step of carrying out a valid batch: the state after every step is a valid zone (see
/// [`apply_batch`] for the order).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Mutation {
    /// Store this set, replacing any set of the same name and type.
    Put(RecordSet),
    /// Remove the set of this (lowercase) name and type.
    Remove { name: Name, rtype: RType },
}

/// The current record sets of one zone, as [`apply_batch`] needs to see them. Names passed in
/// are lowercase; sets returned carry lowercase names (they were stored from [`Mutation`]s).
pub trait ZoneState {
    /// The zone's origin.
    fn origin(&self) -> &Name;
    /// The set of this name and type, if it exists.
    fn get(&self, name: &Name, rtype: RType) -> Option<RecordSet>;
    /// How many records the set of this name and type has, if it exists: what validation
    /// needs of sets it does not compare (a zone may answer it without copying the set).
    fn records_in(&self, name: &Name, rtype: RType) -> Option<usize> {
        self.get(name, rtype).map(|s| s.rdatas.len())
    }
    /// The types of every set at this name, in any order.
    fn types_at(&self, name: &Name) -> Vec<RType>;
    /// Sets in the zone.
    fn record_set_count(&self) -> usize;
    /// Records in the zone (the sum of every set's record count): a zone must stay within
    /// [`zone::ZONE_RECORDS_MAX`] to compile.
    fn record_count(&self) -> usize;
    /// Sets at names strictly below `name`. Asked only when a batch adds a DNAME at `name`
    /// (RFC 6672 §2.4: no data may sit below a DNAME).
    fn record_sets_below(&self, name: &Name) -> usize;
    /// Whether the zone may hold a DNAME anywhere. `false` lets validation skip looking for
    /// one above every name a batch writes (most zones have none); `true` is always correct.
    fn may_have_dname(&self) -> bool {
        true
    }
    /// Whether the set of this name and type is a routed group (see [`crate::routed`]).
    fn routed_at(&self, name: &Name, rtype: RType) -> bool {
        self.get(name, rtype).is_some_and(|s| s.ttl == ROUTED_TTL)
    }
    /// Whether a health check with this id exists (routed sets may name only those).
    fn health_check_exists(&self, _id: &str) -> bool {
        false
    }
    /// Whether a CIDR collection with this name exists (IP-based sets may name only those).
    fn cidr_collection_exists(&self, _name: &str) -> bool {
        false
    }
    /// The set of this name and type in whichever hosted zone holds the name: where an alias
    /// in this zone may point. This zone's own sets are asked through [`ZoneState::get`].
    fn resolve(&self, _name: &Name, _rtype: RType) -> Option<RecordSet> {
        None
    }
}

/// Why a batch was refused. Every variant about one change carries `change_idx`, the index of
/// that change in the batch (0-based, as the `changes[i]` of the message says).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("change batch is {bytes} bytes; the limit is {BATCH_BYTES_MAX}")]
    BatchTooLarge { bytes: usize },
    #[error("change batch is not valid {format}: {reason}")]
    Syntax {
        format: &'static str,
        reason: String,
    },
    #[error("change batch has no changes")]
    BatchEmpty,
    #[error("change batch has {count} changes; the limit is {BATCH_CHANGES_MAX}")]
    TooManyChanges { count: usize },
    #[error("comment is {chars} characters; the limit is {COMMENT_CHARS_MAX}")]
    CommentTooLong { chars: usize },
    #[error("changes[{change_idx}]: {field} is not supported yet")]
    NotSupportedYet {
        change_idx: usize,
        field: &'static str,
    },
    #[error("changes[{change_idx}]: invalid name {name:?}: {reason}")]
    NameInvalid {
        change_idx: usize,
        name: String,
        reason: Error,
    },
    #[error("changes[{change_idx}]: {name} is not in the zone {origin}")]
    NameOutsideZone {
        change_idx: usize,
        name: Name,
        origin: Name,
    },
    #[error("changes[{change_idx}]: unknown record type {rtype:?}")]
    TypeUnknown { change_idx: usize, rtype: String },
    #[error("changes[{change_idx}]: {rtype} is a meta type, not zone data")]
    TypeMeta { change_idx: usize, rtype: RType },
    #[error(
        "changes[{change_idx}]: {name} {rtype} is already changed by changes[{first_idx}]; \
         a set may be changed once per batch, or deleted then created"
    )]
    ChangedTwice {
        change_idx: usize,
        first_idx: usize,
        name: Name,
        rtype: RType,
    },
    #[error("changes[{change_idx}]: {name} {rtype} has no TTL")]
    TtlMissing {
        change_idx: usize,
        name: Name,
        rtype: RType,
    },
    #[error("changes[{change_idx}]: {name} {rtype}: TTL {ttl} is outside 0..={TTL_MAX}")]
    TtlOutOfRange {
        change_idx: usize,
        name: Name,
        rtype: RType,
        ttl: i64,
    },
    #[error("changes[{change_idx}]: {name} {rtype} has no records")]
    RecordsEmpty {
        change_idx: usize,
        name: Name,
        rtype: RType,
    },
    #[error(
        "changes[{change_idx}]: {name} {rtype} has {count} records; the limit is {RRSET_RECORDS_MAX}"
    )]
    RecordsTooMany {
        change_idx: usize,
        name: Name,
        rtype: RType,
        count: usize,
    },
    #[error(
        "changes[{change_idx}]: {name} {rtype} takes {bytes} octets in an answer; \
         the limit is {RRSET_ANSWER_BYTES_MAX}"
    )]
    RecordSetTooLarge {
        change_idx: usize,
        name: Name,
        rtype: RType,
        bytes: usize,
    },
    #[error("changes[{change_idx}]: {name} {rtype} has {count} records; it holds exactly one")]
    RecordsMoreThanOne {
        change_idx: usize,
        name: Name,
        rtype: RType,
        count: usize,
    },
    #[error("changes[{change_idx}]: {name} {rtype}: record {value:?} is given twice")]
    RecordDuplicate {
        change_idx: usize,
        name: Name,
        rtype: RType,
        value: String,
    },
    #[error("changes[{change_idx}]: {name} {rtype}: invalid record {value:?}: {reason}")]
    RdataInvalid {
        change_idx: usize,
        name: Name,
        rtype: RType,
        value: String,
        reason: Error,
    },
    #[error(
        "changes[{change_idx}]: {action} of the SOA at {name}: the only SOA change is an UPSERT \
         of the apex SOA"
    )]
    SoaChangeRefused {
        change_idx: usize,
        name: Name,
        action: Action,
    },
    #[error("changes[{change_idx}]: the apex {rtype} cannot be deleted, only upserted")]
    ApexDeleteRefused { change_idx: usize, rtype: RType },
    #[error("changes[{change_idx}]: a CNAME cannot sit at the zone apex {name}")]
    CnameAtApex { change_idx: usize, name: Name },
    #[error("changes[{change_idx}]: {name} would have a CNAME and other data (RFC 2181 §10.1)")]
    CnameAndOtherData { change_idx: usize, name: Name },
    #[error("changes[{change_idx}]: {name} would have a DNAME and names below it (RFC 6672)")]
    DnameHasChildren { change_idx: usize, name: Name },
    #[error("changes[{change_idx}]: {name} would be below the DNAME at {dname} (RFC 6672)")]
    BelowDname {
        change_idx: usize,
        name: Name,
        dname: Name,
    },
    #[error("changes[{change_idx}]: cannot create {name} {rtype}: it already exists")]
    AlreadyExists {
        change_idx: usize,
        name: Name,
        rtype: RType,
    },
    #[error("changes[{change_idx}]: cannot delete {name} {rtype}: it does not exist")]
    NotFound {
        change_idx: usize,
        name: Name,
        rtype: RType,
    },
    #[error(
        "changes[{change_idx}]: cannot delete {name} {rtype}: {detail}; a DELETE must give the \
         current TTL and records exactly"
    )]
    DeleteMismatch {
        change_idx: usize,
        name: Name,
        rtype: RType,
        detail: &'static str,
    },
    #[error("changes[{change_idx}]: {field}: {reason}")]
    PolicyFieldInvalid {
        change_idx: usize,
        field: &'static str,
        reason: String,
    },
    #[error(
        "changes[{change_idx}]: {name} {rtype}: {rtype} sets cannot have a routing policy or an alias"
    )]
    RoutingNotAllowed {
        change_idx: usize,
        name: Name,
        rtype: RType,
    },
    #[error(
        "changes[{change_idx}]: {name} {rtype}: a simple set and routed sets (set identifier or \
         alias) cannot share a name and type; delete one kind first"
    )]
    SimpleAndRouted {
        change_idx: usize,
        name: Name,
        rtype: RType,
    },
    #[error(
        "changes[{change_idx}]: cannot create {name} {rtype} set {set_identifier:?}: it already exists"
    )]
    VariantExists {
        change_idx: usize,
        name: Name,
        rtype: RType,
        set_identifier: String,
    },
    #[error(
        "changes[{change_idx}]: cannot delete {name} {rtype} set {set_identifier:?}: it does not exist"
    )]
    VariantNotFound {
        change_idx: usize,
        name: Name,
        rtype: RType,
        set_identifier: String,
    },
    #[error("changes[{change_idx}]: {name} {rtype}: {error}")]
    Policy {
        change_idx: usize,
        name: Name,
        rtype: RType,
        error: Box<PolicyError>,
    },
    #[error("changes[{change_idx}]: health check {id:?} does not exist")]
    HealthCheckUnknown { change_idx: usize, id: String },
    #[error("changes[{change_idx}]: CIDR collection {name:?} does not exist")]
    CidrCollectionUnknown { change_idx: usize, name: String },
    #[error("changes[{change_idx}]: {name} {rtype}: alias target {target} {rtype} does not exist")]
    AliasTargetMissing {
        change_idx: usize,
        name: Name,
        rtype: RType,
        target: Name,
    },
    #[error(
        "changes[{change_idx}]: {name} {rtype}: aliases from here loop or nest deeper than {} (through {target})",
        routed::ALIAS_DEPTH_MAX
    )]
    AliasCycle {
        change_idx: usize,
        name: Name,
        rtype: RType,
        target: Name,
    },
    #[error("the zone would hold {count} record sets; the limit is {ZONE_RECORD_SETS_MAX}")]
    ZoneRecordSetsTooMany { count: usize },
    #[error(
        "the zone would hold {count} records; the limit is {}",
        zone::ZONE_RECORDS_MAX
    )]
    ZoneRecordsTooMany { count: usize },
}

impl ChangeError {
    /// A stable short name for metrics labels and API error codes.
    pub fn code(&self) -> &'static str {
        match self {
            ChangeError::BatchTooLarge { .. } => "BatchTooLarge",
            ChangeError::Syntax { .. } => "Syntax",
            ChangeError::BatchEmpty => "BatchEmpty",
            ChangeError::TooManyChanges { .. } => "TooManyChanges",
            ChangeError::CommentTooLong { .. } => "CommentTooLong",
            ChangeError::NotSupportedYet { .. } => "NotSupportedYet",
            ChangeError::NameInvalid { .. } => "NameInvalid",
            ChangeError::NameOutsideZone { .. } => "NameOutsideZone",
            ChangeError::TypeUnknown { .. } => "TypeUnknown",
            ChangeError::TypeMeta { .. } => "TypeMeta",
            ChangeError::ChangedTwice { .. } => "ChangedTwice",
            ChangeError::TtlMissing { .. } => "TtlMissing",
            ChangeError::TtlOutOfRange { .. } => "TtlOutOfRange",
            ChangeError::RecordsEmpty { .. } => "RecordsEmpty",
            ChangeError::RecordsTooMany { .. } => "RecordsTooMany",
            ChangeError::RecordSetTooLarge { .. } => "RecordSetTooLarge",
            ChangeError::RecordsMoreThanOne { .. } => "RecordsMoreThanOne",
            ChangeError::RecordDuplicate { .. } => "RecordDuplicate",
            ChangeError::RdataInvalid { .. } => "RdataInvalid",
            ChangeError::SoaChangeRefused { .. } => "SoaChangeRefused",
            ChangeError::ApexDeleteRefused { .. } => "ApexDeleteRefused",
            ChangeError::CnameAtApex { .. } => "CnameAtApex",
            ChangeError::CnameAndOtherData { .. } => "CnameAndOtherData",
            ChangeError::DnameHasChildren { .. } => "DnameHasChildren",
            ChangeError::BelowDname { .. } => "BelowDname",
            ChangeError::AlreadyExists { .. } => "AlreadyExists",
            ChangeError::NotFound { .. } => "NotFound",
            ChangeError::DeleteMismatch { .. } => "DeleteMismatch",
            ChangeError::PolicyFieldInvalid { .. } => "PolicyFieldInvalid",
            ChangeError::RoutingNotAllowed { .. } => "RoutingNotAllowed",
            ChangeError::SimpleAndRouted { .. } => "SimpleAndRouted",
            ChangeError::VariantExists { .. } => "VariantExists",
            ChangeError::VariantNotFound { .. } => "VariantNotFound",
            ChangeError::Policy { .. } => "Policy",
            ChangeError::HealthCheckUnknown { .. } => "HealthCheckUnknown",
            ChangeError::CidrCollectionUnknown { .. } => "CidrCollectionUnknown",
            ChangeError::AliasTargetMissing { .. } => "AliasTargetMissing",
            ChangeError::AliasCycle { .. } => "AliasCycle",
            ChangeError::ZoneRecordSetsTooMany { .. } => "ZoneRecordSetsTooMany",
            ChangeError::ZoneRecordsTooMany { .. } => "ZoneRecordsTooMany",
        }
    }

    /// The index of the offending change, for errors about one change.
    pub fn change_idx(&self) -> Option<usize> {
        match *self {
            ChangeError::NotSupportedYet { change_idx, .. }
            | ChangeError::NameInvalid { change_idx, .. }
            | ChangeError::NameOutsideZone { change_idx, .. }
            | ChangeError::TypeUnknown { change_idx, .. }
            | ChangeError::TypeMeta { change_idx, .. }
            | ChangeError::ChangedTwice { change_idx, .. }
            | ChangeError::TtlMissing { change_idx, .. }
            | ChangeError::TtlOutOfRange { change_idx, .. }
            | ChangeError::RecordsEmpty { change_idx, .. }
            | ChangeError::RecordsTooMany { change_idx, .. }
            | ChangeError::RecordSetTooLarge { change_idx, .. }
            | ChangeError::RecordsMoreThanOne { change_idx, .. }
            | ChangeError::RecordDuplicate { change_idx, .. }
            | ChangeError::RdataInvalid { change_idx, .. }
            | ChangeError::SoaChangeRefused { change_idx, .. }
            | ChangeError::ApexDeleteRefused { change_idx, .. }
            | ChangeError::CnameAtApex { change_idx, .. }
            | ChangeError::CnameAndOtherData { change_idx, .. }
            | ChangeError::DnameHasChildren { change_idx, .. }
            | ChangeError::BelowDname { change_idx, .. }
            | ChangeError::AlreadyExists { change_idx, .. }
            | ChangeError::NotFound { change_idx, .. }
            | ChangeError::DeleteMismatch { change_idx, .. }
            | ChangeError::PolicyFieldInvalid { change_idx, .. }
            | ChangeError::RoutingNotAllowed { change_idx, .. }
            | ChangeError::SimpleAndRouted { change_idx, .. }
            | ChangeError::VariantExists { change_idx, .. }
            | ChangeError::VariantNotFound { change_idx, .. }
            | ChangeError::Policy { change_idx, .. }
            | ChangeError::HealthCheckUnknown { change_idx, .. }
            | ChangeError::CidrCollectionUnknown { change_idx, .. }
            | ChangeError::AliasTargetMissing { change_idx, .. }
            | ChangeError::AliasCycle { change_idx, .. } => Some(change_idx),
            ChangeError::BatchTooLarge { .. }
            | ChangeError::Syntax { .. }
            | ChangeError::BatchEmpty
            | ChangeError::TooManyChanges { .. }
            | ChangeError::CommentTooLong { .. }
            | ChangeError::ZoneRecordSetsTooMany { .. }
            | ChangeError::ZoneRecordsTooMany { .. } => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// What the batch has done so far to one (name, type).
struct Touched {
    /// Index of the change that touched it first, then last.
    first_idx: usize,
    last_idx: usize,
    last_action: Action,
    /// Records in the set before the batch (`None`: it did not exist).
    before_records: Option<usize>,
    /// The set as the batch leaves it so far (`None`: absent).
    after: Option<RecordSet>,
    /// Routed changes: per set identifier, the first and last change and the last action.
    variants: HashMap<Option<String>, (usize, usize, Action)>,
}

/// The zone as modified by the changes validated so far: the base state plus what they touched.
struct Overlay<'a, Z: ?Sized> {
    base: &'a Z,
    touched: HashMap<(Name, RType), Touched>,
    /// Keys in the order first touched, so that results never depend on hash order.
    order: Vec<(Name, RType)>,
}

impl<Z: ZoneState + ?Sized> Overlay<'_, Z> {
    fn has(&self, name: &Name, rtype: RType) -> bool {
        match self.touched.get(&(name.clone(), rtype)) {
            Some(t) => t.after.is_some(),
            None => self.base.records_in(name, rtype).is_some(),
        }
    }
}

/// Validates `batch` against `zone` and returns the mutations that carry it out, or the first
/// error. Nothing is changed either way: the caller applies the mutations.
///
/// Each change is checked in order against the zone as the changes before it leave it: names in
/// the zone, types that are data, TTL and records well-formed, SOA and apex NS rules, CREATE of a
/// set that does not exist, DELETE of a set that exists with exactly the TTL and records given.
/// A (name, type) may be changed once per batch, or deleted then created (Route 53's way to
/// replace a set). Then the rules about how sets live together — no CNAME beside other data,
/// nothing below a DNAME — are checked on the zone the whole batch results in (so a batch may
/// replace an A by a CNAME in either order), each error blamed on the last change that wrote a
/// set at the name concerned; then the zone's size limits. The first error in that sequence is
/// returned.
///
/// Mutations: every removal, then every put, each in change order, one per (name, type). Applied
/// one at a time in that order, every intermediate state is a valid zone too: removing sets from
/// a valid zone keeps it valid, and each put only adds sets that the valid final state holds.
pub fn apply_batch<Z: ZoneState + ?Sized>(
    zone: &Z,
    batch: &ChangeBatch,
) -> Result<Vec<Mutation>, ChangeError> {
    check_batch_size(batch)?;
    let origin = zone.origin().to_lowercase();
    let mut overlay = Overlay {
        base: zone,
        touched: HashMap::new(),
        order: Vec::new(),
    };
    for (change_idx, change) in batch.changes.iter().enumerate() {
        check_change(&mut overlay, &origin, change_idx, change)?;
    }
    check_result(&overlay, &origin)?;

    let mut removals = Vec::new();
    let mut puts = Vec::new();
    for key in &overlay.order {
        let t = &overlay.touched[key];
        match &t.after {
            Some(set) => puts.push((t.last_idx, Mutation::Put(set.clone()))),
            None => removals.push((
                t.last_idx,
                Mutation::Remove {
                    name: key.0.clone(),
                    rtype: key.1,
                },
            )),
        }
    }
    removals.sort_by_key(|(idx, _)| *idx);
    puts.sort_by_key(|(idx, _)| *idx);
    Ok(removals.into_iter().chain(puts).map(|(_, m)| m).collect())
}

fn check_batch_size(batch: &ChangeBatch) -> Result<(), ChangeError> {
    if batch.changes.is_empty() {
        return Err(ChangeError::BatchEmpty);
    }
    if batch.changes.len() > BATCH_CHANGES_MAX {
        return Err(ChangeError::TooManyChanges {
            count: batch.changes.len(),
        });
    }
    let chars = batch.comment.chars().count();
    if chars > COMMENT_CHARS_MAX {
        return Err(ChangeError::CommentTooLong { chars });
    }
    let bytes: usize = batch
        .changes
        .iter()
        .flat_map(|c| c.record_set.rdatas.iter())
        .map(Vec::len)
        .sum::<usize>()
        + batch.comment.len();
    if bytes > BATCH_BYTES_MAX {
        return Err(ChangeError::BatchTooLarge { bytes });
    }
    Ok(())
}

fn check_change<Z: ZoneState + ?Sized>(
    overlay: &mut Overlay<'_, Z>,
    origin: &Name,
    change_idx: usize,
    change: &Change,
) -> Result<(), ChangeError> {
    let set = &change.record_set;
    let action = change.action;
    let rtype = set.rtype;
    let name = set.name.to_lowercase();
    if !name.is_subdomain_of(origin) {
        return Err(ChangeError::NameOutsideZone {
            change_idx,
            name,
            origin: origin.clone(),
        });
    }
    if rtype.is_meta() {
        return Err(ChangeError::TypeMeta { change_idx, rtype });
    }
    let key = (name, rtype);
    if routed::is_routed(set) {
        return check_routed_change(overlay, origin, change_idx, change, key);
    }
    if let Some(t) = overlay.touched.get(&key) {
        // Route 53's replace idiom, DELETE then CREATE, is the one repeat with a clear meaning;
        // a routed group emptied by this batch may become a simple set too.
        let replace = (t.first_idx == t.last_idx || !t.variants.is_empty())
            && t.after.is_none()
            && action == Action::Create;
        if !replace {
            return Err(ChangeError::ChangedTwice {
                change_idx,
                first_idx: t.first_idx,
                name: key.0,
                rtype,
            });
        }
    }
    let name = &key.0;
    let is_apex = name == origin;
    if action == Action::Delete && is_apex && matches!(rtype, RType::SOA | RType::NS) {
        return Err(ChangeError::ApexDeleteRefused { change_idx, rtype });
    }
    if rtype == RType::SOA && !(action == Action::Upsert && is_apex) {
        return Err(ChangeError::SoaChangeRefused {
            change_idx,
            name: name.clone(),
            action,
        });
    }
    if rtype == RType::CNAME && is_apex && action != Action::Delete {
        return Err(ChangeError::CnameAtApex {
            change_idx,
            name: name.clone(),
        });
    }
    check_contents(change_idx, name, set, action != Action::Delete)?;
    let routed_now = match overlay.touched.get(&key) {
        Some(t) => t.after.as_ref().is_some_and(|s| s.ttl == ROUTED_TTL),
        None => overlay.base.routed_at(name, rtype),
    };
    if routed_now {
        return Err(ChangeError::SimpleAndRouted {
            change_idx,
            name: name.clone(),
            rtype,
        });
    }

    // Only a DELETE compares the current set; the others need to know whether it exists.
    let (current, current_records) = match overlay.touched.get(&key) {
        Some(t) => {
            let after = t.after.clone();
            let records = after.as_ref().map(|s| s.rdatas.len());
            (after, records)
        }
        None if action == Action::Delete => {
            let current = overlay.base.get(name, rtype);
            let records = current.as_ref().map(|s| s.rdatas.len());
            (current, records)
        }
        None => (None, overlay.base.records_in(name, rtype)),
    };
    match action {
        Action::Create if current_records.is_some() => {
            return Err(ChangeError::AlreadyExists {
                change_idx,
                name: name.clone(),
                rtype,
            });
        }
        Action::Delete => {
            let Some(current) = &current else {
                return Err(ChangeError::NotFound {
                    change_idx,
                    name: name.clone(),
                    rtype,
                });
            };
            if let Some(detail) = delete_mismatch(current, set) {
                return Err(ChangeError::DeleteMismatch {
                    change_idx,
                    name: name.clone(),
                    rtype,
                    detail,
                });
            }
        }
        Action::Create | Action::Upsert => {}
    }

    let after = (action != Action::Delete).then(|| RecordSet {
        name: name.clone(),
        rtype,
        ttl: set.ttl,
        rdatas: set.rdatas.clone(),
        set_identifier: None,
        policy: None,
        health_check: None,
        alias: None,
        fail_closed: false,
    });
    record_touch(
        overlay,
        key,
        change_idx,
        action,
        current_records,
        after,
        None,
    );
    Ok(())
}

/// Records what a change did to (name, type) in the overlay.
fn record_touch<Z: ZoneState + ?Sized>(
    overlay: &mut Overlay<'_, Z>,
    key: (Name, RType),
    change_idx: usize,
    action: Action,
    current_records: Option<usize>,
    after: Option<RecordSet>,
    variant: Option<Option<String>>,
) {
    match overlay.touched.get_mut(&key) {
        Some(t) => {
            t.last_idx = change_idx;
            t.last_action = action;
            t.after = after;
        }
        None => {
            overlay.touched.insert(
                key.clone(),
                Touched {
                    first_idx: change_idx,
                    last_idx: change_idx,
                    last_action: action,
                    before_records: current_records,
                    after,
                    variants: HashMap::new(),
                },
            );
            overlay.order.push(key.clone());
        }
    }
    if let Some(id) = variant {
        let t = overlay.touched.get_mut(&key).expect("just touched");
        let entry = t
            .variants
            .entry(id)
            .or_insert((change_idx, change_idx, action));
        entry.1 = change_idx;
        entry.2 = action;
    }
}

/// Types whose sets cannot be routed: the zone's own structure (SOA, NS, DNAME) and what a
/// parent or a validator reads as one set (DS, DNSSEC records).
fn routing_allowed(rtype: RType) -> bool {
    !matches!(
        rtype,
        RType::SOA | RType::NS | RType::DNAME | RType::DS | RType::RRSIG | RType::NSEC
    )
}

/// A change to one variant of a routed group (a set with a set identifier, or an alias).
fn check_routed_change<Z: ZoneState + ?Sized>(
    overlay: &mut Overlay<'_, Z>,
    origin: &Name,
    change_idx: usize,
    change: &Change,
    key: (Name, RType),
) -> Result<(), ChangeError> {
    let set = &change.record_set;
    let action = change.action;
    let (name, rtype) = (&key.0, key.1);
    if !routing_allowed(rtype) {
        return Err(ChangeError::RoutingNotAllowed {
            change_idx,
            name: name.clone(),
            rtype,
        });
    }
    if rtype == RType::CNAME && name == origin && action != Action::Delete {
        return Err(ChangeError::CnameAtApex {
            change_idx,
            name: name.clone(),
        });
    }
    if set.alias.is_none() {
        check_contents(change_idx, name, set, action != Action::Delete)?;
    }
    let id = set.set_identifier.clone();
    if let Some(t) = overlay.touched.get(&key) {
        if let Some(&(first, last, last_action)) = t.variants.get(&id) {
            let replace =
                first == last && last_action == Action::Delete && action == Action::Create;
            if !replace {
                return Err(ChangeError::ChangedTwice {
                    change_idx,
                    first_idx: first,
                    name: name.clone(),
                    rtype,
                });
            }
        } else if t.variants.is_empty() && t.after.is_some() {
            // A simple set this batch wrote: the two kinds cannot share the name and type.
            return Err(ChangeError::SimpleAndRouted {
                change_idx,
                name: name.clone(),
                rtype,
            });
        }
    }
    let current = match overlay.touched.get(&key) {
        Some(t) => t.after.clone(),
        None => overlay.base.get(name, rtype),
    };
    let current_records = current.as_ref().map(|s| s.rdatas.len());
    let mut variants = match &current {
        None => Vec::new(),
        Some(c) if c.ttl == ROUTED_TTL => routed::to_record_sets(name, rtype, &c.rdatas),
        Some(_) => {
            return Err(ChangeError::SimpleAndRouted {
                change_idx,
                name: name.clone(),
                rtype,
            });
        }
    };
    let label = || id.clone().unwrap_or_else(|| "(alias)".into());
    let pos = variants.iter().position(|v| v.set_identifier == id);
    let mut given = set.clone();
    given.name = name.clone();
    match (action, pos) {
        (Action::Create, Some(_)) => {
            return Err(ChangeError::VariantExists {
                change_idx,
                name: name.clone(),
                rtype,
                set_identifier: label(),
            });
        }
        (Action::Delete, None) => {
            return Err(ChangeError::VariantNotFound {
                change_idx,
                name: name.clone(),
                rtype,
                set_identifier: label(),
            });
        }
        (Action::Delete, Some(i)) => {
            if let Some(detail) = variant_mismatch(&variants[i], &given) {
                return Err(ChangeError::DeleteMismatch {
                    change_idx,
                    name: name.clone(),
                    rtype,
                    detail,
                });
            }
            variants.remove(i);
        }
        (_, Some(i)) => variants[i] = given,
        (_, None) => variants.push(given),
    }
    let mut encoded = Vec::with_capacity(variants.len());
    for v in &variants {
        let e = routed::encode_variant(v);
        if e.len() > u16::MAX as usize {
            return Err(ChangeError::RecordSetTooLarge {
                change_idx,
                name: name.clone(),
                rtype,
                bytes: e.len(),
            });
        }
        encoded.push(e);
    }
    let after = (!encoded.is_empty()).then(|| RecordSet {
        name: name.clone(),
        rtype,
        ttl: ROUTED_TTL,
        rdatas: encoded,
        set_identifier: None,
        policy: None,
        health_check: None,
        alias: None,
        fail_closed: false,
    });
    record_touch(
        overlay,
        key,
        change_idx,
        action,
        current_records,
        after,
        Some(id),
    );
    Ok(())
}

/// Why a DELETE of a variant does not match it, if it does not.
fn variant_mismatch(current: &RecordSet, given: &RecordSet) -> Option<&'static str> {
    if current.policy != given.policy {
        return Some("the routing policy differs");
    }
    if current.health_check != given.health_check {
        return Some("the health check differs");
    }
    if current.alias != given.alias {
        return Some("the alias target differs");
    }
    if current.alias.is_some() {
        return None;
    }
    delete_mismatch(current, given)
}

/// Checks a routed group as the batch leaves it: one valid policy group (or one simple alias),
/// known health checks, alias targets that exist, no alias loops.
fn check_group<Z: ZoneState + ?Sized>(
    overlay: &Overlay<'_, Z>,
    origin: &Name,
    change_idx: usize,
    group: &RecordSet,
) -> Result<(), ChangeError> {
    let (name, rtype) = (&group.name, group.rtype);
    let variants = routed::to_record_sets(name, rtype, &group.rdatas);
    let policy_err = |error| ChangeError::Policy {
        change_idx,
        name: name.clone(),
        rtype,
        error: Box::new(error),
    };
    let simple = variants
        .iter()
        .filter(|v| v.set_identifier.is_none())
        .count();
    if simple > 0 && variants.len() > 1 {
        return Err(ChangeError::SimpleAndRouted {
            change_idx,
            name: name.clone(),
            rtype,
        });
    }
    if simple == 0 {
        let candidates: Vec<Candidate> = variants
            .iter()
            .map(|v| Candidate {
                set_identifier: v.set_identifier.clone().unwrap_or_default(),
                policy: v.policy.clone().unwrap_or(Policy::Multivalue),
                health_check: v.health_check.clone(),
                target_healthy: true,
            })
            .collect();
        policy::validate(&candidates).map_err(policy_err)?;
    }
    for v in &variants {
        if let Some(id) = &v.health_check
            && !overlay.base.health_check_exists(id)
        {
            return Err(ChangeError::HealthCheckUnknown {
                change_idx,
                id: id.clone(),
            });
        }
        if let Some(Policy::IpBased { collection, .. }) = &v.policy
            && !overlay.base.cidr_collection_exists(collection)
        {
            return Err(ChangeError::CidrCollectionUnknown {
                change_idx,
                name: collection.clone(),
            });
        }
    }
    // Walk every alias reachable from this group: each target must exist, and the walk must
    // neither come back to a name it passed nor go deeper than the answer path will follow.
    let lookup = |target: &Name| -> Option<RecordSet> {
        let target = target.to_lowercase();
        if target.is_subdomain_of(origin) {
            match overlay.touched.get(&(target.clone(), rtype)) {
                Some(t) => t.after.clone(),
                None => overlay.base.get(&target, rtype),
            }
        } else {
            overlay.base.resolve(&target, rtype)
        }
    };
    let mut stack: Vec<(Name, usize)> = variants
        .iter()
        .filter_map(|v| v.alias.as_ref().map(|a| (a.name.to_lowercase(), 1)))
        .collect();
    let mut visited: HashSet<Name> = HashSet::new();
    visited.insert(name.clone());
    let mut steps = 0usize;
    while let Some((target, depth)) = stack.pop() {
        steps += 1;
        let cycle = || ChangeError::AliasCycle {
            change_idx,
            name: name.clone(),
            rtype,
            target: target.clone(),
        };
        if depth > routed::ALIAS_DEPTH_MAX || steps > ALIAS_WALK_STEPS_MAX || target == *name {
            return Err(cycle());
        }
        let Some(found) = lookup(&target) else {
            if depth == 1 {
                return Err(ChangeError::AliasTargetMissing {
                    change_idx,
                    name: name.clone(),
                    rtype,
                    target,
                });
            }
            continue;
        };
        if found.ttl != ROUTED_TTL {
            continue;
        }
        if !visited.insert(target.clone()) {
            // Two branches may share a subtree; only a path back to this group is a loop,
            // which the depth bound and the check above catch.
            continue;
        }
        for v in routed::to_record_sets(&target, rtype, &found.rdatas) {
            if let Some(a) = v.alias {
                stack.push((a.name.to_lowercase(), depth + 1));
            }
        }
    }
    Ok(())
}

/// TTL above which a health-checked or weighted set draws a warning: resolvers keep the old
/// answer that long after a failover or a weight change.
pub const ROUTED_TTL_ADVISED_MAX: u32 = 60;

/// Warnings about a valid batch (it is applied anyway): TTLs that slow failover down.
pub fn batch_warnings(batch: &ChangeBatch) -> Vec<String> {
    batch
        .changes
        .iter()
        .enumerate()
        .filter(|(_, c)| c.action != Action::Delete && c.record_set.alias.is_none())
        .filter_map(|(i, c)| {
            let s = &c.record_set;
            let what = if s.health_check.is_some() {
                "health-checked"
            } else if matches!(s.policy, Some(Policy::Weighted { .. })) {
                "weighted"
            } else {
                return None;
            };
            (s.ttl > ROUTED_TTL_ADVISED_MAX).then(|| {
                format!(
                    "changes[{i}]: {} {} set {:?} is {what} with TTL {}: resolvers keep an answer \
                     up to {} s after a failover or weight change; {ROUTED_TTL_ADVISED_MAX} s or \
                     less is advised",
                    s.name,
                    s.rtype,
                    s.set_identifier.as_deref().unwrap_or(""),
                    s.ttl,
                    s.ttl
                )
            })
        })
        .collect()
}

/// Alias targets one group's validation may visit: bounds the work of a batch on a wide tree.
const ALIAS_WALK_STEPS_MAX: usize = 4096;

/// Checks a set's own contents: TTL, record count, each record's wire form, duplicates.
/// `written`: the set is being created or upserted (not deleted), so the write limits apply.
fn check_contents(
    change_idx: usize,
    name: &Name,
    set: &RecordSet,
    written: bool,
) -> Result<(), ChangeError> {
    let rtype = set.rtype;
    if set.rdatas.is_empty() {
        return Err(ChangeError::RecordsEmpty {
            change_idx,
            name: name.clone(),
            rtype,
        });
    }
    if set.ttl > TTL_MAX {
        return Err(ChangeError::TtlOutOfRange {
            change_idx,
            name: name.clone(),
            rtype,
            ttl: set.ttl.into(),
        });
    }
    if written && set.rdatas.len() > RRSET_RECORDS_MAX {
        return Err(ChangeError::RecordsTooMany {
            change_idx,
            name: name.clone(),
            rtype,
            count: set.rdatas.len(),
        });
    }
    for rdata in &set.rdatas {
        if let Err(reason) = check_wire(rtype, rdata) {
            return Err(ChangeError::RdataInvalid {
                change_idx,
                name: name.clone(),
                rtype,
                value: rdata::rdata_to_text(rtype, rdata),
                reason,
            });
        }
    }
    let mut seen = HashSet::with_capacity(set.rdatas.len());
    for rdata in set.rdatas.iter().filter(|_| set.rdatas.len() > 1) {
        // RFC 2181 §5: an RRset has no duplicate records.
        if !seen.insert(rdata.as_slice()) {
            return Err(ChangeError::RecordDuplicate {
                change_idx,
                name: name.clone(),
                rtype,
                value: rdata::rdata_to_text(rtype, rdata),
            });
        }
    }
    // RFC 1035 §3.3.13 (SOA), RFC 2181 §10.1 (CNAME), RFC 6672 §2.4 (DNAME): one record each.
    if matches!(rtype, RType::SOA | RType::CNAME | RType::DNAME) && set.rdatas.len() > 1 {
        return Err(ChangeError::RecordsMoreThanOne {
            change_idx,
            name: name.clone(),
            rtype,
            count: set.rdatas.len(),
        });
    }
    if written {
        let bytes: usize = set.rdatas.iter().map(|r| 12 + r.len()).sum();
        if bytes > RRSET_ANSWER_BYTES_MAX {
            return Err(ChangeError::RecordSetTooLarge {
                change_idx,
                name: name.clone(),
                rtype,
                bytes,
            });
        }
    }
    Ok(())
}

/// Checks the wire form of the types whose layout the zone and the answer code rely on. Batches
/// parsed from text pass by construction; this guards batches built by other means.
fn check_wire(rtype: RType, rdata: &[u8]) -> Result<(), Error> {
    if rdata.len() > rdata::RDATA_BYTES_MAX {
        return Err(Error::RdataTooLong);
    }
    // `rest` is the RDATA after a fixed-size head; it must be exactly one name.
    let one_name = |head: usize| {
        rdata
            .get(head..)
            .and_then(name::wire_name_len)
            .is_some_and(|len| head + len == rdata.len())
    };
    let ok = match rtype {
        RType::A => rdata.len() == 4,
        RType::AAAA => rdata.len() == 16,
        RType::NS | RType::CNAME | RType::PTR | RType::DNAME => one_name(0),
        RType::MX => one_name(2),
        RType::SRV => one_name(6),
        RType::SOA => {
            let first = name::wire_name_len(rdata);
            let second = first.and_then(|a| name::wire_name_len(&rdata[a..]).map(|b| a + b));
            second.is_some_and(|end| end + 20 == rdata.len())
        }
        RType::TXT | RType::SPF => {
            let mut pos = 0;
            while pos < rdata.len() {
                pos += 1 + rdata[pos] as usize;
            }
            !rdata.is_empty() && pos == rdata.len()
        }
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::RdataInvalid("malformed wire data for its type"))
    }
}

/// Why a DELETE does not match the current set, if it does not.
fn delete_mismatch(current: &RecordSet, given: &RecordSet) -> Option<&'static str> {
    if current.ttl != given.ttl {
        return Some("the TTL differs");
    }
    let mut a: Vec<&[u8]> = current.rdatas.iter().map(Vec::as_slice).collect();
    let mut b: Vec<&[u8]> = given.rdatas.iter().map(Vec::as_slice).collect();
    a.sort_unstable();
    b.sort_unstable();
    (a != b).then_some("the records differ")
}

/// The rules about how sets live together, on the state the whole batch results in, and the
/// zone's size limits.
fn check_result<Z: ZoneState + ?Sized>(
    overlay: &Overlay<'_, Z>,
    origin: &Name,
) -> Result<(), ChangeError> {
    // Sets written by the batch, in the order of the change that last wrote them.
    let mut written: Vec<(usize, &Name, RType)> = overlay
        .order
        .iter()
        .filter_map(|key| {
            let t = &overlay.touched[key];
            t.after.as_ref().map(|_| (t.last_idx, &key.0, key.1))
        })
        .collect();
    written.sort_by_key(|(idx, _, _)| *idx);

    // Per name: the types the batch touched, and the last change that wrote a set there.
    let mut by_name: HashMap<&Name, (Vec<RType>, Option<usize>)> = HashMap::new();
    for key in &overlay.order {
        let t = &overlay.touched[key];
        let entry = by_name.entry(&key.0).or_default();
        entry.0.push(key.1);
        if t.after.is_some() {
            entry.1 = entry.1.max(Some(t.last_idx));
        }
    }
    let below_delta = if written.iter().any(|(_, _, t)| *t == RType::DNAME) {
        sets_below_delta(overlay, origin)
    } else {
        HashMap::new()
    };
    let mut dname_at: HashMap<Name, bool> = HashMap::new();
    let dname_possible =
        overlay.base.may_have_dname() || written.iter().any(|(_, _, t)| *t == RType::DNAME);

    for &(change_idx, name, rtype) in &written {
        let (touched_types, last_write) = &by_name[name];
        if *last_write == Some(change_idx) {
            let mut types = overlay.base.types_at(name);
            types.retain(|t| !touched_types.contains(t));
            types.extend(
                touched_types
                    .iter()
                    .filter(|t| overlay.touched[&(name.clone(), **t)].after.is_some()),
            );
            // RFC 2181 §10.1; DNSSEC types may sit beside a CNAME (RFC 4035 §2.5), as in Zone::build.
            if types.contains(&RType::CNAME)
                && types
                    .iter()
                    .any(|t| !matches!(*t, RType::CNAME | RType::RRSIG | RType::NSEC))
            {
                return Err(ChangeError::CnameAndOtherData {
                    change_idx,
                    name: name.clone(),
                });
            }
        }
        if rtype == RType::DNAME {
            let below = overlay.base.record_sets_below(name) as isize
                + below_delta.get(name).copied().unwrap_or(0);
            if below > 0 {
                return Err(ChangeError::DnameHasChildren {
                    change_idx,
                    name: name.clone(),
                });
            }
        }
        let mut ancestor = name.parent().filter(|_| dname_possible);
        while let Some(a) = ancestor.filter(|a| a.is_subdomain_of(origin)) {
            let has_dname = *dname_at
                .entry(a.clone())
                .or_insert_with(|| overlay.has(&a, RType::DNAME));
            if has_dname {
                return Err(ChangeError::BelowDname {
                    change_idx,
                    name: name.clone(),
                    dname: a,
                });
            }
            ancestor = a.parent();
        }
    }

    for &(change_idx, name, rtype) in &written {
        let t = &overlay.touched[&(name.clone(), rtype)];
        if let Some(group) = t.after.as_ref().filter(|s| s.ttl == ROUTED_TTL) {
            check_group(overlay, origin, change_idx, group)?;
        }
    }

    let base_sets = overlay.base.record_set_count();
    let base_records = overlay.base.record_count();
    let (mut sets, mut records) = (base_sets as isize, base_records as isize);
    for t in overlay.touched.values() {
        sets += t.after.is_some() as isize - t.before_records.is_some() as isize;
        records += t.after.as_ref().map_or(0, |s| s.rdatas.len()) as isize
            - t.before_records.unwrap_or(0) as isize;
    }
    let (sets, records) = (sets.max(0) as usize, records.max(0) as usize);
    if sets > ZONE_RECORD_SETS_MAX && sets > base_sets {
        return Err(ChangeError::ZoneRecordSetsTooMany { count: sets });
    }
    if records > zone::ZONE_RECORDS_MAX && records > base_records {
        return Err(ChangeError::ZoneRecordsTooMany { count: records });
    }
    Ok(())
}

/// For every name in the zone above a set the batch adds or removes: how many sets the batch
/// adds below it (negative: removes). O(touched sets × labels).
fn sets_below_delta<Z: ZoneState + ?Sized>(
    overlay: &Overlay<'_, Z>,
    origin: &Name,
) -> HashMap<Name, isize> {
    let mut delta: HashMap<Name, isize> = HashMap::new();
    for key in &overlay.order {
        let t = &overlay.touched[key];
        let d = t.after.is_some() as isize - t.before_records.is_some() as isize;
        if d == 0 {
            continue;
        }
        let mut ancestor = key.0.parent();
        while let Some(a) = ancestor.filter(|a| a.is_subdomain_of(origin)) {
            ancestor = a.parent();
            *delta.entry(a).or_default() += d;
        }
    }
    delta
}

// ---------------------------------------------------------------------------------------------
// Route 53 ChangeBatch text
// ---------------------------------------------------------------------------------------------

/// Parses a Route 53 `ChangeResourceRecordSets` change batch (`{"Comment": …, "Changes": […]}`),
/// as JSON if its first non-blank character is `{`, else as YAML, for the zone `origin`. Unknown
/// fields are refused. Only syntax and the conversion to the domain model are checked here: the
/// rules about the zone are [`apply_batch`]'s.
pub fn parse_change_batch(text: &str, origin: &Name) -> Result<ChangeBatch, ChangeError> {
    if text.len() > BATCH_BYTES_MAX {
        return Err(ChangeError::BatchTooLarge { bytes: text.len() });
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let wire: WireBatch = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| ChangeError::Syntax {
            format: "JSON",
            reason: e.to_string(),
        })?
    } else {
        serde_yaml::from_str(text).map_err(|e| ChangeError::Syntax {
            format: "YAML",
            reason: e.to_string(),
        })?
    };
    let comment = wire.comment.unwrap_or_default();
    let chars = comment.chars().count();
    if chars > COMMENT_CHARS_MAX {
        return Err(ChangeError::CommentTooLong { chars });
    }
    if wire.changes.is_empty() {
        return Err(ChangeError::BatchEmpty);
    }
    if wire.changes.len() > BATCH_CHANGES_MAX {
        return Err(ChangeError::TooManyChanges {
            count: wire.changes.len(),
        });
    }
    let origin = origin.to_lowercase();
    let changes = wire
        .changes
        .into_iter()
        .enumerate()
        .map(|(change_idx, c)| convert_change(change_idx, c, &origin))
        .collect::<Result<_, _>>()?;
    Ok(ChangeBatch { comment, changes })
}

fn convert_change(
    change_idx: usize,
    change: WireChange,
    origin: &Name,
) -> Result<Change, ChangeError> {
    let rrs = change.resource_record_set;
    if rrs.traffic_policy_instance_id.is_some() {
        return Err(ChangeError::NotSupportedYet {
            change_idx,
            field: "TrafficPolicyInstanceId (policy trees are aliased record sets here)",
        });
    }
    let name = parse_owner(&rrs.name, origin)
        .map_err(|reason| ChangeError::NameInvalid {
            change_idx,
            name: rrs.name.clone(),
            reason,
        })?
        .to_lowercase();
    let rtype = RType::from_text(&rrs.rtype).ok_or_else(|| ChangeError::TypeUnknown {
        change_idx,
        rtype: rrs.rtype.clone(),
    })?;
    let field_err = |field: &'static str, reason: String| ChangeError::PolicyFieldInvalid {
        change_idx,
        field,
        reason,
    };
    let policy = convert_policy(&rrs, &field_err)?;
    if let Some(id) = &rrs.set_identifier
        && (id.is_empty() || id.len() > policy::POLICY_LABEL_BYTES_MAX)
    {
        return Err(field_err(
            "SetIdentifier",
            format!("must be 1 to {} bytes", policy::POLICY_LABEL_BYTES_MAX),
        ));
    }
    match (&rrs.set_identifier, &policy) {
        (Some(_), None) => {
            return Err(field_err(
                "SetIdentifier",
                "needs a routing policy (Weight, Failover, MultiValueAnswer, Region, \
                 GeoLocation, GeoProximityLocation or CidrRoutingConfig)"
                    .into(),
            ));
        }
        (None, Some(p)) => {
            return Err(field_err(
                "SetIdentifier",
                format!("a {} set needs a SetIdentifier", p.kind()),
            ));
        }
        _ => {}
    }
    if let Some(hc) = &rrs.health_check_id
        && (hc.is_empty() || hc.len() > routed::HEALTH_CHECK_ID_BYTES_MAX)
    {
        return Err(field_err(
            "HealthCheckId",
            format!("must be 1 to {} bytes", routed::HEALTH_CHECK_ID_BYTES_MAX),
        ));
    }
    if rrs.health_check_id.is_some() && rrs.set_identifier.is_none() {
        return Err(field_err(
            "HealthCheckId",
            "only a set with a routing policy (and a SetIdentifier) uses a health check".into(),
        ));
    }
    let alias = match &rrs.alias_target {
        None => None,
        Some(a) => {
            if rrs.ttl.is_some() || rrs.resource_records.is_some() {
                return Err(field_err(
                    "AliasTarget",
                    "an alias has neither TTL nor ResourceRecords: the target's apply".into(),
                ));
            }
            let target = Name::parse(
                &octal_escapes_to_decimal(&a.dns_name)
                    .map_err(|e| field_err("AliasTarget.DNSName", e.to_string()))?,
                None,
            )
            .or_else(|_| Name::parse(&format!("{}.", a.dns_name), None))
            .map_err(|e| field_err("AliasTarget.DNSName", e.to_string()))?;
            Some(AliasTarget {
                name: target.to_lowercase(),
                evaluate_target_health: a.evaluate_target_health,
            })
        }
    };
    let action = match change.action {
        WireAction::Create => Action::Create,
        WireAction::Delete => Action::Delete,
        WireAction::Upsert => Action::Upsert,
    };
    let routing = |ttl, rdatas| RecordSet {
        name: name.clone(),
        rtype,
        ttl,
        rdatas,
        set_identifier: rrs.set_identifier.clone(),
        policy: policy.clone(),
        health_check: rrs.health_check_id.clone(),
        alias: alias.clone(),
        fail_closed: rrs.fail_closed.unwrap_or(false),
    };
    if alias.is_some() {
        return Ok(Change {
            action,
            record_set: routing(0, Vec::new()),
        });
    }
    let ttl = rrs.ttl.ok_or_else(|| ChangeError::TtlMissing {
        change_idx,
        name: name.clone(),
        rtype,
    })?;
    let ttl = u32::try_from(ttl)
        .ok()
        .filter(|t| *t <= TTL_MAX)
        .ok_or_else(|| ChangeError::TtlOutOfRange {
            change_idx,
            name: name.clone(),
            rtype,
            ttl,
        })?;
    let records = rrs.resource_records.clone().unwrap_or_default();
    if records.is_empty() {
        return Err(ChangeError::RecordsEmpty {
            change_idx,
            name,
            rtype,
        });
    }
    let mut rdatas = Vec::with_capacity(records.len());
    for record in &records {
        let rdata =
            parse_value(rtype, &record.value).map_err(|reason| ChangeError::RdataInvalid {
                change_idx,
                name: name.clone(),
                rtype,
                value: record.value.clone(),
                reason,
            })?;
        rdatas.push(rdata);
    }
    Ok(Change {
        action,
        record_set: routing(ttl, rdatas),
    })
}

/// Route 53's seven routing-policy fields: at most one may be given.
fn convert_policy(
    rrs: &WireRecordSet,
    field_err: &dyn Fn(&'static str, String) -> ChangeError,
) -> Result<Option<Policy>, ChangeError> {
    let given: Vec<&'static str> = [
        ("Weight", rrs.weight.is_some()),
        ("Failover", rrs.failover.is_some()),
        ("MultiValueAnswer", rrs.multi_value_answer.is_some()),
        ("Region", rrs.region.is_some()),
        ("GeoLocation", rrs.geo_location.is_some()),
        ("GeoProximityLocation", rrs.geo_proximity_location.is_some()),
        ("CidrRoutingConfig", rrs.cidr_routing_config.is_some()),
    ]
    .into_iter()
    .filter(|(_, present)| *present)
    .map(|(f, _)| f)
    .collect();
    if given.len() > 1 {
        return Err(field_err(
            given[1],
            format!(
                "a set has one routing policy, and {} is given too",
                given[0]
            ),
        ));
    }
    let label = |field: &'static str, text: &str| {
        if text.is_empty() || text.len() > policy::POLICY_LABEL_BYTES_MAX {
            Err(field_err(
                field,
                format!("must be 1 to {} bytes", policy::POLICY_LABEL_BYTES_MAX),
            ))
        } else {
            Ok(text.to_string())
        }
    };
    if let Some(w) = rrs.weight {
        let weight =
            u8::try_from(w).map_err(|_| field_err("Weight", format!("{w} is outside 0..=255")))?;
        return Ok(Some(Policy::Weighted { weight }));
    }
    if let Some(f) = &rrs.failover {
        return Ok(Some(Policy::Failover(match f {
            WireFailover::Primary => FailoverRole::Primary,
            WireFailover::Secondary => FailoverRole::Secondary,
        })));
    }
    if let Some(m) = rrs.multi_value_answer {
        if !m {
            return Err(field_err(
                "MultiValueAnswer",
                "false is not a routing policy; leave the field out".into(),
            ));
        }
        return Ok(Some(Policy::Multivalue));
    }
    if let Some(r) = &rrs.region {
        return Ok(Some(Policy::Latency {
            region: label("Region", r)?,
        }));
    }
    if let Some(g) = &rrs.geo_location {
        let upper = |s: &String| s.to_ascii_uppercase();
        let key = match (&g.continent_code, &g.country_code, &g.subdivision_code) {
            (Some(c), None, None) => {
                let c = upper(c);
                if !CONTINENTS.contains(&c.as_str()) {
                    return Err(field_err(
                        "GeoLocation.ContinentCode",
                        format!("{c:?} is not one of {}", CONTINENTS.join(" ")),
                    ));
                }
                GeoKey::Continent(c)
            }
            (None, Some(c), None) if c == "*" => GeoKey::Default,
            (None, Some(c), sub) => {
                let c = upper(c);
                if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_alphabetic()) {
                    return Err(field_err(
                        "GeoLocation.CountryCode",
                        format!("{c:?} is not an ISO 3166-1 alpha-2 code or *"),
                    ));
                }
                match sub {
                    None => GeoKey::Country(c),
                    Some(s) => {
                        let s = upper(s);
                        if s.is_empty()
                            || s.len() > 3
                            || !s.bytes().all(|b| b.is_ascii_alphanumeric())
                        {
                            return Err(field_err(
                                "GeoLocation.SubdivisionCode",
                                format!("{s:?} is not an ISO 3166-2 subdivision code"),
                            ));
                        }
                        GeoKey::Subdivision(c, s)
                    }
                }
            }
            _ => {
                return Err(field_err(
                    "GeoLocation",
                    "give ContinentCode, or CountryCode (with an optional SubdivisionCode)".into(),
                ));
            }
        };
        return Ok(Some(Policy::Geolocation(key)));
    }
    if let Some(g) = &rrs.geo_proximity_location {
        let bias = g.bias.unwrap_or(0);
        let bias = i8::try_from(bias)
            .ok()
            .filter(|b| (-policy::BIAS_MAX..=policy::BIAS_MAX).contains(b))
            .ok_or_else(|| {
                field_err(
                    "GeoProximityLocation.Bias",
                    format!("{bias} is outside -99..=99"),
                )
            })?;
        let at = match (&g.aws_region, &g.local_zone_group, &g.coordinates) {
            (Some(r), None, None) => policy::region_coordinates(r).ok_or_else(|| {
                field_err(
                    "GeoProximityLocation.AWSRegion",
                    format!("unknown region {r:?}; give Coordinates instead"),
                )
            })?,
            (None, None, Some(c)) => {
                let parse = |t: &str, what| {
                    t.trim().parse::<f64>().map_err(|_| {
                        field_err(
                            "GeoProximityLocation.Coordinates",
                            format!("{what} {t:?} is not a number"),
                        )
                    })
                };
                let at = Coordinates {
                    latitude: parse(&c.latitude, "latitude")?,
                    longitude: parse(&c.longitude, "longitude")?,
                };
                if !at.is_valid() {
                    return Err(field_err(
                        "GeoProximityLocation.Coordinates",
                        "latitude must be within ±90 and longitude within ±180".into(),
                    ));
                }
                at
            }
            (None, Some(_), None) => {
                return Err(field_err(
                    "GeoProximityLocation.LocalZoneGroup",
                    "local zone groups are AWS-only; give Coordinates".into(),
                ));
            }
            _ => {
                return Err(field_err(
                    "GeoProximityLocation",
                    "give exactly one of AWSRegion and Coordinates".into(),
                ));
            }
        };
        return Ok(Some(Policy::Geoproximity { at, bias }));
    }
    if let Some(c) = &rrs.cidr_routing_config {
        return Ok(Some(Policy::IpBased {
            collection: label("CidrRoutingConfig.CollectionId", &c.collection_id)?,
            location: label("CidrRoutingConfig.LocationName", &c.location_name)?,
        }));
    }
    Ok(None)
}

/// Route 53's continent codes.
const CONTINENTS: [&str; 7] = ["AF", "AN", "AS", "EU", "NA", "OC", "SA"];

/// A record name: absolute if it ends with a dot or with the origin, `@` for the apex, else
/// relative to the origin.
fn parse_owner(text: &str, origin: &Name) -> Result<Name, Error> {
    let text = octal_escapes_to_decimal(text)?;
    if text == "@" {
        return Ok(origin.clone());
    }
    match Name::parse(&text, None) {
        Ok(name) => Ok(name),
        Err(Error::NameRelativeWithoutOrigin) => {
            // Route 53 names are absolute without their final dot too.
            let absolute = Name::parse(&format!("{text}."), None)?;
            if absolute.is_subdomain_of(origin) {
                Ok(absolute)
            } else {
                Name::parse(&text, Some(origin))
            }
        }
        Err(e) => Err(e),
    }
}

/// A Route 53 `Value`: presentation-format RDATA with octal escapes; names in it are absolute
/// with or without their final dot.
fn parse_value(rtype: RType, value: &str) -> Result<Vec<u8>, Error> {
    let text = octal_escapes_to_decimal(value)?;
    let tokens = zonefile::tokenize(&text)?;
    rdata::parse_rdata(rtype, &tokens, &Name::root())
}

/// Rewrites Route 53's octal `\ooo` escapes as the decimal `\DDD` of RFC 1035 §5.1, which the
/// core's parsers read. Other escapes (`\.`, `\"`, `\\`) pass through unchanged.
fn octal_escapes_to_decimal(text: &str) -> Result<Cow<'_, str>, Error> {
    if !text.contains('\\') {
        return Ok(Cow::Borrowed(text));
    }
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 8);
    let mut i = 0;
    while i < bytes.len() {
        let Some(offset) = text[i..].find('\\') else {
            out.push_str(&text[i..]);
            break;
        };
        out.push_str(&text[i..i + offset]);
        i += offset;
        match bytes.get(i + 1..i + 4) {
            Some(digits) if digits.iter().all(u8::is_ascii_digit) => {
                let value = digits
                    .iter()
                    .try_fold(0u32, |v, d| {
                        (*d < b'8').then(|| v * 8 + u32::from(d - b'0'))
                    })
                    .filter(|v| *v <= 255)
                    .ok_or(Error::EscapeInvalid)?;
                out.push_str(&format!("\\{value:03}"));
                i += 4;
            }
            _ if bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                return Err(Error::EscapeInvalid);
            }
            _ => {
                // A backslash and the (possibly multi-byte) character it escapes, or a lone
                // final backslash for the parser to refuse.
                let escaped = text[i + 1..].chars().next().map_or(0, char::len_utf8);
                out.push_str(&text[i..i + 1 + escaped]);
                i += 1 + escaped;
            }
        }
    }
    Ok(Cow::Owned(out))
}

/// `ChangeBatch` of Route 53's API (the body of `aws route53 change-resource-record-sets
/// --change-batch`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct WireBatch {
    comment: Option<String>,
    changes: Vec<WireChange>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct WireChange {
    action: WireAction,
    resource_record_set: WireRecordSet,
}

#[derive(Deserialize)]
#[serde(rename_all = "UPPERCASE")]
enum WireAction {
    Create,
    Delete,
    Upsert,
}

/// Route 53's `ResourceRecordSet`. The routing-policy fields are read with their real shape, so
/// that a malformed one is a syntax error today and the policies can use them later.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct WireRecordSet {
    name: String,
    #[serde(rename = "Type")]
    rtype: String,
    #[serde(rename = "TTL")]
    ttl: Option<i64>,
    resource_records: Option<Vec<WireRecord>>,
    set_identifier: Option<String>,
    weight: Option<i64>,
    region: Option<String>,
    geo_location: Option<WireGeoLocation>,
    failover: Option<WireFailover>,
    multi_value_answer: Option<bool>,
    alias_target: Option<WireAliasTarget>,
    health_check_id: Option<String>,
    traffic_policy_instance_id: Option<String>,
    cidr_routing_config: Option<WireCidrRoutingConfig>,
    geo_proximity_location: Option<WireGeoProximityLocation>,
    /// Our extension: when every set of the group is unhealthy, answer NODATA.
    fail_closed: Option<bool>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct WireRecord {
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "UPPERCASE")]
enum WireFailover {
    Primary,
    Secondary,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct WireGeoLocation {
    continent_code: Option<String>,
    country_code: Option<String>,
    subdivision_code: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct WireAliasTarget {
    // Read for its shape only: the target is found by name in whichever hosted zone holds it.
    #[allow(dead_code)]
    hosted_zone_id: String,
    #[serde(rename = "DNSName")]
    dns_name: String,
    evaluate_target_health: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct WireCidrRoutingConfig {
    collection_id: String,
    location_name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct WireGeoProximityLocation {
    #[serde(rename = "AWSRegion")]
    aws_region: Option<String>,
    local_zone_group: Option<String>,
    coordinates: Option<WireCoordinates>,
    bias: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct WireCoordinates {
    latitude: String,
    longitude: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_escapes() {
        assert_eq!(octal_escapes_to_decimal("plain").unwrap(), "plain");
        assert_eq!(octal_escapes_to_decimal("\\052.a").unwrap(), "\\042.a");
        assert_eq!(octal_escapes_to_decimal("a\\.b\\\\").unwrap(), "a\\.b\\\\");
        assert_eq!(octal_escapes_to_decimal("\\377é\\é").unwrap(), "\\255é\\é");
        assert_eq!(octal_escapes_to_decimal("x\\").unwrap(), "x\\");
        assert!(octal_escapes_to_decimal("\\089").is_err());
        assert!(octal_escapes_to_decimal("\\400").is_err());
        assert!(octal_escapes_to_decimal("\\05").is_err());
    }

    #[test]
    fn owner_names() {
        let origin = Name::parse("example.com.", None).unwrap();
        let owner = |t: &str| parse_owner(t, &origin).map(|n| n.to_string());
        assert_eq!(owner("www.example.com").unwrap(), "www.example.com.");
        assert_eq!(owner("www.example.com.").unwrap(), "www.example.com.");
        assert_eq!(owner("EXAMPLE.com").unwrap(), "EXAMPLE.com.");
        assert_eq!(owner("www").unwrap(), "www.example.com.");
        assert_eq!(owner("@").unwrap(), "example.com.");
        assert_eq!(owner("\\052.example.com").unwrap(), "*.example.com.");
        assert_eq!(owner("other.org.").unwrap(), "other.org.");
        // Label-aligned: "notexample.com" does not end with the origin.
        assert_eq!(
            owner("notexample.com").unwrap(),
            "notexample.com.example.com."
        );
        assert!(owner("").is_err());
        assert!(owner("a..b").is_err());
    }
}
