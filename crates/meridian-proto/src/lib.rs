//! Generated gRPC code for the public API (`proto/meridian/v1`). This is the only crate that
//! sees prost and tonic message types; the control plane, the edge and the CLI convert to and
//! from domain types at their boundary with it.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("meridian.v1");
}

/// Catalog schema carried by `SubscribeRequest.schema` and `CatalogUpdate.schema`; bump on any
/// incompatible change to how catalogs are encoded.
pub const CATALOG_SCHEMA: u32 = 1;
