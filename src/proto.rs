//! Code generated from `proto/drover/v1/*.proto` by build.rs. Never edited by hand.
#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("drover.v1");
}
