//! Generates the tonic/prost code from `proto/`. protoc comes from the
//! `protoc-bin-vendored` crate, so a fresh machine needs no system package.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    config.bytes(["."]);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("stayput_descriptor.bin"))
        .compile_with_config(
            config,
            &[
                "proto/stayput/v1/psi.proto",
                "proto/stayput/v1/node.proto",
                "proto/stayput/v1/ledger.proto",
                "proto/stayput/v1/coordinator.proto",
                "proto/stayput/v1/stats.proto",
                "proto/stayput/v1/blacklist.proto",
                "proto/stayput/v1/compute_only.proto",
                "proto/stayput/v1/lookup.proto",
                "proto/stayput/v1/learning.proto",
            ],
            &["proto"],
        )?;
    Ok(())
}
