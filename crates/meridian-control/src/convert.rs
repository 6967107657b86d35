//! Conversions between the API's messages and domain types. Record data crosses the API in
//! presentation format (what operators write) and is stored in wire format.

use meridian_core::change::{Action, Change, ChangeBatch, RecordSet};
use meridian_core::rdata::{self, RType};
use meridian_core::{Name, zonefile};
use meridian_proto::v1;
use tonic::Status;

pub fn parse_name(text: &str, origin: Option<&Name>) -> Result<Name, Status> {
    let absolute = if text.ends_with('.') || origin.is_none() {
        Name::parse(
            if text.ends_with('.') {
                text.to_string()
            } else {
                format!("{text}.")
            }
            .as_str(),
            None,
        )
    } else {
        Name::parse(text, origin)
    };
    absolute
        .map(|n| n.to_lowercase())
        .map_err(|e| Status::invalid_argument(format!("name {text:?}: {e}")))
}

pub fn parse_type(text: &str) -> Result<RType, Status> {
    RType::from_text(text)
        .ok_or_else(|| Status::invalid_argument(format!("unknown record type {text:?}")))
}

pub fn record_set_from_proto(set: &v1::RecordSet, origin: &Name) -> Result<RecordSet, Status> {
    let name = parse_name(&set.name, Some(origin))?;
    let rtype = parse_type(&set.r#type)?;
    let mut rdatas = Vec::with_capacity(set.values.len());
    for value in &set.values {
        let tokens = zonefile::tokenize(value)
            .map_err(|e| Status::invalid_argument(format!("{} {rtype} {value:?}: {e}", name)))?;
        let rd = rdata::parse_rdata(rtype, &tokens, origin).map_err(|e| {
            Status::invalid_argument(format!("RdataInvalid: {name} {rtype} {value:?}: {e}"))
        })?;
        rdatas.push(rd);
    }
    Ok(RecordSet {
        name,
        rtype,
        ttl: set.ttl,
        rdatas,
        set_identifier: None,
    })
}

pub fn record_set_to_proto(name: &[u8], rtype: u16, ttl: u32, rdatas: &[Vec<u8>]) -> v1::RecordSet {
    let rtype = RType(rtype);
    v1::RecordSet {
        name: meridian_core::name::wire_to_text(name),
        r#type: rtype.to_string(),
        ttl,
        values: rdatas
            .iter()
            .map(|rd| rdata::rdata_to_text(rtype, rd))
            .collect(),
    }
}

pub fn batch_from_proto(
    req: &v1::ChangeRecordSetsRequest,
    origin: &Name,
) -> Result<ChangeBatch, Status> {
    let mut changes = Vec::with_capacity(req.changes.len());
    for (idx, c) in req.changes.iter().enumerate() {
        let action = match v1::Action::try_from(c.action) {
            Ok(v1::Action::Create) => Action::Create,
            Ok(v1::Action::Delete) => Action::Delete,
            Ok(v1::Action::Upsert) => Action::Upsert,
            _ => {
                return Err(Status::invalid_argument(format!(
                    "changes[{idx}]: action must be CREATE, DELETE or UPSERT"
                )));
            }
        };
        let set = c.record_set.as_ref().ok_or_else(|| {
            Status::invalid_argument(format!("changes[{idx}]: record_set missing"))
        })?;
        let record_set = record_set_from_proto(set, origin)
            .map_err(|s| Status::invalid_argument(format!("changes[{idx}]: {}", s.message())))?;
        changes.push(Change { action, record_set });
    }
    Ok(ChangeBatch {
        comment: req.comment.clone(),
        changes,
    })
}

pub fn batch_to_proto(zone: &Name, batch: &ChangeBatch) -> v1::ChangeRecordSetsRequest {
    v1::ChangeRecordSetsRequest {
        zone: zone.to_string(),
        comment: batch.comment.clone(),
        changes: batch
            .changes
            .iter()
            .map(|c| v1::Change {
                action: match c.action {
                    Action::Create => v1::Action::Create,
                    Action::Delete => v1::Action::Delete,
                    Action::Upsert => v1::Action::Upsert,
                } as i32,
                record_set: Some(record_set_to_proto(
                    c.record_set.name.wire(),
                    c.record_set.rtype.0,
                    c.record_set.ttl,
                    &c.record_set.rdatas,
                )),
            })
            .collect(),
        idempotency_token: String::new(),
        expected_zone_version: None,
    }
}
