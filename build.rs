//! Generates the gRPC code from proto/ into OUT_DIR with a vendored protoc, so
//! a fresh machine needs no system protobuf compiler.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .bytes(".")
        // Malformed messages are INVALID_ARGUMENT, not prost's INTERNAL.
        .codec_path("crate::wire::codec::StrictCodec")
        .compile_protos(&["proto/drover/v1/drover.proto"], &["proto"])?;
    Ok(())
}
